"""One error taxonomy for the whole library.

Every error's ``str()`` and ``message`` are safe to log and to show: constructors take messages
that were written by us or sanitised from a provider body, never a token, code, password or
client secret. ``code`` is the stable machine-readable name used in API error bodies; which HTTP
status that is, the edge decides (``tokenbroker.api.statuses``).
"""

from __future__ import annotations

import enum


class TokenBrokerError(Exception):
    code: str = "internal_error"  # a class constant, except on ProviderError (its kind's)

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

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownProvider(TokenBrokerError):
    code = "unknown_provider"


class ConnectionNotFound(TokenBrokerError):
    code = "not_found"


class NeedsReauthorization(TokenBrokerError):
    """The connection exists but its grant is dead: the end user must connect again."""

    code = "needs_reauth"


class PendingConfirmation(TokenBrokerError):
    """The connection's grant awaits the application's confirmation: nothing to vend yet."""

    code = "pending_confirmation"


class ConnectSessionExpired(TokenBrokerError):
    """The connect session (and any grant pending on it) expired before it was confirmed."""

    code = "connect_session_expired"


class ConnectSessionNotCompleted(TokenBrokerError):
    """Confirmation asked for a session whose end user has not finished connecting yet."""

    code = "connect_session_not_completed"


class EndUserMismatch(TokenBrokerError):
    """The application confirmed a session for another end user than the one it was made for."""

    code = "end_user_mismatch"


class RefreshInProgress(TokenBrokerError):
    """Another worker holds the refresh lease longer than the caller may wait."""

    code = "refresh_in_progress"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AwsUnavailable(TokenBrokerError):
    """An AWS service throttled or failed after botocore's own retries: nothing changed, retry."""

    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LeaseLost(TokenBrokerError):
    """A conditional write found that this owner no longer holds the lease (fencing)."""

    code = "lease_lost"


# --- provider errors -------------------------------------------------------------------------


class ProviderErrorKind(enum.StrEnum):
    """What a provider's failure means for the grant: the one taxonomy, decided by the classifier.

    The values are metric dimensions (``RefreshProblem`` by ``kind``); ``code`` is the API's name.
    """

    REAUTHORIZATION_REQUIRED = "reauthorization_required"  # the grant is dead: connect again
    INVALID_CREDENTIALS = "invalid_credentials"  # a password login refused (Workly 7002): ask again
    CONFIGURATION = "configuration"  # our client credentials or setup are wrong
    ACCOUNT = "account"  # the end user's account is unusable (e.g. unpaid)
    TRANSIENT = "transient"  # try again later, token kept
    OUTCOME_UNKNOWN = "outcome_unknown"  # request sent, answer lost: the grant may have rotated
    REFUSED = "refused"  # refused for a reason the provider named in no way we know

    @property
    def code(self) -> str:
        """The stable machine-readable name in API error bodies and recorded failures."""
        return _CODES[self]

    @property
    def grant_is_dead(self) -> bool:
        """Retrying cannot help: only the end user connecting again can."""
        return self in (ProviderErrorKind.REAUTHORIZATION_REQUIRED, ProviderErrorKind.INVALID_CREDENTIALS)

    @classmethod
    def of_code(cls, code: str) -> ProviderErrorKind | None:
        """The kind a recorded or received ``code`` stands for (the first one, for shared codes)."""
        return next((kind for kind in cls if kind.code == code), None)


_CODES: dict[ProviderErrorKind, str] = {
    ProviderErrorKind.REAUTHORIZATION_REQUIRED: "needs_reauth",
    ProviderErrorKind.INVALID_CREDENTIALS: "invalid_credentials",
    ProviderErrorKind.CONFIGURATION: "provider_configuration",
    ProviderErrorKind.ACCOUNT: "provider_account",
    ProviderErrorKind.TRANSIENT: "provider_unavailable",
    # For the caller the same as TRANSIENT; only the refresh engine treats it with more care.
    ProviderErrorKind.OUTCOME_UNKNOWN: "provider_unavailable",
    ProviderErrorKind.REFUSED: "provider_error",
}


class ProviderError(TokenBrokerError):
    """A provider refused or failed. ``kind`` says what that means; the message is sanitised.

    ``provider_code`` is the provider's own error code and ``status`` its HTTP status, when known.
    """

    def __init__(
        self,
        kind: ProviderErrorKind,
        message: str,
        *,
        provider: str,
        provider_code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = kind.code
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

    def __repr__(self) -> str:
        return f"ProviderError({self.kind.name}, {self!s})"


class UnsupportedOperation(TokenBrokerError):
    code = "unsupported"
