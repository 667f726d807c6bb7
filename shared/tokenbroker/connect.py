"""How an end user connects an account: connect sessions, the OAuth dance, the password form.

A backend creates a *connect session* (``create_session``) and sends the user's browser to its
``connect_url``. The link works until one flow completes or it expires; opening it consumes
nothing, so a mail scanner or chat preview cannot burn it. From there:

- authorization-code providers: every ``begin`` mints its own *state* (>= 128 bits, a PKCE
  verifier unless the catalog turns PKCE off, 10 minutes) and redirects to the provider;
  ``complete_callback`` consumes that state exactly once, exchanges the code and saves.
- password providers: ``begin`` returns the login form; the session survives wrong passwords
  (5 attempts per link) and reset requests (3 per link, 1 a minute).

Who may complete a flow (design.md "Who completes a connect flow"):

- *browser binding*: ``begin`` is given the browser's binding cookie and stores its hash with the
  state or the session; the callback and the form post refuse another browser (a forwarded
  authorize URL), and the state is burned all the same.
- *application confirmation*: a session created with ``confirm`` keeps the grant *pending* (a
  labelled secret version, never vended or refreshed) until the application's backend calls
  ``confirm`` with the end user it meant; another end user or an expired session discards it.

Nothing is stored until the provider has handed out a token, and a completed flow ends the session
first (one conditional write), so of two racing completions only one saves. Secrets received here
(codes, passwords, PKCE verifiers) are registered with ``remember_secret`` the moment they arrive
so that no log line can carry them; results, pages and errors never hold them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from tokenbroker.api.statuses import http_status
from tokenbroker.clock import Clock
from tokenbroker.errors import (
    ConfigurationError,
    ConnectSessionExpired,
    ConnectSessionNotCompleted,
    EndUserMismatch,
    InvalidInput,
    ProviderError,
    ProviderErrorKind,
    TokenBrokerError,
    UnsupportedOperation,
)
from tokenbroker.events import DomainEvent, EventSink, EventType
from tokenbroker.keys import ConnectionKey, validate_connection_id
from tokenbroker.models import Connection, ConnectionStatus, PasswordLogin, StoredToken
from tokenbroker.observability import logger
from tokenbroker.providers.base import Provider
from tokenbroker.providers.catalog import AuthMode, Catalog, CatalogEntry
from tokenbroker.providers.pkce import new_pkce_pair
from tokenbroker.providers.registry import ProviderResolver
from tokenbroker.redaction import remember_secret
from tokenbroker.repository import ConnectionRepository, initial_schedule
from tokenbroker.return_urls import ReturnUrlPolicy, origin_of, parse_strict, with_query
from tokenbroker.stores.onetime import (
    MAX_LOGIN_ATTEMPTS,
    MAX_RESET_REQUESTS,
    STATE_TTL_SECONDS,
    ConnectSession,
    OneTimeStore,
)
from tokenbroker.tokens import TokenSet, UserInfo

# Session ids and states are 32 random bytes (256 bits, far above the 128 the design asks for)
# from OneTimeStore.new_nonce: URL-safe base64, 43 characters. Anything else never reaches DynamoDB.
_BEARER_ID = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_SCOPES = 50
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")  # RFC 6749 scope-token characters
MAX_METADATA_ENTRIES = 20
_METADATA_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_METADATA_VALUE = 256
# What the provider reports about the account: never taken from the backend, which could otherwise
# point a consumer at an account_url of its choosing when the provider omits one.
RESERVED_METADATA_KEYS = frozenset({"account_url", "user_id", "user_name", "user_email"})
MAX_END_USER_ID = 256
MAX_EMAIL = 320
MAX_PASSWORD = 1024
# Authorization errors a provider may send back to the callback (RFC 6749 section 4.1.2.1) that
# mean "our setup is wrong" or "try later" rather than a plain refusal (``access_denied`` is the
# end user's own no; anything else is REFUSED).
CALLBACK_ERROR_KINDS: dict[str, ProviderErrorKind] = {
    "invalid_request": ProviderErrorKind.CONFIGURATION,
    "unauthorized_client": ProviderErrorKind.CONFIGURATION,
    "unsupported_response_type": ProviderErrorKind.CONFIGURATION,
    "invalid_scope": ProviderErrorKind.CONFIGURATION,
    "invalid_client": ProviderErrorKind.CONFIGURATION,
    "server_error": ProviderErrorKind.TRANSIENT,  # the authorization server's HTTP 500
    "temporarily_unavailable": ProviderErrorKind.TRANSIENT,
}
# A password login the provider could not judge: the attempt is refunded and the form offered again.
_NOT_A_VERDICT_ON_THE_PASSWORD = frozenset(
    {ProviderErrorKind.TRANSIENT, ProviderErrorKind.OUTCOME_UNKNOWN, ProviderErrorKind.ACCOUNT}
)


# --- errors (each maps to an HTML error page; messages are safe to show) --------------------


class SessionNotFound(TokenBrokerError):
    """Unknown, expired or already used connect session."""

    code = "connect_session_not_found"


class InvalidState(TokenBrokerError):
    """Unknown, reused, expired or foreign OAuth state: the callback did not start here."""

    code = "invalid_state"


class AuthorizationDenied(TokenBrokerError):
    """The end user (or the provider on their behalf) declined the authorization."""

    code = "access_denied"


class ForbiddenRequest(TokenBrokerError):
    """A form post that came from another site."""

    code = "forbidden"


class BrowserMismatch(TokenBrokerError):
    """The request lacks the binding cookie of the browser that opened the connect link."""

    code = "browser_mismatch"


class LinkUsedUp(TokenBrokerError):
    """Too many failed logins on one connect link: it is dead, even for the right password."""

    code = "connect_link_used_up"


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectLink:
    connect_url: str = field(repr=False)  # carries the session id: a bearer secret
    expires_at: int
    session_id: str = field(repr=False)  # for POST /connect-sessions/{session_id}/confirm

    def to_dict(self) -> dict[str, Any]:
        return {"connect_url": self.connect_url, "expires_at": self.expires_at, "session_id": self.session_id}


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
    # The provider's own words behind ``notice`` (e.g. Workly's reset confirmation, in Russian).
    notice_original: str | None = None
    status: int = 200
    # Origins a form post may be redirected to (for Content-Security-Policy form-action).
    form_targets: tuple[str, ...] = ()
    # Where the password goes (the token endpoint's host), said on the page.
    provider_host: str | None = None
    attempts_left: int = MAX_LOGIN_ATTEMPTS
    return_to: str | None = None


@dataclass(frozen=True, slots=True)
class Connected:
    key: ConnectionKey
    provider_label: str
    generation: int
    reauthorized: bool
    # return_to with status=connected&provider=&connection_id=, or None: show a success page.
    redirect_to: str | None
    account: str | None = None
    # Confirm mode: the grant waits for the application (redirect_to says status=pending_confirmation).
    pending: bool = False


@dataclass(frozen=True, slots=True)
class LoginSubmission:
    """The password form as posted. ``repr`` hides the password."""

    email: str
    password: str = field(repr=False)
    remember: bool = False

    def __post_init__(self) -> None:
        remember_secret(*password_forms(self.password))


def password_forms(password: str) -> set[str]:
    """A password as it may come back inside a provider's text: as typed, trimmed, whitespace-folded."""
    return {form for form in (password, password.strip(), " ".join(password.split())) if form}


def binding_hash(binding: str) -> str:
    """What is stored of a browser's binding cookie: its SHA-256 (the cookie itself is a bearer secret)."""
    return hashlib.sha256(binding.encode()).hexdigest()


# --- the service --------------------------------------------------------------------------------


class ConnectService:
    def __init__(
        self,
        *,
        catalog: Catalog,
        onetime: OneTimeStore,
        repository: ConnectionRepository,
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
        self._repo = repository
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
        end_user_id: str | None = None,
        confirm: bool = False,
        request_base_url: str | None = None,
    ) -> ConnectLink:
        """A link for the end user, usable until one flow completes or it expires.

        Raises InvalidInput (400) or UnknownProvider (404). ``confirm=True`` (which needs
        ``end_user_id``) keeps the grant pending until ``confirm`` is called for that end user.
        ``request_base_url`` is the public origin the request came in on (``https://<domainName>``
        on API Gateway); the configured ``public_base_url`` wins over it when set.
        """
        key = ConnectionKey(provider, validate_connection_id(connection_id))
        entry = self._catalog.get(key.provider)
        if entry.auth_mode is AuthMode.CLIENT_CREDENTIALS:
            raise UnsupportedOperation(f"{entry.label} needs no end-user connection")
        if return_to is not None:
            return_to = self._return_urls.check(return_to)
        if not isinstance(confirm, bool):
            raise InvalidInput("confirm must be true or false", field="confirm")
        end_user_id = _checked_end_user_id(end_user_id)
        if confirm and end_user_id is None:
            raise InvalidInput("confirm needs the end_user_id the link is meant for", field="end_user_id")
        base_url = self.base_url(request_base_url)
        session = self._onetime.create_session(
            key,
            return_to=return_to,
            scopes=_checked_scopes(scopes),
            metadata=_checked_metadata(metadata),
            ttl_seconds=self._session_seconds,
            end_user_id=end_user_id,
            confirm=confirm,
        )
        logger.info(
            "connect session created",
            extra={"provider": key.provider, "connection_id": key.connection_id, "confirm": confirm},
        )
        return ConnectLink(
            connect_url=f"{base_url}/connect/{session.session_id}",
            expires_at=int(session.expires_at),
            session_id=session.session_id,
        )

    def base_url(self, request_base_url: str | None = None) -> str:
        if self._public_base_url:
            return self._public_base_url
        if request_base_url:
            return _checked_base_url(request_base_url)
        raise ConfigurationError("PUBLIC_BASE_URL is not set and the request did not say where it came in")

    # --- GET /connect/{session} ----------------------------------------------------------------

    def begin(self, session_id: str, *, binding: str, request_base_url: str | None = None) -> Redirect | LoginForm:
        """Start a flow in the browser whose binding cookie is ``binding``. Opening a link never
        consumes it (a link preview must not burn it): every opening gets its own state."""
        session = self._session(session_id)
        with returning_to(session.return_to):
            entry = self._catalog.get(session.provider)
            if entry.auth_mode is AuthMode.PASSWORD:
                if session.login_attempts >= MAX_LOGIN_ATTEMPTS:
                    raise LinkUsedUp("too many failed sign-in attempts on this connect link")
                if not self._onetime.bind_session(session.session_id, binding_hash(binding)):
                    self._session(session_id)  # gone meanwhile: say so
                    raise LinkUsedUp("this connect link was opened in too many browsers")
                return self._form(entry, session)
            if entry.auth_mode is not AuthMode.AUTHORIZATION_CODE:
                raise UnsupportedOperation(f"{entry.label} cannot be connected in a browser")
            redirect_uri = f"{self.base_url(request_base_url)}/callback/{entry.name}"
            verifier, challenge = new_pkce_pair() if entry.pkce else (None, None)
            remember_secret(verifier)
            pending = self._onetime.create_state(
                session.key,
                redirect_uri=redirect_uri,
                code_verifier=verifier,
                session_id=session.session_id,
                return_to=session.return_to,
                scopes=session.scopes,
                metadata=session.metadata,
                ttl_seconds=min(self._state_seconds, max(1.0, session.expires_at - self._clock.now())),
                binding=binding_hash(binding),
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

    def submit_login(self, session_id: str, form: LoginSubmission, *, binding: str | None) -> Connected | LoginForm:
        """Password grant from the browser that opened the link.

        A wrong password re-shows the form (401); the link allows ``MAX_LOGIN_ATTEMPTS`` attempts,
        counted before the provider is asked, so racing guesses stay within the limit too.
        """
        session = self._session(session_id)
        with returning_to(session.return_to):
            entry = self._password_entry(session)
            self._require_binding(session, binding)
            email = form.email.strip()
            problem = _login_problem(email, form.password)
            if problem:
                return self._form(entry, session, email=email, remember=form.remember, error=problem, status=400)
            counted = self._onetime.reserve_login_attempt(session.session_id)
            if counted is None:
                self._session(session_id)  # completed or expired meanwhile: say that instead
                raise LinkUsedUp("too many failed sign-in attempts on this connect link")
            provider = self._providers(entry.name)
            try:
                scopes = list(session.scopes) or None
                token = provider.password_grant(username=email, password=form.password, scopes=scopes)
            except ProviderError as error:
                if error.kind is ProviderErrorKind.INVALID_CREDENTIALS:
                    return self._wrong_login(entry, counted, email=email, remember=form.remember)
                if error.kind not in _NOT_A_VERDICT_ON_THE_PASSWORD:
                    raise
                # The provider did not judge the password: the attempt does not count. Worth another
                # try from the same form (later, or after fixing the account). The page says so in
                # its own words: a provider's text is for the log (which masks the password).
                self._onetime.refund_login_attempt(session.session_id)
                logger.warning("password grant failed", extra={"provider": entry.name, "error": str(error)})
                if error.kind is ProviderErrorKind.ACCOUNT:
                    problem = (
                        f"{entry.label} did not accept this account right now (for example, its subscription "
                        f"has ended). Check it with {entry.label}, then try again."
                    )
                else:
                    problem = f"{entry.label} is not answering right now. Wait a minute, then try again."
                return self._form(
                    entry, session, email=email, remember=form.remember, error=problem, status=http_status(error)
                )
            login = PasswordLogin(email, form.password) if form.remember else None
            info = self._user_info(provider, token)
            if not info.email:
                # Password providers without a user-info endpoint: the login e-mail names the account.
                info = replace(info, email=email)
            return self._finish(entry, session, token, info, login=login)

    def _wrong_login(self, entry: CatalogEntry, counted: ConnectSession, *, email: str, remember: bool) -> LoginForm:
        left = MAX_LOGIN_ATTEMPTS - counted.login_attempts
        logger.info("wrong login on the connect form", extra={"provider": entry.name, "attempts_left": left})
        if left <= 0:
            raise LinkUsedUp("too many failed sign-in attempts on this connect link")
        return self._form(
            entry,
            counted,
            email=email,
            remember=remember,
            error="The e-mail or password is wrong. Check them and try again.",
            status=401,
        )

    def password_reset(self, session_id: str, email: str, *, binding: str | None) -> LoginForm:
        """Ask the provider to mail a reset link: at most 3 per link, one a minute. The answer reads
        the same whether or not the address has an account."""
        session = self._session(session_id)
        with returning_to(session.return_to):
            entry = self._password_entry(session)
            self._require_binding(session, binding)
            email = email.strip()
            if not _valid_email(email):
                return self._form(entry, session, email=email, error="Enter your e-mail address first.", status=400)
            counted = self._onetime.reserve_reset_request(session.session_id)
            if counted is None:
                current = self._session(session_id)
                if current.reset_requests >= MAX_RESET_REQUESTS:
                    error = "No more reset e-mails can be sent from this link. Check your inbox and spam folder."
                else:
                    error = "A reset e-mail was just requested. Wait a minute before asking for another one."
                return self._form(entry, current, email=email, error=error, status=429)
            summary = (
                f"If {email} belongs to a {entry.label} account, {entry.label} has been asked to e-mail it a link "
                "to reset the password. Reset it, then sign in here with the new password."
            )
            try:
                message = self._providers(entry.name).request_password_reset(email)
            except InvalidInput:
                # An unknown or refused address reads exactly like a known one.
                return self._form(entry, counted, email=email, notice=summary)
            except ProviderError as error:
                if error.kind is ProviderErrorKind.INVALID_CREDENTIALS:
                    return self._form(entry, counted, email=email, notice=summary)  # the same: refused address
                logger.warning("password reset refused", extra={"provider": entry.name, "error": str(error)})
                return self._form(
                    entry,
                    counted,
                    email=email,
                    error=f"{entry.label} could not send a reset e-mail right now. Try again in a minute.",
                    status=http_status(error),
                )
            original = message.strip() or None
            return self._form(entry, counted, email=email, notice=summary, notice_original=original)

    # --- GET /callback/{provider} ----------------------------------------------------------------

    def complete_callback(self, provider: str, query: Mapping[str, str], *, binding: str | None) -> Connected:
        """Consume the state (always, whatever follows), check the browser, exchange the code, save."""
        state = query.get("state") or ""
        if not _BEARER_ID.fullmatch(state):
            raise InvalidState("the sign-in answer has no valid state")
        pending = self._onetime.consume_state(state)
        if pending is None:
            raise InvalidState("the sign-in state is unknown, expired or already used")
        with returning_to(pending.return_to):
            if pending.provider != provider:
                # The state is burned anyway: a state is only ever good for the provider it was made for.
                logger.warning("state used on another provider's callback", extra={"provider": pending.provider})
                raise InvalidState("the sign-in answer came back to the wrong place")
            if not binding or not pending.binding or not hmac.compare_digest(binding_hash(binding), pending.binding):
                # A forwarded authorize URL: someone else approved in a browser that never opened the link.
                logger.warning("callback from another browser", extra={"provider": pending.provider})
                raise BrowserMismatch("the sign-in was started in another browser")
            code = query.get("code") or ""
            remember_secret(code)
            entry = self._catalog.get(pending.provider)
            error = query.get("error")
            if error:
                error_code = _safe_code(error)
                logger.info("authorization declined", extra={"provider": entry.name, "provider_error": error_code})
                if error_code == "access_denied":
                    raise AuthorizationDenied(f"{entry.label} did not grant access")
                kind = CALLBACK_ERROR_KINDS.get(error_code, ProviderErrorKind.REFUSED)
                raise ProviderError(
                    kind, f"{entry.label} reported an error", provider=entry.name, provider_code=error_code
                )
            if not code:
                raise InvalidInput("the sign-in answer has no authorization code", field="code")
            # The link must still be open: a flow completed in another tab or browser ends it.
            session = self._session(pending.session_id or "")
            implementation = self._providers(entry.name)
            token = implementation.exchange_code(
                code=code, redirect_uri=pending.redirect_uri, code_verifier=pending.code_verifier
            )
            return self._finish(entry, session, token, self._user_info(implementation, token), login=None)

    # --- POST /connect-sessions/{session_id}/confirm ---------------------------------------------

    def confirm(self, session_id: str, end_user_id: str) -> Connection:
        """The application vouches that ``end_user_id`` completed the flow: the pending grant becomes
        the connection's (Created / Reauthorized event). Another end user discards it (403)."""
        if not isinstance(end_user_id, str) or _checked_end_user_id(end_user_id) is None:
            raise InvalidInput("end_user_id must be 1-256 printable characters", field="end_user_id")
        if not _BEARER_ID.fullmatch(session_id or ""):
            raise SessionNotFound("unknown connect session")
        claimed = self._onetime.claim_completed(session_id)
        if claimed is None:
            raise self._why_unconfirmable(session_id)
        key = claimed.key
        if claimed.end_user_id is None or not hmac.compare_digest(claimed.end_user_id, end_user_id):
            logger.warning("confirmation for another end user", extra={"provider": key.provider})
            self._discard(claimed, reason="end_user_mismatch")
            raise EndUserMismatch("the connect session was completed for another end user; the grant was discarded")
        stored = self._repo.pending(key, claimed.pending_version or "")
        if stored is None:
            raise ConnectSessionExpired("a newer sign-in for this connection replaced this one")
        entry = self._catalog.get(key.provider)
        connection, _ = self._save(
            entry, key, stored.token, dict(stored.metadata), scopes=stored.token.scopes, login=stored.login
        )
        self._repo.drop_pending(key, claimed.pending_version or "")
        return connection

    def discard_expired_pending(self, limit: int = 100) -> int:
        """Discard grants whose confirmation window passed (the sweep calls this). How many."""
        discarded = 0
        for session_id in self._onetime.expired_pending(limit):
            session = self._onetime.claim_expired_pending(session_id)
            if session is not None:
                self._discard(session, reason="expired")
                discarded += 1
        return discarded

    def _why_unconfirmable(self, session_id: str) -> TokenBrokerError:
        session = self._onetime.read_session(session_id)
        if session is None:
            return SessionNotFound("unknown or already confirmed connect session")
        if not session.confirm:
            return InvalidInput("this connect session was created without confirm")
        if session.expired(self._clock.now()):
            return ConnectSessionExpired("the connect session expired before it was confirmed")
        return ConnectSessionNotCompleted("the end user has not finished connecting yet")

    def _discard(self, session: ConnectSession, *, reason: str) -> None:
        key = session.key
        # A connection that only ever held this grant goes too; one that is active meanwhile stays.
        self._repo.discard_pending(key, session.pending_version)
        logger.info("pending grant discarded", extra={"provider": key.provider, "reason": reason})

    # --- internals -------------------------------------------------------------------------------

    def _session(self, session_id: str) -> ConnectSession:
        if not _BEARER_ID.fullmatch(session_id or ""):
            raise SessionNotFound("this connect link is not valid")
        session = self._onetime.get_session(session_id)
        if session is None:
            raise SessionNotFound("this connect link is unknown, expired or already used")
        return session

    @staticmethod
    def _require_binding(session: ConnectSession, binding: str | None) -> None:
        if not binding or binding_hash(binding) not in session.bindings:
            logger.warning("form post from another browser", extra={"provider": session.provider})
            raise BrowserMismatch("the sign-in was started in another browser")

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
        notice_original: str | None = None,
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
            notice_original=notice_original,
            status=status,
            form_targets=targets,
            provider_host=urlsplit(entry.token_url).hostname if entry.token_url else None,
            attempts_left=max(0, MAX_LOGIN_ATTEMPTS - session.login_attempts),
            return_to=session.return_to,
        )

    def _user_info(self, provider: Provider, token: TokenSet) -> UserInfo:
        # The grant is already spent: a failed user-info call must not throw the token away.
        try:
            return provider.user_info(token)
        except ProviderError as error:
            logger.warning("user info unavailable", extra={"provider": provider.name, "error": str(error)})
            return UserInfo()

    def _finish(
        self,
        entry: CatalogEntry,
        session: ConnectSession,
        token: TokenSet,
        info: UserInfo,
        *,
        login: PasswordLogin | None,
    ) -> Connected:
        """A flow completed: end the session (once), then save the grant, or keep it pending."""
        key = session.key
        # What the provider says about the account wins over what the backend asked us to keep.
        metadata = {**session.metadata, **dict(token.extra), **info.to_metadata()}
        scopes = tuple(token.scopes or session.scopes)
        account = info.email or info.name
        if not session.confirm:
            if self._onetime.complete_session(session.session_id) is None:
                raise SessionNotFound("this connect link was already used")
            connection, reauthorized = self._save(entry, key, token, metadata, scopes=scopes, login=login)
            return Connected(
                key=key,
                provider_label=entry.label,
                generation=connection.generation,
                reauthorized=reauthorized,
                redirect_to=self._back(session, {"status": "connected"}),
                account=account,
            )
        stored = StoredToken(
            token=replace(token, scopes=scopes),
            generation=0,
            status=ConnectionStatus.PENDING,
            metadata=metadata,
            login=login,
        )
        version = self._repo.save_pending(key, stored, request_id=session.session_id)
        if self._onetime.complete_session(session.session_id, pending_version=version) is None:
            self._repo.drop_pending(key, version)
            raise SessionNotFound("this connect link was already used")
        logger.info("grant pending confirmation", extra={"provider": key.provider, "connection_id": key.connection_id})
        return Connected(
            key=key,
            provider_label=entry.label,
            generation=0,
            reauthorized=False,
            redirect_to=self._back(session, {"status": "pending_confirmation", "connect_session": session.session_id}),
            account=account,
            pending=True,
        )

    @staticmethod
    def _back(session: ConnectSession, status: Mapping[str, str]) -> str | None:
        if not session.return_to:
            return None
        return with_query(
            session.return_to, {**status, "provider": session.provider, "connection_id": session.connection_id}
        )

    def _save(
        self,
        entry: CatalogEntry,
        key: ConnectionKey,
        token: TokenSet,
        metadata: dict[str, str],
        *,
        scopes: Sequence[str],
        login: PasswordLogin | None,
    ) -> tuple[Connection, bool]:
        """Make ``token`` the connection's current grant and announce it; (item, was it a re-connect)."""
        schedule = initial_schedule(
            token, refresh_token_ttl=entry.refresh_token_ttl, login=login, now=self._clock.now()
        )
        saved = self._repo.save_connected(key, token, metadata=metadata, scopes=scopes, login=login, schedule=schedule)
        connection, existed = saved.connection, _was_connected(saved.previous)
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
        return connection, existed


@contextmanager
def returning_to(return_to: str | None) -> Iterator[None]:
    """Errors raised inside know where the end user came from: their page links back there."""
    try:
        yield
    except TokenBrokerError as error:
        if return_to and error.return_to is None:
            error.return_to = return_to
        raise


def _was_connected(connection: Connection | None) -> bool:
    """A connection that held a grant before (a pending one never did)."""
    return connection is not None and connection.status is not ConnectionStatus.PENDING


def _checked_end_user_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_END_USER_ID or not value.isprintable():
        raise InvalidInput(f"end_user_id must be 1-{MAX_END_USER_ID} printable characters", field="end_user_id")
    return value


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
        if name in RESERVED_METADATA_KEYS:
            raise InvalidInput(f"metadata key {name} is reserved for what the provider reports", field="metadata")
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
