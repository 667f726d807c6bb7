"""`make e2e`: a real headless Chromium clicks through both connect flows on the local stack.

Run with ``pytest tests/e2e/browser/browser_flows.py`` (the file name keeps it out of the default
``pytest`` run: it needs Playwright and Debian's ``chromium``; no browser is downloaded).
Playwright drives /usr/bin/chromium through ``executable_path``; every test gets fresh browser
contexts (separate cookie jars, as two browsers would have).

What a person sees is checked the way a person (or a screen reader) finds it: by headings,
labels, button names and alert roles, not by CSS selectors. No page may log a console error
(a Content-Security-Policy violation shows up there).

The stack runs with ``--app-name "Acme CRM"``, and every page an end user can see is saved as a
screenshot, desktop (1280x800) and phone (390x844, a mobile viewport), to ``docs/connect-pages/``
(overwritten by each run; docs/connect.md links them). The phone copy renders the very answer the
desktop page got (status, headers with the CSP, body) in a mobile context, and must not scroll
sideways.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Response,
    Route,
    expect,
    sync_playwright,
)

from tests.e2e.signing import signed_headers
from tests.e2e.stackproc import REPO, StackProcess, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = os.environ.get("TOKENBROKER_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--font-render-hinting=none",
]
STEP_TIMEOUT_MS = 15_000
APP = "Acme CRM"
END_USER = "acme-user-7"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
GALLERY = REPO / "docs" / "connect-pages"
# Headers of the real answer that must not be replayed into the phone copy.
_NOT_REPLAYED = {"content-length", "set-cookie", "transfer-encoding", "connection", "keep-alive"}


class _AppPage(BaseHTTPRequestHandler):
    """The application a connect flow returns to."""

    def do_GET(self) -> None:
        body = b'<!doctype html><html lang="en"><title>Back in the app</title><h1>Back in the app</h1></html>'
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AppPage)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/app"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, app_url: str) -> Iterator[StackProcess]:
    args = ["--sweep-interval", "2", "--allowed-return-urls", app_url, "--app-name", APP]
    with running_stack(args, tmp_path_factory.mktemp("browser-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # launch() gives Chromium a fresh temporary --user-data-dir; each context is its own cookie jar.
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000)
    try:
        yield chromium
    finally:
        chromium.close()


def _new_context(browser: Browser, **options: Any) -> BrowserContext:
    context = browser.new_context(**options)
    context.set_default_timeout(STEP_TIMEOUT_MS)
    context.set_default_navigation_timeout(STEP_TIMEOUT_MS)
    return context


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = _new_context(browser, viewport=DESKTOP)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def other_context(browser: Browser) -> Iterator[BrowserContext]:
    """Another person's browser: nothing shared with ``context``."""
    context = _new_context(browser, viewport=DESKTOP)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def phone(browser: Browser) -> Iterator[BrowserContext]:
    context = _new_context(browser, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=1)
    try:
        yield context
    finally:
        context.close()


@dataclass
class Watched:
    """A page with its console errors and the last document answer it showed."""

    page: Page
    errors: list[str] = field(default_factory=list)
    document: Response | None = None


def watch(page: Page) -> Watched:
    watched = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        url = message.location.get("url", "")
        # Chromium asks every origin for /favicon.ico on its own, and reports a page served with an
        # error status (a 403 "access denied" page) as a failed load; the tests check those statuses.
        if message.type == "error" and not url.endswith("/favicon.ico") and url != page.url:
            watched.errors.append(f"{message.text} ({url.split('?', 1)[0]})")

    def on_response(response: Response) -> None:
        request = response.request
        if request.is_navigation_request() and request.frame == page.main_frame and not 300 <= response.status < 400:
            watched.document = response

    page.on("console", on_console)
    page.on("response", on_response)
    return watched


@pytest.fixture
def watched(context: BrowserContext) -> Iterator[Watched]:
    watched = watch(context.new_page())
    yield watched
    assert watched.errors == [], watched.errors


@pytest.fixture
def page(watched: Watched) -> Page:
    return watched.page


Snap = Callable[..., None]


@pytest.fixture
def snap(watched: Watched, phone: BrowserContext) -> Snap:
    """Screenshot a page as it is now, on a desktop and on a phone, into docs/connect-pages/."""

    def take(name: str, on: Watched | None = None) -> None:
        GALLERY.mkdir(parents=True, exist_ok=True)
        shown = on or watched
        page = shown.page
        answer = shown.document
        assert answer is not None and answer.url == page.url, "no document answer to photograph"
        heading = page.get_by_role("heading", level=1).inner_text()
        page.screenshot(path=GALLERY / f"{name}-desktop.png", full_page=True, animations="disabled")
        # The same answer, rendered in a mobile context: a replay, so no flow step runs twice.
        status, headers, body = answer.status, answer.all_headers(), answer.body()
        replay = {k: v for k, v in headers.items() if k.lower() not in _NOT_REPLAYED}
        small = watch(phone.new_page())
        try:
            target = page.url
            small.page.route(
                lambda url: url == target,
                lambda route: route.fulfill(status=status, headers=replay, body=body),
            )
            small.page.goto(target)
            expect(small.page.get_by_role("heading", level=1)).to_have_text(heading)
            expect_no_sideways_scroll(small.page)
            small.page.screenshot(path=GALLERY / f"{name}-mobile.png", full_page=True, animations="disabled")
            assert small.errors == [], small.errors
        finally:
            small.page.close()

    return take


def signed(stack: StackProcess, method: str, path: str, body: dict[str, Any] | None = None) -> requests.Response:
    url = stack.api_url + path
    data = json.dumps(body).encode() if body is not None else b""
    headers = signed_headers(method, url, body=data, headers={"Content-Type": "application/json"} if data else None)
    return requests.request(method, url, data=data or None, headers=headers, timeout=15)


def new_link(stack: StackProcess, provider: str, connection_id: str, **options: Any) -> dict[str, Any]:
    """What the application's backend gets: {connect_url, expires_at, session_id}."""
    answer = signed(
        stack, "POST", "/connect-sessions", {"provider": provider, "connection_id": connection_id, **options}
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def connect_link(stack: StackProcess, provider: str, connection_id: str, return_to: str | None = None) -> str:
    options = {"return_to": return_to} if return_to else {}
    return str(new_link(stack, provider, connection_id, **options)["connect_url"])


def sandbox(stack: StackProcess, provider: str, method: str, action: str, body: Any = None) -> None:
    """The sandbox's /_sandbox control API (fault knobs)."""
    url = f"{stack.info['sandboxes'][provider]['url']}/_sandbox/{action}"
    answer = requests.request(method, url, json=body, timeout=10)
    assert answer.ok, answer.text


def expect_accessible_basics(page: Page) -> None:
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_count(1)
    assert page.title()


def expect_branded(page: Page, heading: str) -> None:
    """The page names the application: in its heading and above it (the brand line)."""
    expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    expect(page.get_by_role("main").get_by_text(APP, exact=True)).to_be_visible()
    expect_accessible_basics(page)


def expect_no_sideways_scroll(page: Page) -> None:
    """A 390 px wide phone (iPhone 12-15) shows the page without horizontal scrolling."""
    sizes = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    # On a mobile viewport a too-wide page also widens the layout viewport (the phone zooms out).
    assert sizes[0] <= sizes[1] == PHONE["width"], (
        f"the page is {sizes[0]}px wide ({sizes[1]}px laid out) on a 390px phone"
    )


def sign_in_at_worksection(page: Page, stack: StackProcess, decision: str = "Approve") -> None:
    """The Worksection sandbox's own sign-in and consent page."""
    demo = stack.info["demo_users"][0]
    expect(page).to_have_title("Sign in to Worksection")
    page.get_by_label("E-mail").fill(demo["email"])
    page.get_by_label("Password").fill(demo["password"])
    page.get_by_role("button", name=decision).click()


def vend(stack: StackProcess, provider: str, connection_id: str) -> requests.Response:
    return signed(stack, "GET", f"/tokens/{provider}/{connection_id}?min_ttl=0")


def confirm(stack: StackProcess, session_id: str, end_user_id: str = END_USER) -> requests.Response:
    return signed(stack, "POST", f"/connect-sessions/{session_id}/confirm", {"end_user_id": end_user_id})


# --- authorization code (Worksection) ---------------------------------------------------------------


def test_worksection_in_a_browser(stack: StackProcess, page: Page, app_url: str) -> None:
    demo = stack.info["demo_users"][0]
    page.goto(connect_link(stack, "worksection", "browser-ws", return_to=f"{app_url}/done"))
    # The provider's own sign-in page (the sandbox), reached through tokenbroker's redirect.
    expect(page).to_have_title("Sign in to Worksection")
    assert page.url.startswith(stack.info["sandboxes"]["worksection"]["url"] + "/oauth2/authorize")
    expect_accessible_basics(page)
    page.get_by_label("E-mail").fill(demo["email"])
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("alert")).to_be_visible()
    page.get_by_label("Password").fill(demo["password"])
    page.get_by_role("button", name="Approve").click()
    # Callback -> tokenbroker stores the token -> back in the application.
    page.wait_for_url(f"{app_url}/done?**")
    expect(page.get_by_role("heading", name="Back in the app")).to_be_visible()
    assert "status=connected" in page.url
    assert "code=" not in page.url and "state=" not in page.url
    token = vend(stack, "worksection", "browser-ws")
    assert token.status_code == 200, token.text
    assert token.json()["metadata"]["account_url"] == stack.info["sandboxes"]["worksection"]["url"]


def _connect_in_confirm_mode(stack: StackProcess, page: Page, app_url: str, connection_id: str) -> str:
    """One confirm-mode flow clicked through; returns the session id the app got back."""
    link = new_link(
        stack, "worksection", connection_id, return_to=f"{app_url}/integrations", end_user_id=END_USER, confirm=True
    )
    page.goto(link["connect_url"])
    sign_in_at_worksection(page, stack)
    page.wait_for_url(f"{app_url}/integrations?**")
    expect(page.get_by_role("heading", name="Back in the app")).to_be_visible()
    back = {name: values[0] for name, values in parse_qs(urlsplit(page.url).query).items()}
    assert back == {
        "status": "pending_confirmation",
        "connect_session": link["session_id"],
        "provider": "worksection",
        "connection_id": connection_id,
    }
    return str(link["session_id"])


def test_confirm_mode_and_reconnect_in_a_browser(stack: StackProcess, page: Page, app_url: str) -> None:
    first = _connect_in_confirm_mode(stack, page, app_url, "browser-confirm")
    pending = vend(stack, "worksection", "browser-confirm")
    assert pending.status_code == 409, pending.text
    assert pending.json()["error"] == "pending_confirmation"
    # The application's backend knows its signed-in user and confirms the session for them.
    confirmed = confirm(stack, first)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "active"
    old = vend(stack, "worksection", "browser-confirm")
    assert old.status_code == 200, old.text

    # A re-connect in confirm mode: the old token keeps vending until the new grant is confirmed.
    second = _connect_in_confirm_mode(stack, page, app_url, "browser-confirm")
    assert second != first
    meanwhile = vend(stack, "worksection", "browser-confirm")
    assert meanwhile.status_code == 200, meanwhile.text
    assert meanwhile.json()["access_token"] == old.json()["access_token"]
    assert confirm(stack, second).status_code == 200
    new = vend(stack, "worksection", "browser-confirm")
    assert new.status_code == 200, new.text
    assert new.json()["access_token"] != old.json()["access_token"]
    assert new.json()["generation"] > old.json()["generation"]


def test_denying_consent_shows_a_page_that_says_so(stack: StackProcess, page: Page, snap: Snap) -> None:
    page.goto(connect_link(stack, "worksection", "browser-denied"))
    sign_in_at_worksection(page, stack, decision="Deny")
    page.wait_for_url(f"{stack.api_url}/callback/worksection?**")
    expect_branded(page, "Access was not granted")
    expect(page.get_by_role("alert")).to_have_text(
        "The connection was declined at the provider, so nothing was stored."
    )
    expect(page.get_by_text(f"go back to {APP} and connect again")).to_be_visible()
    snap("access-denied")
    assert signed(stack, "GET", "/connections/worksection/browser-denied").status_code == 404


def test_a_forwarded_authorize_url_ends_in_the_other_browser(
    stack: StackProcess, page: Page, other_context: BrowserContext, snap: Snap, app_url: str
) -> None:
    """The attack: someone forwards the provider's authorize URL (not the connect link) to a victim,
    who approves in their own browser; the callback must refuse it and burn the state."""
    page.goto(connect_link(stack, "worksection", "browser-forwarded", return_to=f"{app_url}/done"))
    expect(page).to_have_title("Sign in to Worksection")
    authorize_url = page.url
    other = watch(other_context.new_page())
    other.page.goto(authorize_url)
    sign_in_at_worksection(other.page, stack)
    other.page.wait_for_url(f"{stack.api_url}/callback/worksection?**")
    expect_branded(other.page, "Finish in the browser where you started")
    expect(other.page.get_by_role("alert")).to_contain_text("started in another browser")
    expect(other.page.get_by_role("link", name=f"Back to {APP}")).to_have_attribute("href", f"{app_url}/done")
    snap("another-browser", other)
    assert other.errors == [], other.errors
    assert signed(stack, "GET", "/connections/worksection/browser-forwarded").status_code == 404
    # The state is burned: even the browser that started cannot use it any more.
    sign_in_at_worksection(page, stack)
    page.wait_for_url(f"{stack.api_url}/callback/worksection?**")
    expect_branded(page, "This sign-in cannot be completed")


def test_provider_unavailable_at_the_code_exchange(stack: StackProcess, page: Page, snap: Snap) -> None:
    page.goto(connect_link(stack, "worksection", "browser-unavailable"))
    # The sandbox answers its token endpoint with one 503 page (POSTs are never retried).
    sandbox(stack, "worksection", "POST", "faults", {"kind": "status", "status": 503, "endpoint": "token"})
    try:
        sign_in_at_worksection(page, stack)
        page.wait_for_url(f"{stack.api_url}/callback/worksection?**")
    finally:
        sandbox(stack, "worksection", "DELETE", "faults")
    expect_branded(page, "The provider is not answering")
    expect(page.get_by_text(f"Wait a minute, then go back to {APP} and connect again.")).to_be_visible()
    snap("provider-unavailable")
    assert signed(stack, "GET", "/connections/worksection/browser-unavailable").status_code == 404


# --- password form (Workly) ---------------------------------------------------------------------------

WORKLY_HEADING = f"{APP} wants to connect your Workly account"


def submit(page: Page, email: str, password: str) -> None:
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Connect").click()


def test_workly_in_a_browser(stack: StackProcess, page: Page, snap: Snap) -> None:
    demo = stack.info["demo_users"][0]
    link = connect_link(stack, "workly", "browser-wl")
    page.goto(link)
    # tokenbroker's own login form for a password-grant provider.
    expect_branded(page, WORKLY_HEADING)
    expect(page.get_by_text(f"{APP} never sees your password")).to_be_visible()
    snap("workly-login")

    submit(page, demo["email"], "wrong-password-1")
    expect(page.get_by_role("alert")).to_have_text("The e-mail or password is wrong. Check them and try again.")
    expect(page.get_by_text("This link allows 4 more sign-in attempts.")).to_be_visible()
    # The e-mail is kept, the password is not.
    expect(page.get_by_label("E-mail")).to_have_value(demo["email"])
    expect(page.get_by_label("Password")).to_have_value("")
    snap("workly-wrong-password")

    page.get_by_role("button", name="Forgot password?").click()
    expect(page.get_by_role("status")).to_contain_text(f"If {demo['email']} belongs to a Workly account")
    # Workly's own (Russian) words, quoted and attributed beside our English summary.
    expect(page.get_by_text("Workly\u2019s own message:")).to_be_visible()
    quoted = page.get_by_role("blockquote")
    expect(quoted).to_have_text("Инструкция по восстановлению пароля отправлена на ваш e-mail")
    expect(quoted).to_have_attribute("lang", "ru")
    snap("workly-reset")

    submit(page, demo["email"], demo["password"])
    expect_branded(page, f"Your Workly account is connected to {APP}")
    expect(page.get_by_role("status")).to_contain_text(demo["email"])
    assert demo["password"] not in page.content()
    snap("connected")
    token = vend(stack, "workly", "browser-wl")
    assert token.status_code == 200, token.text

    # A used connect link cannot be replayed.
    page.goto(link)
    expect_branded(page, "This connect link cannot be used")
    expect(page.get_by_role("alert")).to_have_text(
        "The link has expired, has already been used, or was copied incompletely."
    )
    assert watched_status(page) == 404
    snap("link-used")


def watched_status(page: Page) -> int:
    return int(page.evaluate("performance.getEntriesByType('navigation')[0].responseStatus"))


def test_five_wrong_passwords_use_the_link_up(stack: StackProcess, page: Page, snap: Snap) -> None:
    demo = stack.info["demo_users"][0]
    link = connect_link(stack, "workly", "browser-used-up")
    page.goto(link)
    for attempt in range(1, 5):
        submit(page, demo["email"], f"wrong-password-{attempt}")
        left = 5 - attempt
        expect(page.get_by_text(f"This link allows {left} more sign-in attempt")).to_be_visible()
    submit(page, demo["email"], "wrong-password-5")
    expect_branded(page, "This connect link is used up")
    assert watched_status(page) == 429
    expect(page.get_by_text(f"Go back to {APP} to get a new link.")).to_be_visible()
    snap("workly-used-up")
    # Opened again, the link says it is used up straight away: no form to type a password into.
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("This connect link is used up")
    expect(page.get_by_label("Password")).to_have_count(0)
    assert signed(stack, "GET", "/connections/workly/browser-used-up").status_code == 404


def test_workly_in_confirm_mode_without_return_to(stack: StackProcess, page: Page, snap: Snap) -> None:
    demo = stack.info["demo_users"][0]
    link = new_link(stack, "workly", "browser-wl-confirm", end_user_id=END_USER, confirm=True)
    page.goto(link["connect_url"])
    # Workly down for maintenance: the form again, with the reason, and the link still works.
    sandbox(stack, "workly", "POST", "knobs", {"maintenance": True})
    try:
        submit(page, demo["email"], demo["password"])
        expect(page.get_by_role("alert")).to_contain_text("Workly is not answering right now")
        expect(page.get_by_role("alert")).not_to_contain_text("JSON")  # no parser internals on a page
        assert watched_status(page) == 503
    finally:
        sandbox(stack, "workly", "POST", "knobs", {"maintenance": False})
    expect_branded(page, WORKLY_HEADING)
    snap("workly-unavailable")

    submit(page, demo["email"], demo["password"])
    expect_branded(page, f"Almost done: go back to {APP} to finish connecting")
    expect(page.get_by_role("status")).to_have_text(
        f"{APP} still has to confirm this connection before it can use your Workly account."
    )
    snap("almost-done")
    assert vend(stack, "workly", "browser-wl-confirm").json()["error"] == "pending_confirmation"
    assert confirm(stack, link["session_id"]).status_code == 200
    assert vend(stack, "workly", "browser-wl-confirm").status_code == 200


# --- a page nobody should reach -------------------------------------------------------------------------


def test_the_not_found_page(stack: StackProcess, page: Page, snap: Snap) -> None:
    """The connect function's own 404 page. Chromium cannot reach it on its own: it percent-encodes
    every character the function's router refuses, and API Gateway answers unknown paths itself.
    So the stack's real answer to a raw ``"`` in the path is fetched here and shown to Chromium,
    status, CSP and all."""
    host, port = urlsplit(stack.api_url).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", '/connect/not"a-link')
        raw = connection.getresponse()
        status, headers, body = raw.status, dict(raw.getheaders()), raw.read()
    finally:
        connection.close()
    assert status == 404
    url = f"{stack.api_url}/connect/not-a-link"
    replay = {k: v for k, v in headers.items() if k.lower() not in _NOT_REPLAYED}

    def answer(route: Route) -> None:
        route.fulfill(status=status, headers=replay, body=body)

    page.route(url, answer)
    page.goto(url)
    expect_branded(page, "Page not found")
    expect(page.get_by_text(f"Go back to {APP} and start connecting again.")).to_be_visible()
    snap("not-found")
