"""A runnable imitation of Workly's OAuth endpoints (see /work/shared/providers.md).

Routes under ``prefix`` (default ``/v1``, so ``base_url`` is ``http://127.0.0.1:PORT/v1``):

- ``POST {prefix}/oauth/token`` form: ``grant_type=password`` (client_id, client_secret, username,
  password) or ``grant_type=refresh_token`` (client_id, client_secret, refresh_token).
- ``POST {prefix}/sign-in/password-reset`` form ``email`` -> ``{"message": "<Russian text>"}``.
- ``GET {prefix}/employees`` with ``Authorization: Bearer`` -> a JSON list (a tiny API for e2e).

Errors are ``{"message": "...", "code": N}``. HTTP statuses (unverified upstream, chosen here
and switchable): 7002 wrong login or password -> ``credential_error_status`` (400); 7006 refresh
token expired and 7008 invalid/rotated token -> ``credential_error_status`` (400); 7003 invalid
client -> 401; 7005 invalid grant_type -> 400; 8001 missing field and 8002 short password -> 422;
7010 -> 426 (``upgrade_required``); 6000 -> 429 (``rate_limit_per_minute``); 402 + 7004 for a user
whose subscription expired; 503 HTML page (``maintenance``). On the API: 7007 no token, 7008
invalid or revoked, 7009 expired, all 401.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tokenbroker.clock import Clock
from werkzeug.wrappers import Request, Response

from infra.sandboxes.ledger import TokenLedger, TokenState
from infra.sandboxes.minting import hex_token
from infra.sandboxes.server import (
    Endpoint,
    JsonBody,
    SandboxKnobs,
    SandboxServer,
    html_error,
    json_response,
)

DAY = 86_400.0

# Workly's documented "constant" client id; the secret is a sandbox value (configuration).
DEFAULT_CLIENT_ID = "6779ef20e75817b79602"
DEFAULT_CLIENT_SECRET = "workly-sandbox-client-secret"

RESET_MESSAGE = "Инструкция по восстановлению пароля отправлена на ваш e-mail"
MESSAGES: dict[int, str] = {
    7002: "Неверный логин или пароль",
    7003: "Неверный клиент",
    7004: "Доступ запрещён: срок действия подписки истёк",
    7005: "Неверный тип авторизации (grant_type)",
    7006: "Срок действия refresh token истёк",
    7007: "Вы не авторизованы",
    7008: "Неверный токен",
    7009: "Срок действия токена истёк",
    7010: "Необходимо обновить приложение",
    6000: "Слишком много запросов за минуту",
    5000: "Ошибка сервиса",
}


@dataclass(slots=True)
class WorklyKnobs(SandboxKnobs):
    refresh_kills_old_access: bool = False  # unverified upstream: old access lives to its expiry
    rotated_refresh_code: int = 7008  # what an already-used refresh token gets (7006 or 7008)
    credential_error_status: int = 400  # HTTP status of 7002/7006/7008 on the token endpoint
    upgrade_required: bool = False  # every token request -> 426 / 7010
    maintenance: bool = False  # every request -> 503 HTML
    rate_limit_per_minute: int | None = None  # beyond it -> 429 / 6000 until the minute ends
    scope: str = "v1:list:employee,v1:view:employee"
    token_type: str = "bearer"


@dataclass(slots=True)
class WorklyUser:
    email: str
    password: str = field(repr=False)
    full_name: str = "Sandbox User"
    subscription_expired: bool = False
    id: int = 0


@dataclass(frozen=True, slots=True)
class PasswordResetRequest:
    email: str
    known_user: bool
    at: float


class WorklySandbox(SandboxServer):
    provider: ClassVar[str] = "workly"
    knobs: WorklyKnobs

    def __init__(
        self,
        *,
        port: int = 0,
        clock: Clock | None = None,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        access_ttl: float = 30 * DAY,
        refresh_ttl: float = 60 * DAY,
        prefix: str = "/v1",
        verbose: bool = False,
        **knobs: Any,
    ) -> None:
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.knobs = WorklyKnobs(access_ttl=access_ttl, refresh_ttl=refresh_ttl)
        self.knobs.update(knobs)
        self.users: dict[str, WorklyUser] = {}
        self.password_resets: list[PasswordResetRequest] = []
        self.ledger = TokenLedger.empty()
        self._window: tuple[int, int] = (0, 0)  # (minute, requests in it) for the 6000 limiter
        super().__init__(client_id=client_id, client_secret=client_secret, port=port, clock=clock, verbose=verbose)

    # --- URLs ----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What the catalog calls ``base_url``: ``http://127.0.0.1:PORT/v1``."""
        return self.url + self.prefix

    @property
    def token_url(self) -> str:
        return self.base_url + "/oauth/token"

    @property
    def password_reset_url(self) -> str:
        return self.base_url + "/sign-in/password-reset"

    @property
    def api_url(self) -> str:
        return self.base_url + "/employees"

    # --- seeding and test helpers --------------------------------------------------------------

    def add_user(self, email: str, password: str, **details: Any) -> None:
        """Seed a login; ``details``: ``full_name``, ``subscription_expired``."""
        with self._lock:
            user = WorklyUser(email=email, password=password, id=len(self.users) + 1, **details)
            self.users[email.lower()] = user

    def set_subscription_expired(self, email: str, expired: bool = True) -> None:
        with self._lock:
            self.users[email.lower()].subscription_expired = expired

    def issue_tokens(self, email: str) -> dict[str, Any]:
        """Mint a token pair for ``email`` without HTTP (to seed a connection in other tests)."""
        with self._lock:
            return self._grant(self.users[email.lower()].email, self.client_id)

    def expire_access_tokens(self, email: str | None = None) -> int:
        with self._lock:
            return self.ledger.expire_access(self.clock.now(), email)

    def revoke_refresh_tokens(self, email: str | None = None) -> int:
        with self._lock:
            return self.ledger.revoke_refresh(email)

    def clear_state(self) -> None:
        self.ledger.clear()
        self.password_resets.clear()
        self._window = (0, 0)

    # --- SandboxServer hooks -------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        p = self.prefix
        return [
            Endpoint("token", f"{p}/oauth/token", ("POST",), self._token),
            Endpoint("password_reset", f"{p}/sign-in/password-reset", ("POST",), self._password_reset),
            Endpoint("employees", f"{p}/employees", ("GET",), self._employees),
        ]

    def rate_limited_response(self, retry_after: float | None) -> Response:
        response = _error(6000, 429)
        if retry_after is not None:
            response.headers["Retry-After"] = str(math.ceil(retry_after))
        return response

    def server_error_body(self) -> JsonBody:
        return {"message": MESSAGES[5000], "code": 5000}

    def before_request(self, endpoint: str, request: Request) -> Response | None:
        knobs = self.knobs
        if knobs.maintenance:
            return html_error(503, "Service Unavailable: technical maintenance")
        if knobs.rate_limit_per_minute is not None and self._over_rate_limit(knobs.rate_limit_per_minute):
            # Yii's limiter: 429 with X-Rate-Limit-* headers, no Retry-After.
            response = _error(6000, 429)
            response.headers["X-Rate-Limit-Limit"] = str(knobs.rate_limit_per_minute)
            response.headers["X-Rate-Limit-Remaining"] = "0"
            response.headers["X-Rate-Limit-Reset"] = str(60 - int(self.clock.now()) % 60)
            return response
        if knobs.upgrade_required and endpoint == "token":
            return _error(7010, 426)
        return None

    def _over_rate_limit(self, limit: int) -> bool:
        minute = int(self.clock.now() // 60)
        with self._lock:
            current, count = self._window
            count = count + 1 if current == minute else 1
            self._window = (minute, count)
        return count > limit

    def extra_control_routes(self) -> dict[str, tuple[str, ...]]:
        return {"password-resets": ("GET",)}

    def extra_control(self, action: str, request: Request) -> Response | None:
        if action == "password-resets":
            with self._lock:
                items = [{"email": r.email, "known_user": r.known_user, "at": r.at} for r in self.password_resets]
            return json_response(items)
        return None

    # --- endpoints -----------------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        form = request.form
        if not self.client_is_valid(form.get("client_id"), form.get("client_secret")):
            return _error(7003, 401)
        match form.get("grant_type"):
            case "password":
                return self._password_grant(form.get("username", ""), form.get("password", ""), str(form["client_id"]))
            case "refresh_token":
                return self._refresh_grant(form.get("refresh_token", ""), str(form["client_id"]))
            case _:
                return _error(7005, 400)

    def _password_grant(self, username: str, password: str, client_id: str) -> Response:
        if not username:
            return _validation(8001, "Необходимо заполнить «Логин».")
        if not password:
            return _validation(8001, "Необходимо заполнить «Пароль».")
        if len(password) < 8:
            return _validation(8002, "Значение «Пароль» должно содержать минимум 8 символов.")
        with self._lock:
            user = self.users.get(username.strip().lower())
            if user is None or user.password != password:
                return _error(7002, self.knobs.credential_error_status)
            if user.subscription_expired:
                return _error(7004, 402)
            body = self._grant(user.email, client_id)
        self.outcomes.add("password")
        return json_response(body)

    def _refresh_grant(self, refresh_token: str, client_id: str) -> Response:
        if not refresh_token:
            return _validation(8001, "Необходимо заполнить «Refresh Token».")
        knobs = self.knobs
        with self._lock:
            state, record = self.ledger.refresh_state(refresh_token, self.clock.now())
            if state is TokenState.EXPIRED:
                return _error(7006, knobs.credential_error_status)
            if state is TokenState.REVOKED:
                return _error(knobs.rotated_refresh_code, knobs.credential_error_status)
            if record is None or state is not TokenState.VALID or record.client_id != client_id:
                return _error(7008, knobs.credential_error_status)
            user = self.users.get(record.subject.lower())
            if user is not None and user.subscription_expired:
                return _error(7004, 402)
            self.ledger.retire(refresh_token, with_access=knobs.refresh_kills_old_access)
            body = self._grant(record.subject, client_id)
            self.outcomes.add("refresh_token")  # inside the lock: counted even if the answer is lost
        return json_response(body)

    def _grant(self, email: str, client_id: str) -> dict[str, Any]:
        """Issue a pair; the caller holds the lock."""
        access, refresh = hex_token(), hex_token()
        knobs = self.knobs
        self.ledger.add_pair(
            access_token=access,
            refresh_token=refresh,
            subject=email,
            client_id=client_id,
            now=self.clock.now(),
            access_ttl=knobs.access_ttl,
            refresh_ttl=knobs.refresh_ttl,
            scopes=tuple(knobs.scope.split(",")),
        )
        return {
            "access_token": access,
            "expires_in": math.ceil(knobs.access_ttl),
            "token_type": knobs.token_type,
            "scope": knobs.scope,
            "refresh_token": refresh,
        }

    def _password_reset(self, request: Request) -> Response:
        email = request.form.get("email", "").strip()
        if not email or "@" not in email:
            return _validation(8001, "Необходимо заполнить «E-mail».")
        with self._lock:
            known = email.lower() in self.users
            self.password_resets.append(PasswordResetRequest(email, known, self.clock.now()))
        # Same answer for unknown addresses: the endpoint must not reveal who has an account.
        return json_response({"message": RESET_MESSAGE})

    def _employees(self, request: Request) -> Response:
        token = _bearer(request)
        if token is None:
            return _error(7007, 401)
        with self._lock:
            state, record = self.ledger.access_state(token, self.clock.now())
            if state is TokenState.EXPIRED:
                return _error(7009, 401)
            if record is None or state is not TokenState.VALID:
                return _error(7008, 401)
            user = self.users.get(record.subject.lower())
        if user is not None and user.subscription_expired:
            return _error(7004, 402)
        name = user.full_name if user is not None else record.subject
        return json_response([{"id": 1, "full_name": name, "email": record.subject, "position": "Sandbox"}])


def _error(code: int, status: int) -> Response:
    return json_response({"message": MESSAGES[code], "code": code}, status)


def _validation(code: int, message: str) -> Response:
    return json_response({"message": message, "code": code}, 422)


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None
