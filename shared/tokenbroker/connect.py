"""How an end user connects an account: connect sessions, the OAuth dance, the password form.

A backend creates a one-time *connect session* (``create_session``) and sends the user's browser
to its ``connect_url``. From there:

- authorization-code providers: ``begin`` consumes the session and trades it for one *state*
  (>= 128 bits, plus a PKCE verifier when the catalog says so, 10 minutes), then redirects to the
  provider; ``complete_callback`` consumes that state exactly once, exchanges the code and saves.
- password providers: ``begin`` only reads the session and returns a login form; the session
  survives wrong passwords and reset requests, and is consumed when the login succeeds, just
  before the connection is saved (so of two racing submissions only one saves).

Nothing is stored until the provider has handed out a token. Secrets received here (codes,
passwords, PKCE verifiers) are registered with ``remember_secret`` the moment they arrive so that
no log line can carry them; results and errors never hold them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tokenbroker.clock import Clock
from tokenbroker.errors import (
    AccountProblem,
    InvalidInput,
    InvalidUserCredentials,
    ProviderConfigurationError,
    ProviderError,
    TokenBrokerError,
    TransientProviderError,
    UnsupportedOperation,
)
from tokenbroker.events import DomainEvent, EventSink, EventType
from tokenbroker.keys import ConnectionKey, validate_connection_id
from tokenbroker.models import ConnectionStatus, PasswordLogin, StoredToken
from tokenbroker.observability import logger
from tokenbroker.providers.base import Provider
from tokenbroker.providers.catalog import AuthMode, Catalog, CatalogEntry
from tokenbroker.providers.pkce import new_pkce_pair
from tokenbroker.providers.registry import ProviderResolver
from tokenbroker.redaction import remember_secret
from tokenbroker.return_urls import ReturnUrlPolicy, origin_of, parse_strict, with_query
from tokenbroker.schedule import next_refresh_at
from tokenbroker.settings import ConfigurationError
from tokenbroker.stores.connections import ConnectionStore
from tokenbroker.stores.onetime import STATE_TTL_SECONDS, ConnectSession, OneTimeStore
from tokenbroker.stores.tokens import GenerationConflict, TokenStore
from tokenbroker.tokens import TokenSet, UserInfo

# Session ids and states are 32 random bytes (256 bits, far above the 128 the design asks for)
# from OneTimeStore.new_nonce: URL-safe base64, 43 characters. Anything else never reaches DynamoDB.
_BEARER_ID = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_SCOPES = 50
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")  # RFC 6749 scope-token characters
MAX_METADATA_ENTRIES = 20
_METADATA_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_METADATA_VALUE = 256
MAX_EMAIL = 320
MAX_PASSWORD = 1024
# Authorization errors a provider may send back to the callback (RFC 6749 section 4.1.2.1) that
# mean "our setup is wrong" or "try later" rather than a plain refusal.
CALLBACK_ERROR_KINDS: dict[str, type[ProviderError]] = {
    "invalid_request": ProviderConfigurationError,
    "unauthorized_client": ProviderConfigurationError,
    "unsupported_response_type": ProviderConfigurationError,
    "invalid_scope": ProviderConfigurationError,
    "invalid_client": ProviderConfigurationError,
    "server_error": ProviderError,
    "temporarily_unavailable": TransientProviderError,
}
# save_connected + put retries when a refresh wrote the same generation (see ConnectionStore).
MAX_SAVE_ATTEMPTS = 3


# --- errors (each maps to an HTML error page; messages are safe to show) --------------------


class SessionNotFound(TokenBrokerError):
    """Unknown, expired or already used connect session."""

    code = "connect_session_not_found"
    http_status = 404


class InvalidState(TokenBrokerError):
    """Unknown, reused, expired or foreign OAuth state: the callback did not start here."""

    code = "invalid_state"
    http_status = 400


class AuthorizationDenied(TokenBrokerError):
    """The end user (or the provider on their behalf) declined the authorization."""

    code = "access_denied"
    http_status = 403


class ForbiddenRequest(TokenBrokerError):
    """A form post that came from another site."""

    code = "forbidden"
    http_status = 403


class BrowserMismatch(TokenBrokerError):
    """The request lacks the binding cookie of the browser that opened the connect link."""

    code = "browser_mismatch"
    http_status = 400


class LinkUsedUp(TokenBrokerError):
    """Too many failed logins on one connect link: it is dead, even for the right password."""

    code = "connect_link_used_up"
    http_status = 429


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


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectLink:
    connect_url: str = field(repr=False)  # carries the session id: a bearer secret
    expires_at: int

    def to_dict(self) -> dict[str, Any]:
        return {"connect_url": self.connect_url, "expires_at": self.expires_at}


@dataclass(frozen=True, slots=True)
class Redirect:
    """Send the browser to the provider's authorize URL."""

    location: str = field(repr=False)  # carries the state


@dataclass(frozen=True, slots=True)
class LoginForm:
    """Show (or re-show) the password form. ``status`` is the HTTP status that fits."""

    provider: str
    provider_label: str
    email: str = ""
    remember: bool = False
    error: str | None = None
    notice: str | None = None
    status: int = 200
    # Origins a form post may be redirected to (for Content-Security-Policy form-action).
    form_targets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Connected:
    key: ConnectionKey
    provider_label: str
    generation: int
    reauthorized: bool
    # return_to with status=connected&provider=&connection_id=, or None: show a success page.
    redirect_to: str | None
    account: str | None = None


@dataclass(frozen=True, slots=True)
class LoginSubmission:
    """The password form as posted. ``repr`` hides the password."""

    email: str
    password: str = field(repr=False)
    remember: bool = False

    def __post_init__(self) -> None:
        remember_secret(self.password)


# --- the service --------------------------------------------------------------------------------


class ConnectService:
    def __init__(
        self,
        *,
        catalog: Catalog,
        onetime: OneTimeStore,
        tokens: TokenStore,
        connections: ConnectionStore,
        providers: ProviderResolver,
        events: EventSink,
        clock: Clock,
        allowed_return_urls: Sequence[str] = (),
        public_base_url: str | None = None,
        session_seconds: float = 900.0,
        state_seconds: float = STATE_TTL_SECONDS,
    ) -> None:
        self._catalog = catalog
        self._onetime = onetime
        self._tokens = tokens
        self._connections = connections
        self._providers = providers
        self._events = events
        self._clock = clock
        self._return_urls = ReturnUrlPolicy(allowed_return_urls)
        self._public_base_url = _checked_base_url(public_base_url) if public_base_url else None
        self._session_seconds = session_seconds
        self._state_seconds = state_seconds

    # --- for backends (POST /connect-sessions) ---------------------------------------------------

    def create_session(
        self,
        provider: str,
        connection_id: str,
        *,
        return_to: str | None = None,
        scopes: Sequence[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        request_base_url: str | None = None,
    ) -> ConnectLink:
        """A one-time link for the end user. Raises InvalidInput (400) or UnknownProvider (404).

        ``request_base_url`` is the public origin the request came in on (``https://<domainName>``
        on API Gateway); the configured ``public_base_url`` wins over it when set.
        """
        key = ConnectionKey(provider, validate_connection_id(connection_id))
        entry = self._catalog.get(key.provider)
        if entry.auth_mode is AuthMode.CLIENT_CREDENTIALS:
            raise UnsupportedOperation(f"{entry.label} needs no end-user connection")
        if return_to is not None:
            return_to = self._return_urls.check(return_to)
        base_url = self.base_url(request_base_url)
        session = self._onetime.create_session(
            key,
            return_to=return_to,
            scopes=_checked_scopes(scopes),
            metadata=_checked_metadata(metadata),
            ttl_seconds=self._session_seconds,
        )
        logger.info("connect session created", extra={"provider": key.provider, "connection_id": key.connection_id})
        return ConnectLink(connect_url=f"{base_url}/connect/{session.session_id}", expires_at=int(session.expires_at))

    def base_url(self, request_base_url: str | None = None) -> str:
        if self._public_base_url:
            return self._public_base_url
        if request_base_url:
            return _checked_base_url(request_base_url)
        raise ConfigurationError("PUBLIC_BASE_URL is not set and the request did not say where it came in")

    # --- GET /connect/{session} ----------------------------------------------------------------

    def begin(self, session_id: str, *, request_base_url: str | None = None) -> Redirect | LoginForm:
        session = self._session(session_id)
        entry = self._catalog.get(session.provider)
        if entry.auth_mode is AuthMode.PASSWORD:
            return self._form(entry, session)
        if entry.auth_mode is not AuthMode.AUTHORIZATION_CODE:
            raise UnsupportedOperation(f"{entry.label} cannot be connected in a browser")
        redirect_uri = f"{self.base_url(request_base_url)}/callback/{entry.name}"
        # One link, one state: consuming here makes a second visit fail instead of minting more states.
        consumed = self._onetime.consume_session(session.session_id)
        if consumed is None:
            raise SessionNotFound("this connect link was already used")
        verifier, challenge = new_pkce_pair() if entry.pkce else (None, None)
        remember_secret(verifier)
        pending = self._onetime.create_state(
            consumed.key,
            redirect_uri=redirect_uri,
            code_verifier=verifier,
            session_id=None,  # already consumed: the state stands on its own
            return_to=consumed.return_to,
            scopes=consumed.scopes,
            metadata=consumed.metadata,
            ttl_seconds=self._state_seconds,
        )
        location = self._providers(entry.name).authorization_url(
            state=pending.state,
            redirect_uri=redirect_uri,
            scopes=list(pending.scopes) or None,
            code_challenge=challenge,
        )
        logger.info("authorization started", extra={"provider": entry.name, "connection_id": pending.connection_id})
        return Redirect(location)

    # --- POST /connect/{session} -----------------------------------------------------------------

    def submit_login(self, session_id: str, form: LoginSubmission) -> Connected | LoginForm:
        """Password grant. A wrong password re-shows the form (401) and keeps the session."""
        session = self._session(session_id)
        entry = self._password_entry(session)
        email = form.email.strip()
        problem = _login_problem(email, form.password)
        if problem:
            return self._form(entry, session, email=email, remember=form.remember, error=problem, status=400)
        provider = self._providers(entry.name)
        try:
            token = provider.password_grant(username=email, password=form.password, scopes=list(session.scopes) or None)
        except InvalidUserCredentials:
            logger.info("wrong login on the connect form", extra={"provider": entry.name})
            return self._form(
                entry,
                session,
                email=email,
                remember=form.remember,
                error="The e-mail or password is wrong. Check them and try again.",
                status=401,
            )
        except (TransientProviderError, AccountProblem) as error:
            # Worth another try from the same form (later, or after fixing the account).
            logger.warning("password grant failed", extra={"provider": entry.name, "error": str(error)})
            return self._form(
                entry,
                session,
                email=email,
                remember=form.remember,
                error=f"{entry.label} did not accept the sign-in right now: {error.message}",
                status=error.http_status,
            )
        # The session is consumed only now, once: a racing second submission stops here.
        if self._onetime.consume_session(session.session_id) is None:
            raise SessionNotFound("this connect link was already used")
        login = PasswordLogin(email, form.password) if form.remember else None
        info = self._user_info(provider, token)
        if not info.email:
            # Password providers without a user-info endpoint: the login e-mail names the account.
            info = replace(info, email=email)
        return self._save(
            entry,
            session.key,
            token,
            info,
            requested_scopes=session.scopes,
            metadata=session.metadata,
            return_to=session.return_to,
            login=login,
        )

    def password_reset(self, session_id: str, email: str) -> LoginForm:
        """Ask the provider to mail a reset link; the form comes back with its message (or a problem)."""
        session = self._session(session_id)
        entry = self._password_entry(session)
        email = email.strip()
        if not _valid_email(email):
            return self._form(entry, session, email=email, error="Enter your e-mail address first.", status=400)
        try:
            message = self._providers(entry.name).request_password_reset(email)
        except InvalidInput as error:
            return self._form(entry, session, email=email, error=error.message, status=400)
        except InvalidUserCredentials:
            return self._form(
                entry, session, email=email, error=f"{entry.label} did not accept this e-mail address.", status=400
            )
        except ProviderError as error:
            logger.warning("password reset refused", extra={"provider": entry.name, "error": str(error)})
            return self._form(
                entry,
                session,
                email=email,
                error=f"{entry.label} could not send a reset e-mail right now. Try again in a minute.",
                status=error.http_status,
            )
        notice = message.strip() or f"{entry.label} will send a password reset link to this e-mail."
        return self._form(entry, session, email=email, notice=notice)

    # --- GET /callback/{provider} ----------------------------------------------------------------

    def complete_callback(self, provider: str, query: Mapping[str, str]) -> Connected:
        """Consume the state (always, whatever follows), exchange the code, save."""
        state = query.get("state") or ""
        if not _BEARER_ID.fullmatch(state):
            raise InvalidState("the sign-in answer has no valid state")
        pending = self._onetime.consume_state(state)
        if pending is None:
            raise InvalidState("the sign-in state is unknown, expired or already used")
        if pending.provider != provider:
            # The state is burned anyway: a state is only ever good for the provider it was made for.
            logger.warning("state used on another provider's callback", extra={"provider": pending.provider})
            raise InvalidState("the sign-in answer came back to the wrong place")
        code = query.get("code") or ""
        remember_secret(code)
        entry = self._catalog.get(pending.provider)
        error = query.get("error")
        if error:
            error_code = _safe_code(error)
            logger.info("authorization declined", extra={"provider": entry.name, "provider_error": error_code})
            if error_code == "access_denied":
                raise AuthorizationDenied(f"{entry.label} did not grant access")
            kind = CALLBACK_ERROR_KINDS.get(error_code, ProviderError)
            raise kind(f"{entry.label} reported an error", provider=entry.name, provider_code=error_code)
        if not code:
            raise InvalidInput("the sign-in answer has no authorization code", field="code")
        implementation = self._providers(entry.name)
        token = implementation.exchange_code(
            code=code, redirect_uri=pending.redirect_uri, code_verifier=pending.code_verifier
        )
        return self._save(
            entry,
            pending.key,
            token,
            self._user_info(implementation, token),
            requested_scopes=pending.scopes,
            metadata=pending.metadata,
            return_to=pending.return_to,
            login=None,
        )

    # --- internals -------------------------------------------------------------------------------

    def _session(self, session_id: str) -> ConnectSession:
        if not _BEARER_ID.fullmatch(session_id or ""):
            raise SessionNotFound("this connect link is not valid")
        session = self._onetime.get_session(session_id)
        if session is None:
            raise SessionNotFound("this connect link is unknown, expired or already used")
        return session

    def _password_entry(self, session: ConnectSession) -> CatalogEntry:
        entry = self._catalog.get(session.provider)
        if entry.auth_mode is not AuthMode.PASSWORD:
            raise UnsupportedOperation(f"{entry.label} is not connected with a password")
        return entry

    def _form(
        self,
        entry: CatalogEntry,
        session: ConnectSession,
        *,
        email: str = "",
        remember: bool = False,
        error: str | None = None,
        notice: str | None = None,
        status: int = 200,
    ) -> LoginForm:
        targets = (origin_of(session.return_to),) if session.return_to else ()
        return LoginForm(
            provider=entry.name,
            provider_label=entry.label,
            email=email[:MAX_EMAIL],
            remember=remember,
            error=error,
            notice=notice,
            status=status,
            form_targets=targets,
        )

    def _forget_new_connection(self, key: ConnectionKey) -> None:
        """The token never landed: a brand-new record must not claim an active connection."""
        try:
            self._connections.delete(key)
        except Exception:  # the original failure is what the user must see
            logger.warning("could not remove a half-saved connection", extra={"connection_id": key.connection_id})

    def _user_info(self, provider: Provider, token: TokenSet) -> UserInfo:
        # The grant is already spent: a failed user-info call must not throw the token away.
        try:
            return provider.user_info(token)
        except ProviderError as error:
            logger.warning("user info unavailable", extra={"provider": provider.name, "error": str(error)})
            return UserInfo()

    def _save(
        self,
        entry: CatalogEntry,
        key: ConnectionKey,
        token: TokenSet,
        info: UserInfo,
        *,
        requested_scopes: Sequence[str],
        metadata: Mapping[str, str],
        return_to: str | None,
        login: PasswordLogin | None,
    ) -> Connected:
        # What the provider says about the account wins over what the backend asked us to keep.
        merged = {**metadata, **dict(token.extra), **info.to_metadata()}
        scopes = tuple(token.scopes or requested_scopes)
        refresh_expires_at = (
            float(token.obtained_at + entry.refresh_token_ttl)
            if token.refresh_token and entry.refresh_token_ttl
            else None
        )
        due = (
            next_refresh_at(token.expires_at, token.obtained_at, refresh_expires_at, self._clock.now())
            if token.refresh_token or login
            else None  # nothing to refresh with: the token simply lives until it expires
        )
        existed = self._connections.get(key) is not None
        for attempt in range(1, MAX_SAVE_ATTEMPTS + 1):
            connection = self._connections.save_connected(
                key,
                expires_at=float(token.expires_at),
                refresh_expires_at=refresh_expires_at,
                next_refresh_at=due,
                metadata=merged,
                scopes=scopes,
            )
            stored = StoredToken(
                token=token,
                generation=connection.generation,
                status=ConnectionStatus.ACTIVE,
                metadata=merged,
                login=login,
            )
            try:
                self._tokens.put(key, stored, restore_deleted=True)
                break
            except GenerationConflict:
                # A refresh running on the old grant wrote this generation first; move past it.
                if attempt == MAX_SAVE_ATTEMPTS:
                    raise
            except Exception:
                if not existed:
                    self._forget_new_connection(key)
                raise
        event_type = EventType.CONNECTION_REAUTHORIZED if existed else EventType.CONNECTION_CREATED
        self._events.publish(
            DomainEvent.for_key(
                event_type, key, generation=connection.generation, expires_at=token.expires_at, reason="connect"
            )
        )
        logger.info(
            "connection saved",
            extra={"provider": key.provider, "connection_id": key.connection_id, "generation": connection.generation},
        )
        redirect_to = None
        if return_to:
            redirect_to = with_query(
                return_to, {"status": "connected", "provider": key.provider, "connection_id": key.connection_id}
            )
        return Connected(
            key=key,
            provider_label=entry.label,
            generation=connection.generation,
            reauthorized=existed,
            redirect_to=redirect_to,
            account=info.email or info.name,
        )


def _checked_base_url(value: str) -> str:
    value = value.rstrip("/")
    parsed = parse_strict(value, what="public_base_url")
    if parsed.rest:
        raise ConfigurationError("public_base_url must not have a query or fragment")
    return value


def _checked_scopes(scopes: Sequence[str] | None) -> tuple[str, ...]:
    if scopes is None:
        return ()
    if isinstance(scopes, str) or len(scopes) > MAX_SCOPES:
        raise InvalidInput(f"scopes must be a list of at most {MAX_SCOPES} scope names", field="scopes")
    for scope in scopes:
        if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
            raise InvalidInput("every scope must be 1-128 printable characters without spaces", field="scopes")
    return tuple(dict.fromkeys(scopes))


def _checked_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidInput(f"metadata must be an object of at most {MAX_METADATA_ENTRIES} entries", field="metadata")
    for name, value in metadata.items():
        if not isinstance(name, str) or not _METADATA_KEY.fullmatch(name):
            raise InvalidInput("metadata keys must match [A-Za-z0-9_.:-]{1,64}", field="metadata")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
            raise InvalidInput(f"metadata values must be strings of at most {MAX_METADATA_VALUE}", field="metadata")
    return dict(metadata)


_EMAIL = re.compile(r"[^\s@]+@[^\s@]+")


def _valid_email(email: str) -> bool:
    return len(email) <= MAX_EMAIL and bool(_EMAIL.fullmatch(email)) and email.isprintable()


def _login_problem(email: str, password: str) -> str | None:
    if not _valid_email(email):
        return "Enter the e-mail address you sign in with."
    if not password:
        return "Enter your password."
    if len(password) > MAX_PASSWORD:
        return "That password is too long."
    return None


def _safe_code(value: str) -> str:
    """A provider's error code from the query string, reduced to something harmless to show."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "", value)[:64]
    return cleaned or "unknown_error"
