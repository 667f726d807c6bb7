"""One error taxonomy for the whole library.

Every error's ``str()`` and ``message`` are safe to log and to show: constructors take messages
that were written by us or sanitised from a provider body, never a token, code, password or
client secret. ``code`` is the stable machine-readable name used in API error bodies and
``http_status`` the status an API maps it to.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class TokenBrokerError(Exception):
    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # Connect flow: the application's return_to, when known, so an error page can link back.
        self.return_to: str | None = None


class ConfigurationError(TokenBrokerError):
    """The deployment's settings are wrong (environment, template parameters): fix them, not the request."""

    code = "configuration_error"


# --- caller errors ---------------------------------------------------------------------------


class InvalidInput(TokenBrokerError):
    code = "bad_request"
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownProvider(TokenBrokerError):
    code = "unknown_provider"
    http_status = 404


class ConnectionNotFound(TokenBrokerError):
    code = "not_found"
    http_status = 404


class NeedsReauthorization(TokenBrokerError):
    """The connection exists but its grant is dead: the end user must connect again."""

    code = "needs_reauth"
    http_status = 409


class PendingConfirmation(TokenBrokerError):
    """The connection's grant awaits the application's confirmation: nothing to vend yet."""

    code = "pending_confirmation"
    http_status = 409


class ConnectSessionExpired(TokenBrokerError):
    """The connect session (and any grant pending on it) expired before it was confirmed."""

    code = "connect_session_expired"
    http_status = 410


class ConnectSessionNotCompleted(TokenBrokerError):
    """Confirmation asked for a session whose end user has not finished connecting yet."""

    code = "connect_session_not_completed"
    http_status = 409


class EndUserMismatch(TokenBrokerError):
    """The application confirmed a session for another end user than the one it was made for."""

    code = "end_user_mismatch"
    http_status = 403


class RefreshInProgress(TokenBrokerError):
    """Another worker holds the refresh lease longer than the caller may wait."""

    code = "refresh_in_progress"
    http_status = 503

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AwsUnavailable(TokenBrokerError):
    """An AWS service throttled or failed after botocore's own retries: nothing changed, retry."""

    code = "service_unavailable"
    http_status = 503

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LeaseLost(TokenBrokerError):
    """A conditional write found that this owner no longer holds the lease (fencing)."""

    code = "lease_lost"
    http_status = 503


# --- provider errors -------------------------------------------------------------------------


class ErrorKind(enum.StrEnum):
    REAUTHORIZATION_REQUIRED = "reauthorization_required"  # the grant is dead
    CONFIGURATION = "configuration"  # our client credentials or setup are wrong
    ACCOUNT = "account"  # the end user's account is unusable (e.g. unpaid)
    TRANSIENT = "transient"  # try again later, token kept
    OUTCOME_UNKNOWN = "outcome_unknown"  # request sent, answer lost: the grant may have rotated


class ProviderError(TokenBrokerError):
    """A provider refused or failed. Carries the provider's own code; the message is sanitised."""

    kind: ClassVar[ErrorKind] = ErrorKind.TRANSIENT
    code = "provider_error"
    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        provider_code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.provider_code = provider_code
        self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = [f"{self.provider}: {self.message}"]
        if self.provider_code is not None:
            parts.append(f"code={self.provider_code}")
        if self.status is not None:
            parts.append(f"status={self.status}")
        return " ".join(parts)


class ReauthorizationRequired(ProviderError):
    kind = ErrorKind.REAUTHORIZATION_REQUIRED
    code = "needs_reauth"


class InvalidUserCredentials(ReauthorizationRequired):
    """The end user's login or password is wrong (Workly 7002): ask them again."""

    code = "invalid_credentials"


class ProviderConfigurationError(ProviderError):
    kind = ErrorKind.CONFIGURATION
    code = "provider_configuration"


class AccountProblem(ProviderError):
    kind = ErrorKind.ACCOUNT
    code = "provider_account"


class TransientProviderError(ProviderError):
    kind = ErrorKind.TRANSIENT
    code = "provider_unavailable"
    http_status = 503


class OutcomeUnknown(TransientProviderError):
    """The request reached the provider but no answer came back.

    For a rotating refresh grant the old refresh token may already be dead, so callers must not
    retry blindly in a tight loop; the next attempt decides (success, or a dead grant).
    """

    kind = ErrorKind.OUTCOME_UNKNOWN


class UnsupportedOperation(TokenBrokerError):
    code = "unsupported"
    http_status = 400
