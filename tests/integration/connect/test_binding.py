"""Who may complete a connect flow: the browser that opened the link, within the link's limits.

Each test replays one attack of issue 13 against the callback handler (payload 2.0 events,
moto, both sandboxes on 127.0.0.1), with one cookie jar per browser, and shows it fails while
the honest path still works.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
from tokenbroker.aws import AwsClients
from tokenbroker.browser_binding import binding_cookie, new_binding
from tokenbroker.clock import ManualClock
from tokenbroker.connect import BrowserMismatch, LinkUsedUp, LoginSubmission
from tokenbroker.errors import ConnectionNotFound
from tokenbroker.events import MemorySink
from tokenbroker.keys import ConnectionKey
from tokenbroker.providers import Catalog
from tokenbroker.settings import Settings
from tokenbroker.stores.onetime import MAX_LOGIN_ATTEMPTS
from tokenbroker.wiring import Runtime

from infra.localstack.resources import seed_app_secret
from infra.sandboxes import WorklySandbox
from tests.integration.connect.conftest import WORKLY_EMAIL, WORKLY_PASSWORD, WS_EMAIL, WS_PASSWORD
from tests.integration.connect.harness import PUBLIC_BASE_URL, RETURN_BASE, Answer, Harness
from tests.support.aws import new_table

WS_KEY = ConnectionKey("worksection", "mallory-ws")
WL_KEY = ConnectionKey("workly", "mallory-wl")
ALICE_EMAIL, ALICE_PASSWORD = "alice@example.com", "alice-password-1"
WRONG = "not-the-password-9"


def assert_nothing_stored(h: Harness, key: ConnectionKey) -> None:
    assert h.connections.get(key) is None
    with pytest.raises(ConnectionNotFound):
        h.tokens.get(key)
    assert h.events.events == []


def login(h: Harness, path: str, password: str, **fields: str) -> Answer:
    return h.post_form(path, {"action": "login", "email": WORKLY_EMAIL, "password": password, **fields})


# --- authorization code: a forwarded authorize URL ------------------------------------------------


def test_a_forwarded_authorize_url_lands_nothing_and_burns_the_state(harness: Harness) -> None:
    h = harness
    h.worksection.add_user(ALICE_EMAIL, ALICE_PASSWORD, accounts=("alice-co",))
    # Mallory opens his own link and forwards the provider's authorize URL behind it to Alice.
    h.use_browser("mallory")
    authorize = h.get(h.link("worksection", WS_KEY.connection_id)).location
    # Alice approves at Worksection in her own browser; it follows the redirect to our callback.
    h.use_browser("alice")
    callback = h.consent(authorize, email=ALICE_EMAIL, password=ALICE_PASSWORD, account="alice-co")
    refused = h.get(callback)
    assert refused.status == 400
    assert "started in another browser" in refused.body
    assert h.worksection.calls["token"] == 0  # the code was never exchanged
    assert_nothing_stored(h, WS_KEY)
    # The state is burned: Mallory replaying Alice's callback in his own browser gets nothing either.
    h.use_browser("mallory")
    replay = h.get(callback)
    assert replay.status == 400
    assert "started in another browser" not in replay.body
    assert h.worksection.calls["token"] == 0
    assert_nothing_stored(h, WS_KEY)


def test_a_callback_without_any_binding_cookie_is_refused(harness: Harness) -> None:
    h = harness
    callback = h.consent(
        h.get(h.link("worksection", WS_KEY.connection_id)).location, email=WS_EMAIL, password=WS_PASSWORD
    )
    h.jar.clear()  # e.g. a privacy mode that drops cookies between the two requests
    assert h.get(callback).status == 400
    assert_nothing_stored(h, WS_KEY)


def test_the_same_browser_completes_and_gets_a_locked_down_cookie(harness: Harness) -> None:
    h = harness
    opened = h.get(h.link("worksection", WS_KEY.connection_id, return_to=RETURN_BASE))
    assert opened.status == 302
    (name,) = h.jar
    assert name == "__Host-tb_binding"  # the harness speaks HTTPS, as API Gateway does
    done = h.get(h.consent(opened.location, email=WS_EMAIL, password=WS_PASSWORD, account="acme"))
    assert done.status == 302
    assert parse_qs(urlsplit(done.location).query)["status"] == ["connected"]
    assert done.headers["strict-transport-security"].startswith("max-age=")


def test_the_binding_cookie_attributes() -> None:
    secure = str(binding_cookie(new_binding(), secure=True))
    assert secure.startswith("__Host-tb_binding=")
    for attribute in ("Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age="):
        assert attribute in secure
    assert "Domain" not in secure  # __Host- forbids it: the cookie stays on this host
    plain = str(binding_cookie(new_binding(), secure=False))
    assert plain.startswith("tb_binding=")
    assert "Secure" not in plain and "HttpOnly" in plain


# --- link previews --------------------------------------------------------------------------------


def test_a_link_preview_does_not_burn_the_link(harness: Harness) -> None:
    h = harness
    path = h.link("workly", WL_KEY.connection_id)
    h.use_browser("chat-preview")
    assert h.get(path).status == 200  # the previewer sees the form, and that is all
    h.use_browser("ann")
    done = login(h, path, WORKLY_PASSWORD)
    assert done.status == 200
    assert "connected" in done.body
    assert h.tokens.get(WL_KEY).generation == 1


# --- password form: another browser, guessing, reset floods ---------------------------------------


def test_a_form_post_from_a_browser_that_never_opened_the_link_is_refused(harness: Harness) -> None:
    h = harness
    path = h.link("workly", WL_KEY.connection_id)
    h.use_browser("ann")
    assert h.get(path).status == 200
    h.use_browser("mallory")  # has the link, posts straight to it with a cookie of his own
    h.jar["__Host-tb_binding"] = new_binding()
    refused = h.post_form(path, {"email": WORKLY_EMAIL, "password": WORKLY_PASSWORD}, open_first=False)
    assert refused.status == 400
    assert "started in another browser" in refused.body
    assert h.workly.calls["token"] == 0  # the password never reached Workly
    assert_nothing_stored(h, WL_KEY)


def test_five_wrong_passwords_use_the_link_up_even_for_the_right_one(harness: Harness) -> None:
    h = harness
    path = h.link("workly", WL_KEY.connection_id, return_to=RETURN_BASE)
    for _ in range(1, MAX_LOGIN_ATTEMPTS):
        wrong = login(h, path, WRONG)
        assert wrong.status == 401
        assert "wrong" in wrong.body
        assert WRONG not in wrong.body
    last = login(h, path, WRONG)
    assert last.status == 429
    assert "used up" in last.body
    right = login(h, path, WORKLY_PASSWORD)
    assert right.status == 429
    reopened = h.get(path)  # opening it again shows the used-up page, not a form to type into
    assert reopened.status == 429
    assert 'type="password"' not in reopened.body
    assert h.workly.calls["token"] == MAX_LOGIN_ATTEMPTS  # the sixth never reached Workly
    assert_nothing_stored(h, WL_KEY)


@pytest.mark.timeout(60)
def test_racing_guesses_cannot_exceed_the_limit(
    server_clients: AwsClients, catalog: Catalog, workly: WorklySandbox, clock: ManualClock
) -> None:
    """20 guesses at once, straight at the service (the handler is one request at a time, like
    Lambda), against moto in server mode (DynamoDB serialises writes to an item; in-process moto
    does not): the attempt is counted by a conditional write before Workly is asked."""
    table = new_table(server_clients)
    seed_app_secret(
        server_clients.secretsmanager,
        stage="race",
        provider="workly",
        client_id=workly.client_id,
        client_secret=workly.client_secret,
    )
    settings = Settings(table_name=table.name, stage="race", public_base_url=PUBLIC_BASE_URL)
    service = Runtime(settings, aws=server_clients, clock=clock, events=MemorySink(), catalog=catalog).connect
    session_id = service.create_session("workly", WL_KEY.connection_id).session_id
    binding = new_binding()
    service.begin(session_id, binding=binding)
    outcomes: list[str] = []
    barrier = threading.Barrier(20)

    def guess(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            attempt = LoginSubmission(WORKLY_EMAIL, f"guess-{i:04d}")
            outcomes.append(type(service.submit_login(session_id, attempt, binding=binding)).__name__)
        except LinkUsedUp:
            outcomes.append("used_up")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == 20
    assert workly.calls["token"] == MAX_LOGIN_ATTEMPTS
    assert outcomes.count("used_up") == 20 - MAX_LOGIN_ATTEMPTS + 1  # the fifth wrong answer also says so
    with pytest.raises(LinkUsedUp):
        service.submit_login(session_id, LoginSubmission(WORKLY_EMAIL, WORKLY_PASSWORD), binding=binding)


def test_a_provider_outage_does_not_count_as_a_failed_login(harness: Harness) -> None:
    h = harness
    path = h.link("workly", WL_KEY.connection_id)
    h.workly.faults.fail(503, endpoint="token", times=MAX_LOGIN_ATTEMPTS + 1)
    for _ in range(MAX_LOGIN_ATTEMPTS + 1):
        assert login(h, path, WORKLY_PASSWORD).status == 503
    assert login(h, path, WORKLY_PASSWORD).status == 200


def test_a_password_echoed_in_a_provider_error_never_reaches_the_page(harness: Harness) -> None:
    h = harness
    password = "  horse   battery\tstaple  "
    folded = " ".join(password.split())
    body = json.dumps({"message": f"Service down while checking {folded} for {WORKLY_EMAIL}", "code": 5000})
    h.workly.faults.fail(503, endpoint="token", body=body)
    answer = login(h, h.link("workly", WL_KEY.connection_id), password)
    assert answer.status == 503
    assert folded not in answer.body
    assert "horse" not in answer.body
    assert folded not in h.log.getvalue()


def test_reset_requests_are_paced_and_capped_per_link(harness: Harness) -> None:
    h = harness
    path = h.link("workly", WL_KEY.connection_id)
    answers = [h.post_form(path, {"action": "reset", "email": WORKLY_EMAIL}) for _ in range(20)]
    assert [a.status for a in answers].count(200) == 1
    assert {a.status for a in answers[1:]} == {429}
    assert "Wait a minute" in answers[1].body
    assert len(h.workly.password_resets) == 1  # one e-mail, not twenty
    for _ in range(2):
        h.clock.advance(61)
        assert h.post_form(path, {"action": "reset", "email": WORKLY_EMAIL}).status == 200
    h.clock.advance(61)
    capped = h.post_form(path, {"action": "reset", "email": WORKLY_EMAIL})
    assert capped.status == 429
    assert "No more reset e-mails" in capped.body
    assert len(h.workly.password_resets) == 3
    # The link itself still works for signing in.
    assert login(h, path, WORKLY_PASSWORD).status == 200


def test_a_reset_reads_the_same_for_an_unknown_address(harness: Harness) -> None:
    h = harness
    known = h.post_form(h.link("workly", "k1"), {"action": "reset", "email": WORKLY_EMAIL})
    unknown = h.post_form(h.link("workly", "k2"), {"action": "reset", "email": "nobody@example.com"})
    assert known.status == unknown.status == 200
    assert known.body.replace(WORKLY_EMAIL, "X") == unknown.body.replace("nobody@example.com", "X")


def test_bindings_belong_to_their_link(harness: Harness) -> None:
    """A browser that opened one link cannot post to another link it never opened."""
    h = harness
    mine = h.link("workly", "mine")
    other = h.link("workly", "other")
    assert h.get(mine).status == 200
    refused = h.post_form(other, {"email": WORKLY_EMAIL, "password": WORKLY_PASSWORD}, open_first=False)
    assert refused.status == 400
    with pytest.raises(BrowserMismatch):
        h.service.submit_login(other.rsplit("/", 1)[1], LoginSubmission(WORKLY_EMAIL, WORKLY_PASSWORD), binding=None)
