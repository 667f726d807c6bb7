"""`make e2e`: a real headless Chromium clicks through both connect flows on the local stack.

Run with ``pytest tests/e2e/browser/browser_flows.py`` (the file name keeps it out of the default
``pytest`` run: it needs Playwright and Debian's ``chromium``; no browser is downloaded).
Playwright drives /usr/bin/chromium through ``executable_path`` with a fresh profile directory.

What a person sees is checked the way a person (or a screen reader) finds it: by headings,
labels, button names and alert roles, not by CSS selectors. No page may log a console error
(a Content-Security-Policy violation shows up there).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, expect, sync_playwright

from tests.e2e.signing import signed_headers
from tests.e2e.stackproc import StackProcess, running_stack

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
]
STEP_TIMEOUT_MS = 15_000


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
    args = ["--sweep-interval", "2", "--allowed-return-urls", app_url]
    with running_stack(args, tmp_path_factory.mktemp("browser-stack")) as running:
        yield running


@pytest.fixture
def context(tmp_path: Path) -> Iterator[BrowserContext]:
    with sync_playwright() as playwright:
        # A persistent context is how Playwright takes a fresh --user-data-dir.
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            timeout=30_000,
        )
        browser.set_default_timeout(STEP_TIMEOUT_MS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    page = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        url = message.location.get("url", "")
        # Chromium asks every origin for /favicon.ico on its own, and reports a page served with an
        # error status (a 403 "access denied" page) as a failed load; the tests check those statuses.
        if message.type == "error" and not url.endswith("/favicon.ico") and url != page.url:
            errors.append(f"{message.text} ({url.split('?', 1)[0]})")

    page.on("console", on_console)
    yield page
    assert errors == [], errors


def signed(stack: StackProcess, method: str, path: str, body: str | None = None) -> requests.Response:
    url = stack.api_url + path
    data = (body or "").encode()
    headers = signed_headers(method, url, body=data, headers={"Content-Type": "application/json"} if body else None)
    return requests.request(method, url, data=data or None, headers=headers, timeout=15)


def connect_link(stack: StackProcess, provider: str, connection_id: str, return_to: str | None = None) -> str:
    extra = f', "return_to": "{return_to}"' if return_to else ""
    answer = signed(
        stack, "POST", "/connect-sessions", f'{{"provider": "{provider}", "connection_id": "{connection_id}"{extra}}}'
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["connect_url"])


def expect_accessible_basics(page: Page) -> None:
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_count(1)
    assert page.title()


def expect_no_sideways_scroll_on_a_phone(page: Page) -> None:
    """A 390 px wide phone (iPhone 12-15) shows the page without horizontal scrolling."""
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a 390px screen"


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
    token = signed(stack, "GET", "/tokens/worksection/browser-ws?min_ttl=0")
    assert token.status_code == 200, token.text
    assert token.json()["metadata"]["account_url"] == stack.info["sandboxes"]["worksection"]["url"]


def test_denying_consent_shows_a_page_that_says_so(stack: StackProcess, page: Page) -> None:
    demo = stack.info["demo_users"][0]
    page.goto(connect_link(stack, "worksection", "browser-denied"))
    page.get_by_label("E-mail").fill(demo["email"])
    page.get_by_label("Password").fill(demo["password"])
    page.get_by_role("button", name="Deny").click()
    page.wait_for_url(f"{stack.api_url}/callback/worksection?**")
    expect_accessible_basics(page)
    expect(page.get_by_role("heading", level=1)).not_to_contain_text("is connected")
    assert signed(stack, "GET", "/connections/worksection/browser-denied").status_code == 404


def test_workly_in_a_browser(stack: StackProcess, page: Page) -> None:
    demo = stack.info["demo_users"][0]
    link = connect_link(stack, "workly", "browser-wl")
    page.goto(link)
    # tokenbroker's own login form for a password-grant provider.
    expect(page.get_by_role("heading", level=1)).to_have_text("Example App wants to connect your Workly account")
    expect_accessible_basics(page)
    expect_no_sideways_scroll_on_a_phone(page)
    page.get_by_label("E-mail").fill(demo["email"])
    page.get_by_label("Password").fill("wrong-password-1")
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_text("The e-mail or password is wrong")).to_be_visible()
    # The e-mail is kept, the password is not.
    expect(page.get_by_label("E-mail")).to_have_value(demo["email"])
    expect(page.get_by_label("Password")).to_have_value("")
    page.get_by_label("Password").fill(demo["password"])
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your Workly account is connected to Example App")
    expect_accessible_basics(page)
    assert demo["password"] not in page.content()
    token = signed(stack, "GET", "/tokens/workly/browser-wl?min_ttl=0")
    assert token.status_code == 200, token.text
    # A used connect link cannot be replayed.
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).not_to_have_text("Example App wants to connect your Workly account")
