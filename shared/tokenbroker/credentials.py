"""The OAuth client (app) registered with a provider: shared by the providers that use it and the
store that keeps it, so that storage does not depend on the provider layer."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenbroker.redaction import remember_secret


@dataclass(frozen=True, slots=True)
class AppCredentials:
    """The OAuth client registered with a provider. ``repr`` hides the secret."""

    client_id: str
    client_secret: str = field(repr=False)

    def __post_init__(self) -> None:
        remember_secret(self.client_secret)
