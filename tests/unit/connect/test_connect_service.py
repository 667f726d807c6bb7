"""ConnectService without AWS or HTTP: the in-memory repository twin, a one-time store in memory and
a scripted provider."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from tokenbroker.api.statuses import http_status
from tokenbroker.browser_binding import new_binding
from tokenbroker.clock import ManualClock
from tokenbroker.connect import (
    BrowserMismatch,
    Connected,
    ConnectLink,
    ConnectService,
    InvalidState,
    LinkUsedUp,
    LoginForm,
    LoginSubmission,
    Redirect,
    SessionNotFound,
)
from tokenbroker.errors import (
    ConfigurationError,
    EndUserMismatch,
    InvalidInput,
    ProviderError,
    ProviderErrorKind,
    UnknownProvider,
    UnsupportedOperation,
)
from tokenbroker.events import EventType, MemorySink
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import Connection, ConnectionStatus, StoredToken
from tokenbroker.providers import Catalog, Provider
from tokenbroker.redaction import SECRETS
from tokenbroker.repository import ConnectionRepository
from tokenbroker.stores.memory import MemoryConnectionStore, MemoryTokenStore
from tokenbroker.stores.onetime import (
    MAX_LOGIN_ATTEMPTS,
    MAX_RESET_REQUESTS,
    ConnectSession,
    OAuthState,
    new_nonce,
)
from tokenbroker.stores.tokens import GenerationConflict
from tokenbroker.tokens import TokenSet, UserInfo

from tests.support.errors import raises_kind

BASE = "https://connect.example.test"


class MemoryOneTime:
    """OneTimeStore's contract in memory: the same conditions, decided under one lock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.sessions: dict[str, ConnectSession] = {}
        self.states: dict[str, OAuthState] = {}
        self.lock = threading.Lock()

    def create_session(
        self,
        key: ConnectionKey,
        *,
        return_to: str | None = None,
        scopes: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        ttl_seconds: float = 900,
        end_user_id: str | None = None,
        confirm: bool = False,
    ) -> ConnectSession:
        now = self.clock.now()
        session = ConnectSession(
            new_nonce(),
            key.provider,
            key.connection_id,
            return_to,
            tuple(scopes),
            dict(metadata or {}),
            now,
            now + ttl_seconds,
            end_user_id=end_user_id,
            confirm=confirm,
        )
        self.sessions[session.session_id] = session
        return session

    def _open(self, session_id: str) -> ConnectSession | None:
        session = self.sessions.get(session_id)
        if session is None or session.completed or session.expired(self.clock.now()):
            return None
        return session

    def get_session(self, session_id: str) -> ConnectSession | None:
        return self._open(session_id)

    def read_session(self, session_id: str) -> ConnectSession | None:
        return self.sessions.get(session_id)

    def _change(self, session_id: str, allowed: Any, **changes: Any) -> ConnectSession | None:
        with self.lock:
            session = self._open(session_id)
            if session is None or not allowed(session):
                return None
            changed = replace(session, **{k: v(session) if callable(v) else v for k, v in changes.items()})
            self.sessions[session_id] = changed
            return changed

    def bind_session(self, session_id: str, binding: str) -> bool:
        done = self._change(session_id, lambda s: True, bindings=lambda s: s.bindings | {binding})
        return done is not None

    def reserve_login_attempt(self, session_id: str) -> ConnectSession | None:
        return self._change(
            session_id, lambda s: s.login_attempts < MAX_LOGIN_ATTEMPTS, login_attempts=lambda s: s.login_attempts + 1
        )

    def refund_login_attempt(self, session_id: str) -> None:
        self._change(session_id, lambda s: s.login_attempts > 0, login_attempts=lambda s: s.login_attempts - 1)

    def reserve_reset_request(self, session_id: str) -> ConnectSession | None:
        now = self.clock.now()
        return self._change(
            session_id,
            lambda s: (
                s.reset_requests < MAX_RESET_REQUESTS and (s.last_reset_at is None or s.last_reset_at <= now - 60)
            ),
            reset_requests=lambda s: s.reset_requests + 1,
            last_reset_at=now,
        )

    def complete_session(self, session_id: str, *, pending_version: str | None = None) -> ConnectSession | None:
        if pending_version is None:
            return self.consume_session(session_id)
        return self._change(session_id, lambda s: True, completed_at=self.clock.now(), pending_version=pending_version)

    def consume_session(self, session_id: str) -> ConnectSession | None:
        with self.lock:
            session = self._open(session_id)
            if session is not None:
                del self.sessions[session_id]
            return session

    def _claim(self, session_id: str, expired: bool) -> ConnectSession | None:
        with self.lock:
            session = self.sessions.get(session_id)
            if session is None or not session.completed or session.expired(self.clock.now()) is not expired:
                return None
            return self.sessions.pop(session_id)

    def claim_completed(self, session_id: str) -> ConnectSession | None:
        return self._claim(session_id, expired=False)

    def claim_expired_pending(self, session_id: str) -> ConnectSession | None:
        return self._claim(session_id, expired=True)

    def expired_pending(self, limit: int = 100) -> list[str]:
        now = self.clock.now()
        return [sid for sid, s in self.sessions.items() if s.completed and s.expired(now)][:limit]

    def create_state(self, key: ConnectionKey, *, ttl_seconds: float = 600, **fields: Any) -> OAuthState:
        fields.setdefault("scopes", ())
        fields.setdefault("metadata", {})
        state = OAuthState(
            state=new_nonce(),
            provider=key.provider,
            connection_id=key.connection_id,
            expires_at=self.clock.now() + ttl_seconds,
            **fields,
        )
        self.states[state.state] = state
        return state

    def consume_state(self, state: str) -> OAuthState | None:
        with self.lock:
            found = self.states.pop(state, None)
        return found if found and found.expires_at > self.clock.now() else None


class Tokens(MemoryTokenStore):
    """The in-memory twin of the token store, with two faults to arm and a note of removals."""

    def __init__(self) -> None:
        super().__init__()
        self.conflicts = 0  # how many writes to refuse with GenerationConflict first
        self.broken = False
        self.dropped: list[tuple[ConnectionKey, str]] = []  # pending versions unlabelled
        self.deleted: list[ConnectionKey] = []

    def put(self, key: ConnectionKey, stored: StoredToken, *, restore_deleted: bool = False) -> str:
        if self.broken:
            raise ConnectionError("Secrets Manager is unreachable")
        if self.conflicts:
            self.conflicts -= 1
            raise GenerationConflict("someone else wrote it")
        return super().put(key, stored, restore_deleted=restore_deleted)

    def drop_pending(self, key: ConnectionKey, version_id: str) -> None:
        self.dropped.append((key, version_id))
        super().drop_pending(key, version_id)

    def delete(self, key: ConnectionKey, recovery_window_days: int = 7) -> bool:
        self.deleted.append(key)
        return super().delete(key, recovery_window_days)


class ScriptedProvider(Provider):
    def __init__(self, name: str, clock: ManualClock) -> None:
        self.name = name
        self.clock = clock
        self.calls: list[str] = []
        self.password = "right-password-1"
        self.fail_with: Exception | None = None

    def _token(self) -> TokenSet:
        now = int(self.clock.now())
        return TokenSet(
            access_token=new_nonce(),
            token_type="bearer",
            expires_at=now + 3600,
            obtained_at=now,
            refresh_token=new_nonce(),
            scopes=("read",),
            extra={"account_url": "https://a.example.com"},
        )

    def authorization_url(
        self, *, state: str, redirect_uri: str, scopes: Sequence[str] | None = None, code_challenge: str | None = None
    ) -> str:
        return f"https://idp.example/authorize?state={state}&redirect_uri={redirect_uri}"

    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None = None) -> TokenSet:
        self.calls.append("exchange")
        if self.fail_with:
            raise self.fail_with
        return self._token()

    def password_grant(self, *, username: str, password: str, scopes: Sequence[str] | None = None) -> TokenSet:
        self.calls.append("password")
        if self.fail_with:
            raise self.fail_with
        if password != self.password:
            raise ProviderError(
                ProviderErrorKind.INVALID_CREDENTIALS, "wrong", provider=self.name, provider_code="7002"
            )
        return self._token()

    def refresh(self, token: TokenSet) -> TokenSet:
        raise AssertionError("the connect flow never refreshes")

    def user_info(self, token: TokenSet) -> UserInfo:
        self.calls.append("user_info")
        if self.name == "worksection":
            raise ProviderError(ProviderErrorKind.TRANSIENT, "user info down", provider=self.name)
        return UserInfo(id="7", name="Ann", email="ann@example.com")

    def request_password_reset(self, email: str) -> str:
        self.calls.append("reset")
        return "  "


@dataclass
class World:
    service: ConnectService
    clock: ManualClock
    onetime: MemoryOneTime
    connections: MemoryConnectionStore
    tokens: Tokens
    events: MemorySink
    providers: dict[str, ScriptedProvider]

    def item(self, key: ConnectionKey) -> Connection:
        connection = self.connections.get(key)
        assert connection is not None, f"no item for {key}"
        return connection

    def live_items(self) -> list[Connection]:
        """Every connection item (pending ones too) of the providers these tests connect."""
        return [c for p in ("workly", "worksection") for c in self.connections.list_by_provider(p).connections]


@pytest.fixture
def world(tmp_path: Any) -> World:
    clock = ManualClock()
    extra = tmp_path / "p.yaml"
    extra.write_text("providers:\n  machine: {auth_mode: client_credentials, token_url: 'https://m.example/token'}\n")
    catalog = Catalog.load(extra, environ={})
    providers = {name: ScriptedProvider(name, clock) for name in ("workly", "worksection")}
    onetime, connections, tokens, events = (
        MemoryOneTime(clock),
        MemoryConnectionStore(clock=clock),
        Tokens(),
        MemorySink(),
    )
    service = ConnectService(
        catalog=catalog,
        onetime=onetime,  # type: ignore[arg-type]
        repository=ConnectionRepository(items=connections, secrets=tokens, clock=clock),
        providers=providers.__getitem__,
        events=events,
        clock=clock,
        allowed_return_urls=("https://app.example.com/done",),
        public_base_url=BASE + "/",
    )
    return World(service, clock, onetime, connections, tokens, events, providers)


def session_id(link: ConnectLink) -> str:
    return link.connect_url.rsplit("/", 1)[1]


# The end user's browser: its binding cookie, as the callback handler reads it.
BROWSER = new_binding()


def open_link(world: World, sid: str, *, binding: str = BROWSER) -> Redirect | LoginForm:
    return world.service.begin(sid, binding=binding)


def login(world: World, sid: str, submission: LoginSubmission, *, binding: str = BROWSER) -> Connected | LoginForm:
    open_link(world, sid, binding=binding)
    return world.service.submit_login(sid, submission, binding=binding)


def reset(world: World, sid: str, email: str, *, binding: str = BROWSER) -> LoginForm:
    open_link(world, sid, binding=binding)
    return world.service.password_reset(sid, email, binding=binding)


def callback(world: World, query: dict[str, str], *, binding: str = BROWSER) -> Connected:
    return world.service.complete_callback("worksection", query, binding=binding)


# --- create_session ------------------------------------------------------------------------------


def test_create_session_returns_a_link_on_the_public_base_url(world: World) -> None:
    link = world.service.create_session(
        "workly",
        "acct-1",
        return_to="https://app.example.com/done?x=1",
        scopes=["a", "b", "a"],
        metadata={"tenant": "t1"},
    )
    assert link.connect_url.startswith(BASE + "/connect/")
    assert len(session_id(link)) == 43  # 256 bits
    assert link.expires_at == int(world.clock.now() + 900)
    assert session_id(link) not in repr(link)
    session = world.onetime.sessions[session_id(link)]
    assert (session.return_to, session.scopes, session.metadata) == (
        "https://app.example.com/done?x=1",
        ("a", "b"),
        {"tenant": "t1"},
    )
    assert link.to_dict() == {
        "connect_url": link.connect_url,
        "expires_at": link.expires_at,
        "session_id": session_id(link),
    }


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("nope", "a"), UnknownProvider),
        (("Workly", "a"), InvalidInput),
        (("workly", "a/b"), InvalidInput),
        (("workly", ""), InvalidInput),
        (("workly", "x" * 129), InvalidInput),
        (("workly", ".."), InvalidInput),
        (("workly", "."), InvalidInput),
        (("machine", "a"), UnsupportedOperation),
    ],
)
def test_create_session_validates_provider_and_connection_id(world: World, args: tuple[str, str], error: type) -> None:
    with pytest.raises(error):
        world.service.create_session(*args)
    assert world.onetime.sessions == {}


@pytest.mark.parametrize(
    "options",
    [
        {"return_to": "https://evil.example/done"},
        {"return_to": "https://app.example.com@evil.example/done"},
        {"scopes": "read write"},
        {"scopes": ["has space"]},
        {"scopes": ["x"] * 51},
        {"metadata": {"bad key": "v"}},
        {"metadata": {"k": 1}},
        {"metadata": {"k": "v" * 257}},
        {"metadata": {f"k{i}": "v" for i in range(21)}},
    ],
)
def test_create_session_rejects_bad_options_with_400(world: World, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as raised:
        world.service.create_session("workly", "a", **options)
    assert http_status(raised.value) == 400
    assert world.onetime.sessions == {}


def test_base_url_comes_from_settings_then_the_request(world: World) -> None:
    assert world.service.base_url("https://other.example") == BASE
    world.service._public_base_url = None
    assert world.service.base_url("https://abc.execute-api.us-east-1.amazonaws.com") == (
        "https://abc.execute-api.us-east-1.amazonaws.com"
    )
    with pytest.raises(ConfigurationError):
        world.service.base_url(None)
    with pytest.raises(InvalidInput):
        world.service.base_url("https://evil.example@x")


# --- password flow -------------------------------------------------------------------------------


def test_showing_the_form_does_not_consume_the_session(world: World) -> None:
    sid = session_id(world.service.create_session("workly", "a", return_to="https://app.example.com/done"))
    form = open_link(world, sid)
    assert isinstance(form, LoginForm)
    assert form.form_targets == ("https://app.example.com",)
    assert isinstance(open_link(world, sid), LoginForm)
    assert sid in world.onetime.sessions


def test_login_submission_hides_and_remembers_the_password() -> None:
    submission = LoginSubmission("ann@example.com", "hunter2-hunter2")
    assert "hunter2" not in repr(submission)
    assert "hunter2-hunter2" not in SECRETS.scrub("pw=hunter2-hunter2")


def test_two_racing_logins_save_once(world: World) -> None:
    sid = session_id(world.service.create_session("workly", "a"))
    results: list[object] = []
    barrier = threading.Barrier(2)

    def submit() -> None:
        barrier.wait()
        try:
            results.append(login(world, sid, LoginSubmission("ann@example.com", "right-password-1")))
        except SessionNotFound as error:
            results.append(error)

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(type(r).__name__ for r in results) == ["Connected", "SessionNotFound"]
    assert len(world.events.events) == 1
    assert world.item(ConnectionKey("workly", "a")).generation == 1


def test_a_generation_conflict_moves_past_the_other_writer(world: World) -> None:
    world.tokens.conflicts = 1
    sid = session_id(world.service.create_session("workly", "a"))
    done = login(world, sid, LoginSubmission("ann@example.com", "right-password-1"))
    assert not isinstance(done, LoginForm)
    assert done.generation == 2
    assert world.tokens.get(ConnectionKey("workly", "a")).generation == 2
    (event,) = world.events.events
    assert (event.type, event.generation) == (EventType.CONNECTION_CREATED, 2)


def test_an_empty_reset_message_gets_a_default(world: World) -> None:
    sid = session_id(world.service.create_session("workly", "a"))
    form = reset(world, sid, "ann@example.com")
    assert form.notice and "link to reset the password" in form.notice
    assert form.notice_original is None  # the provider said nothing worth quoting
    assert form.status == 200


def test_reset_on_an_oauth_session_is_refused(world: World) -> None:
    sid = session_id(world.service.create_session("worksection", "a"))
    with pytest.raises(UnsupportedOperation):
        reset(world, sid, "ann@example.com")


# --- authorization-code flow ---------------------------------------------------------------------


def test_callback_survives_a_failed_user_info(world: World) -> None:
    begin = open_link(world, session_id(world.service.create_session("worksection", "a")))
    assert isinstance(begin, Redirect)
    state = begin.location.split("state=")[1].split("&")[0]
    done = callback(world, {"state": state, "code": "code-123456789"})
    assert done.generation == 1
    assert done.account is None
    stored = world.tokens.get(ConnectionKey("worksection", "a"))
    assert stored.metadata == {"account_url": "https://a.example.com"}
    assert world.providers["worksection"].calls == ["exchange", "user_info"]


def test_callback_with_a_state_but_no_code_is_400_and_burns_the_state(world: World) -> None:
    begin = open_link(world, session_id(world.service.create_session("worksection", "a")))
    assert isinstance(begin, Redirect)
    state = begin.location.split("state=")[1].split("&")[0]
    with pytest.raises(InvalidInput):
        callback(world, {"state": state})
    with pytest.raises(InvalidState):
        callback(world, {"state": state, "code": "code-123456789"})
    assert world.providers["worksection"].calls == []


def test_the_stored_token_carries_metadata_from_the_backend_and_the_provider(world: World) -> None:
    sid = session_id(world.service.create_session("workly", "a", metadata={"team": "x"}))
    login(world, sid, LoginSubmission("ann@example.com", "right-password-1", remember=True))
    stored = world.tokens.get(ConnectionKey("workly", "a"))
    assert stored.metadata["team"] == "x"
    assert stored.metadata["user_email"] == "ann@example.com"
    assert stored.login is not None and stored.login.username == "ann@example.com"
    connection = world.item(ConnectionKey("workly", "a"))
    assert connection.metadata == stored.metadata
    assert connection.next_refresh_at is not None
    assert replace(stored, login=None).login is None


def test_a_failed_token_write_leaves_no_active_record_behind(world: World) -> None:
    world.tokens.broken = True
    sid = session_id(world.service.create_session("workly", "a"))
    with pytest.raises(ConnectionError):
        login(world, sid, LoginSubmission("ann@example.com", "right-password-1"))
    assert world.live_items() == []
    assert world.events.events == []


def test_a_failed_token_write_on_reconnect_keeps_the_existing_record(world: World) -> None:
    login(
        world,
        session_id(world.service.create_session("workly", "a")),
        LoginSubmission("ann@example.com", "right-password-1"),
    )
    world.tokens.broken = True
    with pytest.raises(ConnectionError):
        login(
            world,
            session_id(world.service.create_session("workly", "a")),
            LoginSubmission("ann@example.com", "right-password-1"),
        )
    assert world.connections.get(ConnectionKey("workly", "a")) is not None
    assert len(world.events.events) == 1


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        ("temporarily_unavailable", ProviderErrorKind.TRANSIENT, 503),
        ("invalid_scope", ProviderErrorKind.CONFIGURATION, 502),
        ("unauthorized_client", ProviderErrorKind.CONFIGURATION, 502),
        ("server_error", ProviderErrorKind.TRANSIENT, 503),  # RFC 6749: the authorization server's 500
        ("something_else", ProviderErrorKind.REFUSED, 502),
    ],
)
def test_callback_errors_are_classified(world: World, error: str, kind: ProviderErrorKind, status: int) -> None:
    begin = open_link(world, session_id(world.service.create_session("worksection", "a")))
    assert isinstance(begin, Redirect)
    state = begin.location.split("state=")[1].split("&")[0]
    with raises_kind(kind) as raised:
        callback(world, {"state": state, "error": error})
    assert http_status(raised.value) == status
    assert world.live_items() == []


# --- binding, limits and confirm mode (issue 13) -------------------------------------------------


@pytest.mark.parametrize("name", ["account_url", "user_id", "user_name", "user_email"])
def test_metadata_cannot_claim_provider_facts(world: World, name: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        world.service.create_session("worksection", "a", metadata={name: "https://evil.example"})
    assert name in refused.value.message
    assert world.onetime.sessions == {}


def test_a_password_post_needs_the_binding_of_a_browser_that_opened_the_link(world: World) -> None:
    sid = session_id(world.service.create_session("workly", "a"))
    open_link(world, sid)
    for binding in (None, "", new_binding()):
        with pytest.raises(BrowserMismatch):
            world.service.submit_login(sid, LoginSubmission("ann@example.com", "right-password-1"), binding=binding)
    assert world.providers["workly"].calls == []
    assert world.live_items() == []


def test_the_callback_needs_the_binding_the_state_was_made_for(world: World) -> None:
    begin = open_link(world, session_id(world.service.create_session("worksection", "a")))
    assert isinstance(begin, Redirect)
    state = begin.location.split("state=")[1].split("&")[0]
    with pytest.raises(BrowserMismatch):
        callback(world, {"state": state, "code": "code-123456789"}, binding=new_binding())
    with pytest.raises(InvalidState):  # burned by the refused attempt
        callback(world, {"state": state, "code": "code-123456789"})
    assert world.providers["worksection"].calls == []


def test_the_state_never_outlives_its_session(world: World) -> None:
    sid = session_id(world.service.create_session("worksection", "a"))
    world.clock.advance(800)  # 100 s of the session left, less than a state's 10 minutes
    open_link(world, sid)
    (state,) = world.onetime.states.values()
    assert state.expires_at == pytest.approx(world.clock.now() + 100)
    assert state.session_id == sid


def test_the_fifth_wrong_password_uses_the_link_up(world: World) -> None:
    sid = session_id(world.service.create_session("workly", "a"))
    left = []
    for _ in range(MAX_LOGIN_ATTEMPTS - 1):
        form = login(world, sid, LoginSubmission("ann@example.com", "wrong-password-1"))
        assert isinstance(form, LoginForm) and form.status == 401
        left.append(form.attempts_left)
    assert left == [4, 3, 2, 1]
    with pytest.raises(LinkUsedUp):
        login(world, sid, LoginSubmission("ann@example.com", "wrong-password-1"))
    with pytest.raises(LinkUsedUp):
        login(world, sid, LoginSubmission("ann@example.com", "right-password-1"))
    assert world.providers["workly"].calls.count("password") == MAX_LOGIN_ATTEMPTS


def test_an_outage_gives_the_attempt_back(world: World) -> None:
    sid = session_id(world.service.create_session("workly", "a"))
    world.providers["workly"].fail_with = ProviderError(ProviderErrorKind.TRANSIENT, "down", provider="workly")
    for _ in range(MAX_LOGIN_ATTEMPTS + 2):
        form = login(world, sid, LoginSubmission("ann@example.com", "right-password-1"))
        assert isinstance(form, LoginForm) and form.status == 503
    assert world.onetime.sessions[sid].login_attempts == 0


def test_resets_are_paced_and_capped(world: World) -> None:
    sid = session_id(world.service.create_session("workly", "a"))
    assert reset(world, sid, "ann@example.com").status == 200
    assert reset(world, sid, "ann@example.com").status == 429  # within the minute
    world.clock.advance(60)
    assert reset(world, sid, "ann@example.com").status == 200
    world.clock.advance(60)
    assert reset(world, sid, "ann@example.com").status == 200
    world.clock.advance(120)
    capped = reset(world, sid, "ann@example.com")
    assert capped.status == 429 and capped.error and "No more" in capped.error
    assert world.providers["workly"].calls.count("reset") == MAX_RESET_REQUESTS


def confirm_session(world: World, end_user_id: str = "u-1") -> str:
    return world.service.create_session("workly", "a", end_user_id=end_user_id, confirm=True).session_id


def test_confirm_mode_keeps_the_grant_pending_then_confirms(world: World) -> None:
    sid = confirm_session(world)
    done = login(world, sid, LoginSubmission("ann@example.com", "right-password-1", remember=True))
    assert isinstance(done, Connected) and done.pending and done.redirect_to is None
    key = ConnectionKey("workly", "a")
    assert world.item(key).status is ConnectionStatus.PENDING
    assert world.events.events == []
    version = world.onetime.sessions[sid].pending_version
    assert version is not None
    pending = world.tokens.get_pending(key, version)
    assert pending is not None and pending.login is not None  # "remember" travels with the grant
    connection = world.service.confirm(sid, "u-1")
    assert (connection.status, connection.generation) == (ConnectionStatus.ACTIVE, 1)
    assert world.tokens.get(key).status is ConnectionStatus.ACTIVE
    assert world.tokens.get(key).login is not None
    assert world.tokens.get_pending(key, version) is None
    assert world.tokens.dropped == [(key, version)]
    (event,) = world.events.events
    assert event.type is EventType.CONNECTION_CREATED


def test_confirm_compares_the_end_user_exactly(world: World) -> None:
    for claimed in ("u-1 ", "U-1", "u-2"):
        sid = confirm_session(world)
        login(world, sid, LoginSubmission("ann@example.com", "right-password-1"))
        version = world.onetime.sessions[sid].pending_version
        assert version is not None
        with pytest.raises(EndUserMismatch):
            world.service.confirm(sid, claimed)
        assert world.live_items() == []
        key = ConnectionKey("workly", "a")
        assert (key, version) in world.tokens.dropped and world.tokens.get_pending(key, version) is None
        assert key in world.tokens.deleted


def test_a_pending_grant_that_lost_the_race_to_complete_is_dropped(world: World) -> None:
    sid = confirm_session(world)
    open_link(world, sid)
    world.onetime.complete_session(sid, pending_version="someone-else")  # another tab completed first
    with pytest.raises(SessionNotFound):
        world.service.submit_login(sid, LoginSubmission("ann@example.com", "right-password-1"), binding=BROWSER)
