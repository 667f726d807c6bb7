"""A runnable imitation of Worksection's OAuth endpoints (see /work/shared/providers.md).

- ``GET /oauth2/authorize?client_id&response_type=code&redirect_uri&state&scope``: sign-in form
  (e-mail, password, Approve / Deny), then an account choice for users with several accounts;
  ``POST /oauth2/authorize`` answers 302 to ``redirect_uri?code=...&state=...`` or
  ``?error=access_denied&state=...``. An unknown client or unregistered redirect URI gets an HTML
  error page, never a redirect.
- ``POST /oauth2/token`` (authorization_code only), ``POST /oauth2/refresh`` (refresh_token only:
  a different URL), ``POST /oauth2/resource`` (user info), ``GET /api/oauth2?action=get_projects``.

Error bodies follow the custom wrapper around league/oauth2-server: ``{"error", "errorDescription"}``
in camelCase (``league_version`` < 9, the default), or league 9's ``{"error", "error_description",
"hint", "message"}``. invalid_client comes with HTTP 200 (``invalid_client_status``);
invalid_request with 400 (``invalid_request_status``, may be 200). A dead refresh token is
``invalid_request`` "Cannot decrypt the refresh token" (< 9) or ``invalid_grant`` 400 with the hint
"Token has been revoked" / "Token has expired" (>= 9). Refresh rotates: the used refresh token and
its access token die at once.

PKCE (RFC 7636) as league/oauth2-server does it for every client: an authorize request with
``code_challenge`` (``code_challenge_method`` S256, or plain when absent) binds the code to it, and
the exchange then needs the matching ``code_verifier``: none is ``invalid_request`` "Check the
`code_verifier` parameter", a wrong one ``invalid_grant`` "Failed to verify `code_verifier`.". A
failed check does not use the code up (league revokes a code only after issuing tokens;
``burn_code_on_failed_pkce`` changes that). Without a challenge nothing changes, except that a
verifier sent anyway is refused (league >= 8.4 blocks that PKCE downgrade).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from base64 import b64decode, urlsafe_b64encode
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode

from tokenbroker.clock import Clock
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request, Response

from infra.sandboxes import consent_pages
from infra.sandboxes.ledger import TokenLedger, TokenRecord, TokenState
from infra.sandboxes.minting import jwt_like, league_opaque
from infra.sandboxes.server import (
    Endpoint,
    JsonBody,
    SandboxKnobs,
    SandboxServer,
    html_page,
    json_response,
)

HOUR = 3600.0
DAY = 24 * HOUR

DEFAULT_CLIENT_ID = "worksection-sandbox-client"
DEFAULT_CLIENT_SECRET = "worksection-sandbox-client-secret"

SCOPES = frozenset(
    f"{area}_{mode}"
    for area in ("projects", "tasks", "costs", "tags", "comments", "files", "users", "contacts")
    for mode in ("read", "write")
) | {"administrative"}

INVALID_REQUEST = (
    "The request is missing a required parameter, includes an invalid parameter value, "
    "includes a parameter more than once, or is otherwise malformed."
)
INVALID_REFRESH = "The refresh token is invalid."
ACCESS_DENIED = "The resource owner or authorization server denied the request."
UNSUPPORTED_GRANT = "The authorization grant type is not supported by the authorization server."
INVALID_GRANT = (
    "The provided authorization grant (e.g., authorization code, resource owner credentials) or refresh token "
    "is invalid, expired, revoked, does not match the redirection URI used in the authorization request, "
    "or was issued to another client."
)
# league checks both the challenge and the verifier against RFC 7636's alphabet and length.
_PKCE_VALUE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
PKCE_METHODS = ("S256", "plain")
_ACCOUNT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(slots=True)
class WorksectionKnobs(SandboxKnobs):
    code_ttl: float = 600.0
    league_version: int = 8  # < 9: camelCase wrapper, invalid_request; >= 9: invalid_grant + hint
    invalid_client_status: int = 200  # the wrapper answers 200; 401 is the RFC's choice
    invalid_request_status: int = 400  # 200 reproduces "HTTP 200 with an error body"
    token_type: str = "bearer"  # sometimes "Bearer" upstream
    refresh_includes_account_url: bool = False
    # {account}: the chosen account; {url}: this sandbox's root URL; {port}: its port.
    account_url_template: str = "https://{account}.worksection.com"
    redirect_uris: tuple[str, ...] | None = None  # None accepts any redirect URI
    burn_code_on_failed_pkce: bool = False  # league keeps the code; True: one wrong verifier kills it


@dataclass(slots=True)
class WorksectionUser:
    email: str
    password: str = field(repr=False)
    accounts: tuple[str, ...] = ("sandbox",)
    first_name: str = "Sandbox"
    last_name: str = "User"
    id: int = 0


@dataclass(slots=True)
class AuthCode:
    client_id: str
    redirect_uri: str
    email: str
    account: str
    scopes: tuple[str, ...]
    expires_at: float
    used: bool = False
    code_challenge: str | None = None
    code_challenge_method: str | None = None


@dataclass(slots=True)
class _LoginTicket:
    """Carries a verified login from the sign-in step to the account-choice step."""

    email: str
    expires_at: float


class WorksectionSandbox(SandboxServer):
    provider: ClassVar[str] = "worksection"
    knobs: WorksectionKnobs

    def __init__(
        self,
        *,
        port: int = 0,
        clock: Clock | None = None,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        access_ttl: float = DAY,
        refresh_ttl: float = 30 * DAY,
        client_name: str = "tokenbroker",
        verbose: bool = False,
        **knobs: Any,
    ) -> None:
        self.knobs = WorksectionKnobs(access_ttl=access_ttl, refresh_ttl=refresh_ttl)
        self.knobs.update(knobs)
        self.client_name = client_name
        self.users: dict[str, WorksectionUser] = {}
        self.codes: dict[str, AuthCode] = {}
        self.ledger = TokenLedger.empty()
        self._tickets: dict[str, _LoginTicket] = {}
        super().__init__(client_id=client_id, client_secret=client_secret, port=port, clock=clock, verbose=verbose)

    # --- URLs ----------------------------------------------------------------------------------

    @property
    def authorize_url(self) -> str:
        return self.url + "/oauth2/authorize"

    @property
    def token_url(self) -> str:
        return self.url + "/oauth2/token"

    @property
    def refresh_url(self) -> str:
        return self.url + "/oauth2/refresh"

    @property
    def userinfo_url(self) -> str:
        return self.url + "/oauth2/resource"

    @property
    def api_url(self) -> str:
        """Upstream this lives on the account's host; the sandbox serves it on its own."""
        return self.url + "/api/oauth2"

    def account_url(self, account: str) -> str:
        url = self.url if self.running else ""
        port = str(self.port) if self.running else ""
        return (
            self.knobs.account_url_template.replace("{account}", account).replace("{url}", url).replace("{port}", port)
        )

    def account_url_rules(self) -> list[str]:
        """What a catalog's ``account_url_domains`` must hold to trust this sandbox's account URLs:
        the base domain for ``https://{account}.<domain>``, else the exact origin."""
        template = self.knobs.account_url_template
        prefix = "https://{account}."
        if template.startswith(prefix) and "{" not in template[len(prefix) :] and "/" not in template[len(prefix) :]:
            return [template[len(prefix) :]]
        return [self.account_url("sandbox")]

    # --- seeding and test helpers --------------------------------------------------------------

    def add_user(self, email: str, password: str, **details: Any) -> None:
        """Seed a login; ``details``: ``accounts`` (names, first is the default), ``first_name``,
        ``last_name``."""
        accounts = tuple(details.pop("accounts", ("sandbox",)))
        if not accounts or not all(_ACCOUNT_NAME.match(a) for a in accounts):
            raise ValueError("accounts must be non-empty host labels like 'acme'")
        with self._lock:
            user = WorksectionUser(email, password, accounts, id=len(self.users) + 1, **details)
            self.users[email.lower()] = user

    def issue_tokens(self, email: str, account: str | None = None) -> dict[str, Any]:
        """Mint tokens for ``email`` without the browser flow (to seed a connection in other tests)."""
        with self._lock:
            user = self.users[email.lower()]
            return self._grant(user, self.client_id, account or user.accounts[0], (), with_account_url=True)

    def expire_access_tokens(self, email: str | None = None) -> int:
        with self._lock:
            return self.ledger.expire_access(self.clock.now(), email)

    def revoke_refresh_tokens(self, email: str | None = None) -> int:
        with self._lock:
            return self.ledger.revoke_refresh(email)

    def clear_state(self) -> None:
        self.ledger.clear()
        self.codes.clear()
        self._tickets.clear()

    # --- SandboxServer hooks -------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("authorize", "/oauth2/authorize", ("GET", "POST"), self._authorize),
            Endpoint("token", "/oauth2/token", ("POST",), self._token),
            Endpoint("refresh", "/oauth2/refresh", ("POST",), self._refresh),
            Endpoint("resource", "/oauth2/resource", ("POST",), self._resource),
            Endpoint("api", "/api/oauth2", ("GET", "POST"), self._api),
        ]

    def rate_limited_response(self, retry_after: float | None) -> Response:
        # The front proxy, not league, limits rates: an HTML page.
        response = html_page("429 Too Many Requests", "<p>Too many requests.</p>", 429)
        if retry_after is not None:
            response.headers["Retry-After"] = str(math.ceil(retry_after))
        return response

    def server_error_body(self) -> JsonBody:
        return self._error_body(
            "server_error",
            "The authorization server encountered an unexpected condition which prevented it from "
            "fulfilling the request.",
            None,
        )

    # --- authorize -----------------------------------------------------------------------------

    def _authorize(self, request: Request) -> Response:  # noqa: PLR0911 (one early return per error)
        params: MultiDict[str, str] = request.args if request.method == "GET" else request.form
        client_id = params.get("client_id", "")
        with self._lock:
            known_client = client_id in self.clients
        if not known_client:
            return consent_pages.error_page("Client authentication failed: unknown client_id.", 401)
        redirect_uri = params.get("redirect_uri", "")
        if not self._redirect_allowed(redirect_uri):
            return consent_pages.error_page("The redirect_uri is missing or not registered for this client.", 400)
        state = params.get("state")
        if params.get("response_type") != "code":
            return _redirect(redirect_uri, error="unsupported_response_type", state=state)
        scope = params.get("scope", "")
        scopes = tuple(s for s in re.split(r"[,\s]+", scope) if s)
        if any(s not in SCOPES for s in scopes):
            return _redirect(redirect_uri, error="invalid_scope", state=state)
        carried = {"client_id": client_id, "response_type": "code", "redirect_uri": redirect_uri, "scope": scope}
        if state is not None:
            carried["state"] = state
        challenge = params.get("code_challenge")
        if challenge is not None:
            # league's default method and checks; its invalid_request here is an error answer, not a redirect.
            method = params.get("code_challenge_method") or "plain"
            problem = _challenge_problem(challenge, method)
            if problem is not None:
                return consent_pages.error_page(problem, 400)
            carried.update(code_challenge=challenge, code_challenge_method=method)
        if request.method == "GET":
            return consent_pages.login_page(client_name=self.client_name, params=carried, scopes=scopes)
        return self._decide(request.form, carried, scopes)

    def _decide(self, form: MultiDict[str, str], carried: dict[str, str], scopes: tuple[str, ...]) -> Response:
        redirect_uri, state = carried["redirect_uri"], carried.get("state")
        if form.get("decision") == "deny":
            return _redirect(redirect_uri, error="access_denied", error_description=ACCESS_DENIED, state=state)
        now = self.clock.now()
        with self._lock:
            ticket_id = form.get("login_ticket", "")
            ticket = self._tickets.get(ticket_id)
            if ticket is not None and ticket.expires_at > now:
                user = self.users[ticket.email.lower()]
            else:
                email = form.get("email", "").strip()
                found = self.users.get(email.lower())
                if found is None or found.password != form.get("password"):
                    message = "Your sign-in session expired." if ticket_id else "Incorrect e-mail or password."
                    return consent_pages.login_page(
                        client_name=self.client_name, params=carried, scopes=scopes, email=email, error=message
                    )
                user = found
            account = form.get("account") or (user.accounts[0] if len(user.accounts) == 1 else None)
            if account not in user.accounts:
                if ticket is None:
                    ticket_id = secrets.token_urlsafe(24)
                self._tickets[ticket_id] = _LoginTicket(user.email, now + self.knobs.code_ttl)
                return consent_pages.account_page(
                    client_name=self.client_name,
                    params={**carried, "login_ticket": ticket_id},
                    accounts=user.accounts,
                    account_label={a: self.account_url(a) or a for a in user.accounts},
                    error="Choose one of your accounts." if form.get("account") else None,
                )
            self._tickets.pop(ticket_id, None)
            code = league_opaque()
            self.codes[code] = AuthCode(
                client_id=carried["client_id"],
                redirect_uri=redirect_uri,
                email=user.email,
                account=account,
                scopes=scopes,
                expires_at=now + self.knobs.code_ttl,
                code_challenge=carried.get("code_challenge"),
                code_challenge_method=carried.get("code_challenge_method"),
            )
        return _redirect(redirect_uri, code=code, state=state)

    def _redirect_allowed(self, redirect_uri: str) -> bool:
        if not redirect_uri.startswith(("http://", "https://")):
            return False
        allowed = self.knobs.redirect_uris
        return allowed is None or redirect_uri in allowed

    # --- token endpoints -----------------------------------------------------------------------

    def _token(self, request: Request) -> Response:  # noqa: PLR0911 (one early return per error)
        client_id = self._authenticated_client(request)
        if client_id is None:
            return self._invalid_client()
        form = request.form
        grant_type = form.get("grant_type")
        if not grant_type:
            return self._invalid_request("Check the `grant_type` parameter")
        if grant_type != "authorization_code":
            return self._error("unsupported_grant_type", UNSUPPORTED_GRANT, None, 400)
        code = form.get("code")
        if not code:
            return self._invalid_request("Check the `code` parameter")
        with self._lock:
            record = self.codes.get(code)
            if record is None:
                return self._invalid_request("Cannot decrypt the authorization code")
            if record.used:
                return self._invalid_request("Authorization code has been revoked")
            if self.clock.now() >= record.expires_at:
                return self._invalid_request("Authorization code has expired")
            if record.client_id != client_id:
                return self._invalid_request("Authorization code was not issued to this client")
            if record.redirect_uri != form.get("redirect_uri"):
                return self._invalid_request("Invalid redirect URI")
            pkce_failure = self._pkce_failure(record, form.get("code_verifier"))
            if pkce_failure is not None:
                if self.knobs.burn_code_on_failed_pkce:
                    record.used = True
                return pkce_failure
            record.used = True
            user = self.users[record.email.lower()]
            body = self._grant(user, client_id, record.account, record.scopes, with_account_url=True)
            self.outcomes.add("authorization_code")
        return json_response(body)

    def _pkce_failure(self, record: AuthCode, verifier: str | None) -> Response | None:
        """league's checks, in its order; None when the exchange may go on."""
        if record.code_challenge is None:
            if verifier is not None:
                return self._invalid_request("code_verifier received when no code_challenge is present")
            return None
        if verifier is None:
            return self._invalid_request("Check the `code_verifier` parameter")
        if not _PKCE_VALUE.fullmatch(verifier):
            return self._invalid_request("Code Verifier must follow the specifications of RFC-7636.")
        if not _verifier_matches(verifier, record.code_challenge, record.code_challenge_method or "plain"):
            return self._error("invalid_grant", INVALID_GRANT, "Failed to verify `code_verifier`.", 400)
        return None

    def _refresh(self, request: Request) -> Response:
        client_id = self._authenticated_client(request)
        if client_id is None:
            return self._invalid_client()
        form = request.form
        if form.get("grant_type") != "refresh_token":
            return self._error("unsupported_grant_type", UNSUPPORTED_GRANT, None, 400)
        token = form.get("refresh_token")
        if not token:
            return self._invalid_request("Check the `refresh_token` parameter")
        knobs = self.knobs
        with self._lock:
            state, record = self.ledger.refresh_state(token, self.clock.now())
            if record is None or state is not TokenState.VALID:
                return self._dead_refresh_token(state)
            if record.client_id != client_id:
                return self._refresh_error("Token is not linked to client")
            self.ledger.retire(token, with_access=True)  # both old tokens die at once
            user = self.users[record.subject.lower()]
            account = record.account or user.accounts[0]
            body = self._grant(
                user, client_id, account, record.scopes, with_account_url=knobs.refresh_includes_account_url
            )
            self.outcomes.add("refresh_token")  # inside the lock: counted even if the answer is lost
        return json_response(body)

    def _grant(
        self,
        user: WorksectionUser,
        client_id: str,
        account: str,
        scopes: tuple[str, ...],
        *,
        with_account_url: bool,
    ) -> dict[str, Any]:
        """Issue a pair; the caller holds the lock."""
        knobs = self.knobs
        now = self.clock.now()
        jti = secrets.token_hex(40)
        access = jwt_like(
            {
                "aud": client_id,
                "jti": jti,
                "iat": int(now),
                "nbf": int(now),
                "exp": int(now + knobs.access_ttl),
                "sub": str(user.id),
                "scopes": list(scopes),
            }
        )
        refresh = league_opaque()
        self.ledger.add_pair(
            access_token=access,
            refresh_token=refresh,
            subject=user.email,
            client_id=client_id,
            now=now,
            access_ttl=knobs.access_ttl,
            refresh_ttl=knobs.refresh_ttl,
            scopes=scopes,
            account=account,
        )
        body: dict[str, Any] = {
            "token_type": knobs.token_type,
            "expires_in": math.ceil(knobs.access_ttl),
            "access_token": access,
            "refresh_token": refresh,
        }
        if with_account_url:
            body["account_url"] = self.account_url(account)
        return body

    # --- user info and API ---------------------------------------------------------------------

    def _resource(self, request: Request) -> Response:
        client_id = self._authenticated_client(request)
        if client_id is None:
            return self._invalid_client()
        token = request.form.get("access_token")
        if not token:
            return self._invalid_request("Check the `access_token` parameter")
        with self._lock:
            problem, record = self._check_access(token)
            if problem is not None or record is None:
                return self._error("access_denied", ACCESS_DENIED, problem, 401)
            user = self.users[record.subject.lower()]
            account_url = self.account_url(record.account or user.accounts[0])
        return json_response(
            {
                "id": str(user.id),
                "first_name": user.first_name,
                "last_name": user.last_name,
                "email": user.email,
                "account_url": account_url,
            }
        )

    def _api(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return json_response({"status": "error", "message": "Access token is missing"}, 401)
        with self._lock:
            problem, record = self._check_access(token.strip())
        if problem is not None or record is None:
            return json_response({"status": "error", "message": problem}, 401)
        action = request.values.get("action")
        if action != "get_projects":
            return json_response({"status": "error", "message": "Action is invalid"})  # business error: 200
        return json_response(
            {
                "status": "ok",
                "data": [
                    {
                        "id": "1",
                        "name": "Sandbox project",
                        "page": "/project/1/",
                        "status": "active",
                        "company": record.account,
                    }
                ],
            }
        )

    def _check_access(self, token: str) -> tuple[str | None, TokenRecord | None]:
        state, record = self.ledger.access_state(token, self.clock.now())
        problem = {
            TokenState.VALID: None,
            TokenState.EXPIRED: "Access token is expired",
            TokenState.REVOKED: "Access token has been revoked",
            TokenState.UNKNOWN: "Access token could not be verified",
        }[state]
        return problem, record

    # --- errors --------------------------------------------------------------------------------

    def _authenticated_client(self, request: Request) -> str | None:
        """league accepts client credentials in the body or as HTTP Basic."""
        client_id, secret = request.form.get("client_id"), request.form.get("client_secret")
        header = request.headers.get("Authorization", "")
        if client_id is None and header.lower().startswith("basic "):
            try:
                client_id, _, secret = b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return None
        return client_id if self.client_is_valid(client_id, secret) else None

    def _error_body(self, error: str, description: str, hint: str | None) -> dict[str, str]:
        if self.knobs.league_version >= 9:
            body = {"error": error, "error_description": description, "message": description}
            if hint:
                body["hint"] = hint
            return body
        # The custom wrapper shows league's hint (the specific reason) as a camelCase description.
        return {"error": error, "errorDescription": hint or description}

    def _error(self, error: str, description: str, hint: str | None, status: int) -> Response:
        return json_response(self._error_body(error, description, hint), status)

    def _invalid_client(self) -> Response:
        return self._error("invalid_client", "Client authentication failed", None, self.knobs.invalid_client_status)

    def _invalid_request(self, hint: str) -> Response:
        return self._error("invalid_request", INVALID_REQUEST, hint, self.knobs.invalid_request_status)

    def _refresh_error(self, hint: str) -> Response:
        if self.knobs.league_version >= 9:
            return self._error("invalid_grant", INVALID_REFRESH, hint, 400)
        return self._error("invalid_request", INVALID_REFRESH, hint, self.knobs.invalid_request_status)

    def _dead_refresh_token(self, state: TokenState) -> Response:
        if self.knobs.league_version < 9:
            return self._refresh_error("Cannot decrypt the refresh token")
        hint = {
            TokenState.REVOKED: "Token has been revoked",
            TokenState.EXPIRED: "Token has expired",
        }.get(state, "Cannot decrypt the refresh token")
        return self._refresh_error(hint)


def _challenge_problem(challenge: str, method: str) -> str | None:
    if method not in PKCE_METHODS:
        return "Code challenge method must be one of `S256`, `plain`"
    if not _PKCE_VALUE.fullmatch(challenge):
        return "Code challenge must follow the specifications of RFC-7636."
    return None


def _verifier_matches(verifier: str, challenge: str, method: str) -> bool:
    if method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        expected = urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    else:
        expected = verifier
    return hmac.compare_digest(expected, challenge)


def _redirect(redirect_uri: str, **params: str | None) -> Response:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    separator = "&" if "?" in redirect_uri else "?"
    return Response(status=302, headers={"Location": f"{redirect_uri}{separator}{query}"})
