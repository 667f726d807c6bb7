"""Password flow: connect link -> our login form -> Workly sandbox's password grant."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from tokenbroker.aws import DynamoTable
from tokenbroker.errors import ConnectionNotFound
from tokenbroker.events import EventType
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import ConnectionStatus

from tests.integration.connect.conftest import WORKLY_EMAIL, WORKLY_PASSWORD
from tests.integration.connect.harness import RETURN_BASE, Answer, Harness

KEY = ConnectionKey("workly", "acct-7")
WRONG_PASSWORD = "not-the-password-9"


class FormFields(HTMLParser):
    """The inputs, labels and buttons of a page, to check what a screen reader and a browser see."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.inputs: dict[str, dict[str, str]] = {}
        self.labels: dict[str, str] = {}
        self.buttons: list[dict[str, str]] = []
        self.forms: list[dict[str, str]] = []
        self._label_for: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "input":
            self.inputs[a["name"]] = a
        elif tag == "label":
            self._label_for = a.get("for")
            self.labels[self._label_for or ""] = ""
        elif tag == "button":
            self.buttons.append(a)
        elif tag == "form":
            self.forms.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._label_for = None

    def handle_data(self, data: str) -> None:
        if self._label_for is not None:
            self.labels[self._label_for] += data


def login(h: Harness, path: str, *, password: str = WORKLY_PASSWORD, remember: bool = False, **extra: str) -> Answer:
    fields = {"action": "login", "email": WORKLY_EMAIL, "password": password, **extra}
    if remember:
        fields["remember"] = "yes"
    return h.post_form(path, fields)


def test_the_form_is_accessible_and_locked_down(harness: Harness) -> None:
    h = harness
    page = h.get(h.link("workly", KEY.connection_id, return_to=RETURN_BASE))
    assert page.status == 200
    form = FormFields(page.body)
    assert form.forms == [{"method": "post"}]  # posts back to the same URL
    assert form.inputs["email"]["type"] == "email"
    assert form.inputs["email"]["autocomplete"] == "username"
    assert form.inputs["password"]["type"] == "password"
    assert form.inputs["password"]["autocomplete"] == "current-password"
    assert "value" not in form.inputs["password"]
    assert form.inputs["remember"]["type"] == "checkbox"
    assert "checked" not in form.inputs["remember"]  # off by default
    assert form.inputs["remember"]["aria-describedby"] == "remember-help"
    assert 'id="remember-help"' in page.body
    assert {name: form.labels.get(name, "").strip() for name in ("email", "password", "remember")} == {
        "email": "E-mail",
        "password": "Password",
        "remember": "Remember my login so the connection can re-authenticate",
    }
    assert [(b["name"], b["value"]) for b in form.buttons] == [("action", "login"), ("action", "reset")]
    assert 'lang="en"' in page.body
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "form-action 'self' https://app.example.com;" in csp  # the redirect after the post
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert h.workly.calls.total() == 0


def test_wrong_password_reshows_the_form_and_keeps_the_session(harness: Harness) -> None:
    h = harness
    path = h.link("workly", KEY.connection_id, return_to=RETURN_BASE)
    wrong = login(h, path, password=WRONG_PASSWORD, remember=True)
    assert wrong.status == 401
    body = wrong.body
    assert "The e-mail or password is wrong" in body
    assert 'role="alert"' in body
    form = FormFields(body)
    assert form.inputs["email"]["value"] == WORKLY_EMAIL
    assert "checked" in form.inputs["remember"]  # the choice survives the retry
    assert WRONG_PASSWORD not in body
    assert h.connections.get(KEY) is None

    # The same link still works: the right password connects.
    done = login(h, path)
    assert done.status == 302
    assert done.location_query == {
        "status": "connected",
        "provider": "workly",
        "connection_id": KEY.connection_id,
    }
    assert h.workly.calls["token"] == 2


def test_success_stores_token_and_record_without_the_login(harness: Harness, table: DynamoTable) -> None:
    h = harness
    path = h.link("workly", KEY.connection_id, metadata={"team": "ops"})
    done = login(h, path)
    assert done.status == 200
    assert "Workly account" in done.body

    stored = h.tokens.get(KEY)
    assert stored.generation == 1
    assert stored.status is ConnectionStatus.ACTIVE
    assert stored.login is None  # remember was not ticked
    assert stored.metadata["team"] == "ops"
    assert stored.metadata["user_email"] == WORKLY_EMAIL  # Workly has no user info: the login names it
    assert stored.token.scopes == ("v1:list:employee", "v1:view:employee")
    connection = h.connections.get(KEY)
    assert connection is not None
    assert connection.status is ConnectionStatus.ACTIVE
    assert connection.next_refresh_at is not None
    assert connection.next_refresh_at < stored.token.expires_at
    (event,) = h.events.events
    assert event.type is EventType.CONNECTION_CREATED

    # The session is spent once the connection is saved.
    again = login(h, path)
    assert again.status == 404
    assert h.get(path).status == 404


def test_remember_keeps_the_login_only_in_the_secret(harness: Harness, table: DynamoTable) -> None:
    h = harness
    login(h, h.link("workly", KEY.connection_id), remember=True)
    stored = h.tokens.get(KEY)
    assert stored.login is not None
    assert (stored.login.username, stored.login.password) == (WORKLY_EMAIL, WORKLY_PASSWORD)
    assert WORKLY_PASSWORD not in repr(stored)
    items = table.client.scan(TableName=table.name)["Items"]
    assert items, "the connection item must exist"
    assert WORKLY_PASSWORD not in json.dumps(items)
    assert stored.token.access_token not in json.dumps(items)


def test_forgot_password_asks_workly_and_shows_its_message(harness: Harness) -> None:
    h = harness
    path = h.link("workly", KEY.connection_id)
    answer = h.post_form(path, {"action": "reset", "email": WORKLY_EMAIL, "password": ""})
    assert answer.status == 200
    assert "Инструкция по восстановлению пароля" in answer.body
    assert 'role="status"' in answer.body
    assert [r.email for r in h.workly.password_resets] == [WORKLY_EMAIL]
    assert FormFields(answer.body).inputs["email"]["value"] == WORKLY_EMAIL
    # Asking for a reset neither connects nor spends the link.
    assert h.connections.get(KEY) is None
    assert h.get(path).status == 200


def test_forgot_password_without_an_email_asks_for_one(harness: Harness) -> None:
    h = harness
    answer = h.post_form(h.link("workly", KEY.connection_id), {"action": "reset", "email": ""})
    assert answer.status == 400
    assert "Enter your e-mail address first" in answer.body
    assert h.workly.password_resets == []


def test_a_reset_message_with_html_is_escaped(harness: Harness) -> None:
    h = harness
    evil = '<img src=x onerror="alert(1)">Проверьте почту'
    h.workly.faults.error_200(endpoint="password_reset", body=json.dumps({"message": evil}))
    answer = h.post_form(h.link("workly", KEY.connection_id), {"action": "reset", "email": WORKLY_EMAIL})
    assert answer.status == 200
    assert "<img" not in answer.body
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;Проверьте почту" in answer.body


@pytest.mark.parametrize(
    "email",
    ['"><script>alert(1)</script>@example.com', "ann@example.com'><svg onload=alert(1)>", "<b>bold</b>"],
)
def test_an_echoed_email_is_escaped(harness: Harness, email: str) -> None:
    h = harness
    answer = h.post_form(h.link("workly", KEY.connection_id), {"email": email, "password": WRONG_PASSWORD})
    assert answer.status in (400, 401)
    assert "<script" not in answer.body
    assert "<svg" not in answer.body
    assert "<b>bold" not in answer.body
    assert FormFields(answer.body).inputs["email"]["value"] == email


def test_missing_fields_reshow_the_form(harness: Harness) -> None:
    h = harness
    path = h.link("workly", KEY.connection_id)
    no_password = h.post_form(path, {"email": WORKLY_EMAIL})
    assert no_password.status == 400
    assert "Enter your password" in no_password.body
    no_email = h.post_form(path, {"password": WORKLY_PASSWORD})
    assert no_email.status == 400
    assert h.workly.calls["token"] == 0


def test_cross_site_posts_are_refused(harness: Harness) -> None:
    h = harness
    path = h.link("workly", KEY.connection_id)
    fields = {"email": WORKLY_EMAIL, "password": WORKLY_PASSWORD}
    foreign = h.post_form(path, fields, headers={"origin": "https://evil.example"})
    assert foreign.status == 403
    cross_site = h.post_form(path, fields, headers={"sec-fetch-site": "cross-site"})
    assert cross_site.status == 403
    assert h.workly.calls["token"] == 0
    assert h.connections.get(KEY) is None
    # Our own origin (and "null", which no-referrer makes browsers send) are fine.
    same = h.post_form(
        path, fields, headers={"origin": "https://connect.example.test", "sec-fetch-site": "same-origin"}
    )
    assert same.status == 200


def test_a_non_form_body_is_refused(harness: Harness) -> None:
    h = harness
    answer = h.post_form(
        h.link("workly", KEY.connection_id),
        {"email": WORKLY_EMAIL, "password": WORKLY_PASSWORD},
        headers={"content-type": "application/json"},
    )
    assert answer.status == 400
    assert h.workly.calls["token"] == 0


def test_posting_a_password_to_an_oauth_session_is_refused(harness: Harness) -> None:
    h = harness
    answer = h.post_form(h.link("worksection", "ws-1"), {"email": WORKLY_EMAIL, "password": WORKLY_PASSWORD})
    assert answer.status == 400
    assert h.workly.calls["token"] == 0 and h.worksection.calls.total() == 0


def test_an_unknown_session_is_404(harness: Harness) -> None:
    h = harness
    assert h.get("/connect/" + "A" * 43).status == 404
    assert h.post_form("/connect/" + "A" * 43, {"email": WORKLY_EMAIL, "password": "x" * 10}).status == 404
    answer = h.get("/connect/%3Cscript%3E")
    assert answer.status == 404
    assert "<script>" not in answer.body


def test_workly_unavailable_reshows_the_form(harness: Harness) -> None:
    h = harness
    path = h.link("workly", KEY.connection_id)
    h.workly.faults.fail(503, endpoint="token")
    answer = login(h, path)
    assert answer.status == 503
    assert "Workly is not answering right now" in answer.body
    assert "JSON" not in answer.body and "HTTP 503" not in answer.body  # the page's own words, not the parser's
    assert h.connections.get(KEY) is None
    assert login(h, path).status == 200


def test_reconnecting_bumps_the_generation_and_reports_reauthorized(harness: Harness) -> None:
    h = harness
    login(h, h.link("workly", KEY.connection_id), remember=True)
    owner = "sweeper"
    assert h.connections.acquire_lease(KEY, owner, 60) is not None
    h.connections.mark_needs_reauth(KEY, owner, ConnectionNotFound("grant gone"))
    done = login(h, h.link("workly", KEY.connection_id))
    assert done.status == 200
    assert "reconnected" in done.body
    stored = h.tokens.get(KEY)
    assert stored.generation == 2
    assert stored.login is None  # this time the user did not tick remember
    connection = h.connections.get(KEY)
    assert connection is not None
    assert (connection.status, connection.generation) == (ConnectionStatus.ACTIVE, 2)
    assert [e.type for e in h.events.events] == [EventType.CONNECTION_CREATED, EventType.CONNECTION_REAUTHORIZED]


def test_no_page_redirect_or_log_line_holds_a_password_or_token(harness: Harness) -> None:
    h = harness
    path = h.link("workly", KEY.connection_id, return_to=RETURN_BASE)
    login(h, path, password=WRONG_PASSWORD)
    login(h, path, remember=True)
    login(h, path)  # after success: 404
    stored = h.tokens.get(KEY)
    secrets_used = [WORKLY_PASSWORD, WRONG_PASSWORD, stored.token.access_token, stored.token.refresh_token or ""]
    for answer in h.answers:
        text = answer.body + " ".join(answer.headers.values())
        assert not [s for s in secrets_used if s in text]
    lines = h.log_lines()
    assert any("wrong login" in line for line in lines)
    assert not [line for line in lines for s in secrets_used if s in line]
