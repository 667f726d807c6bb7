"""Where tokenbroker keeps state: tokens in Secrets Manager, everything else in one DynamoDB table."""

from tokenbroker.stores.app_credentials import AppCredentialsStore
from tokenbroker.stores.connections import ConnectionPage, ConnectionStore, new_lease_owner
from tokenbroker.stores.onetime import ConnectSession, OAuthState, OneTimeStore, new_nonce
from tokenbroker.stores.tokens import GenerationConflict, TokenStore

__all__ = [
    "AppCredentialsStore",
    "ConnectSession",
    "ConnectionPage",
    "ConnectionStore",
    "GenerationConflict",
    "OAuthState",
    "OneTimeStore",
    "TokenStore",
    "new_lease_owner",
    "new_nonce",
]
