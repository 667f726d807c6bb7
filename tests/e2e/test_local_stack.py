"""The real local stack, end to end, over HTTP only.

`python -m infra.localstack` runs as a subprocess with short sandbox token lifetimes and a
1-second sweep. A "browser" (requests) connects a Worksection account through the sandbox's
authorize form and a Workly account through tokenbroker's login form; a "service" vends tokens
with SigV4, calls the sandbox APIs with them, watches the scheduled refresh rotate them, and
disconnects. Everything is on 127.0.0.1 and bounded in time.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from infra.sandboxes import parse_forms, submit_consent
from tests.e2e.signing import signed_headers
from tests.e2e.stackproc import StackProcess, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ACCESS_TTL = 8  # seconds: refresh-ahead then refreshes each token about every 4 s
RETURN_PREFIX = "http://127.0.0.1:9/app"
WAIT = 30.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    args = ["--sweep-interval", "1", "--access-ttl", str(ACCESS_TTL), "--allowed-return-urls", RETURN_PREFIX]
    with running_stack(args, tmp_path_factory.mktemp("local-stack")) as running:
        yield running


class Service:
    """A backend calling the IAM routes with SigV4-signed requests (the local credentials)."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.http = requests.Session()

    def call(self, method: str, path: str, json_body: str | None = None) -> requests.Response:
        url = self.api_url + path
        body = (json_body or "").encode()
        headers = {"Content-Type": "application/json"} if json_body is not None else {}
        signed = signed_headers(method, url, body=body, headers=headers)
        return self.http.request(method, url, data=body or None, headers=signed, timeout=15)

    def ok(self, method: str, path: str, json_body: str | None = None, status: int = 200) -> Any:
        response = self.call(method, path, json_body)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def vend(self, provider: str, connection_id: str) -> dict[str, Any]:
        # min_ttl=0: only the scheduled refresh may rotate the token in these tests.
        token: dict[str, Any] = self.ok("GET", f"/tokens/{provider}/{connection_id}?min_ttl=0")
        return token

    def generation(self, provider: str, connection_id: str) -> int:
        return int(self.ok("GET", f"/connections/{provider}/{connection_id}")["generation"])

    def connect_link(self, provider: str, connection_id: str, return_to: str | None = None) -> str:
        extra = f', "return_to": "{return_to}"' if return_to else ""
        body = f'{{"provider": "{provider}", "connection_id": "{connection_id}"{extra}}}'
        link = self.ok("POST", "/connect-sessions", body, status=201)
        assert link["expires_at"] > time.time()
        return str(link["connect_url"])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def worksection_api(stack: StackProcess, token: dict[str, Any]) -> requests.Response:
    account_url = token["metadata"]["account_url"]
    assert account_url == stack.info["sandboxes"]["worksection"]["url"]  # the sandbox stands in for the account
    return requests.get(
        f"{account_url}/api/oauth2",
        params={"action": "get_projects"},
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=5,
    )


def workly_api(stack: StackProcess, token: dict[str, Any]) -> requests.Response:
    base = stack.info["sandboxes"]["workly"]["base_url"]
    return requests.get(f"{base}/employees", headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=5)


def accepted_with_a_fresh_token(
    service: Service, provider: str, connection_id: str, call: Callable[[dict[str, Any]], requests.Response]
) -> dict[str, Any]:
    """Vend and use a token; a refresh may land in between (every few seconds here), so retry a little."""
    for _ in range(5):
        token = service.vend(provider, connection_id)
        if call(token).status_code == 200:
            return token
        assert service.generation(provider, connection_id) > token["generation"], "rejected but not rotated"
    raise AssertionError(f"{provider}: no vended token was accepted by the sandbox API")


def connect_both(stack: StackProcess, service: Service, secrets: list[str]) -> dict[str, str]:
    """Both connect flows through a requests "browser"; answers provider -> connection id."""
    email, password = stack.info["demo_users"][0]["email"], stack.info["demo_users"][0]["password"]
    worksection = stack.info["sandboxes"]["worksection"]["url"]

    # Worksection: tokenbroker -> the sandbox's authorize form -> callback -> return_to.
    browser = requests.Session()
    link = service.connect_link("worksection", "ws-e2e", return_to=f"{RETURN_PREFIX}/done")
    secrets.append(urlsplit(link).path.rsplit("/", 1)[1])
    first = browser.get(link, allow_redirects=False, timeout=10)
    assert first.status_code == 302, first.text
    authorize = first.headers["Location"]
    assert authorize.startswith(f"{worksection}/oauth2/authorize?")
    query = parse_qs(urlsplit(authorize).query)
    assert query["redirect_uri"] == [f"{stack.api_url}/callback/worksection"]
    callback = submit_consent(browser, authorize, email=email, password=password, account="demo")
    assert callback.startswith(f"{stack.api_url}/callback/worksection?")
    secrets.extend(parse_qs(urlsplit(callback).query)["code"])
    done = browser.get(callback, allow_redirects=False, timeout=10)
    assert done.status_code in (302, 303), done.text
    assert done.headers["Location"].startswith(f"{RETURN_PREFIX}/done?")
    assert parse_qs(urlsplit(done.headers["Location"]).query)["status"] == ["connected"]

    # Workly: tokenbroker's own login form -> password grant -> success page.
    browser = requests.Session()
    link = service.connect_link("workly", "wl-e2e")
    secrets.append(urlsplit(link).path.rsplit("/", 1)[1])
    page = browser.get(link, timeout=10)
    assert page.status_code == 200
    forms, _ = parse_forms(page.text)
    assert {"email", "password"} <= set(forms[0].inputs)
    answer = browser.post(
        link, data={"email": email, "password": password, "action": "login"}, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 200, answer.text
    assert "Your Workly account is connected" in answer.text
    return {"worksection": "ws-e2e", "workly": "wl-e2e"}


def check_tokens_work(stack: StackProcess, service: Service, secrets: list[str]) -> None:
    ws = accepted_with_a_fresh_token(service, "worksection", "ws-e2e", lambda t: worksection_api(stack, t))
    wl = accepted_with_a_fresh_token(service, "workly", "wl-e2e", lambda t: workly_api(stack, t))
    for token in (ws, wl):
        assert token["token_type"].lower() == "bearer"
        assert 0 < token["expires_in"] <= ACCESS_TTL
        assert "refresh_token" not in token
        secrets.append(token["access_token"])
    info = service.ok("GET", "/connections/worksection/ws-e2e")
    assert info["status"] == "active"
    assert "access_token" not in info and "refresh_token" not in info
    listed = service.ok("GET", "/connections?provider=workly")
    assert "wl-e2e" in [c["connection_id"] for c in listed["connections"]]


def check_scheduled_rotation(
    service: Service,
    provider: str,
    connection_id: str,
    call: Callable[[dict[str, Any]], requests.Response],
    secrets: list[str],
) -> None:
    old = service.vend(provider, connection_id)
    secrets.append(old["access_token"])
    # No vend asks for a refresh (min_ttl=0): only the sweep -> queue -> worker path can do this.
    wait_for(lambda: service.generation(provider, connection_id) > old["generation"], f"{provider} refresh")
    # Worksection kills the old token at rotation; Workly's dies at expiry. Either way it stops working.
    wait_for(lambda: call(old).status_code == 401, f"the old {provider} token to be rejected", timeout=ACCESS_TTL + 5)
    new = accepted_with_a_fresh_token(service, provider, connection_id, call)
    assert new["generation"] > old["generation"]
    assert new["access_token"] != old["access_token"]
    secrets.append(new["access_token"])


def check_cli_and_printed_curl(stack: StackProcess) -> None:
    cli = Path(sys.executable).with_name("tokenbroker")
    done = subprocess.run(
        [str(cli), "--api-url", stack.api_url, "token", "workly", "wl-e2e", "--min-ttl", "0", "--token-only"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"\S{20,}\n", done.stdout)
    # Step 1 of the banner, exactly as printed (the continuation line joined back).
    banner = "".join(stack.stdout)
    command = re.search(r"^\s+(curl .*connect-sessions)$", banner.replace("\\\n", ""), re.MULTILINE)
    assert command is not None, banner
    printed = subprocess.run(["bash", "-c", command.group(1)], capture_output=True, text=True, timeout=30, check=True)
    assert '"connect_url"' in printed.stdout, printed.stdout + printed.stderr


def check_refusals(stack: StackProcess) -> None:
    refused = requests.get(f"{stack.api_url}/tokens/workly/wl-e2e", timeout=5)
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    unknown = requests.get(f"{stack.api_url}/connect/no-such-session", timeout=5)
    assert unknown.status_code in (400, 404)
    assert unknown.headers["Content-Type"].startswith("text/html")


def disconnect(service: Service, connected: dict[str, str]) -> None:
    for provider, connection_id in connected.items():
        response = service.call("DELETE", f"/connections/{provider}/{connection_id}")
        assert response.status_code in (200, 204), response.text
        assert service.call("GET", f"/tokens/{provider}/{connection_id}").status_code == 404
        gone = service.call("GET", f"/connections/{provider}/{connection_id}")
        assert gone.status_code == 404
        assert gone.json()["error"] == "not_found"


def test_connect_vend_refresh_disconnect(stack: StackProcess) -> None:
    """One story, in order, against one stack (one test, so xdist never splits it)."""
    service = Service(stack.api_url)
    secrets: list[str] = []
    connected = connect_both(stack, service, secrets)
    check_tokens_work(stack, service, secrets)
    check_scheduled_rotation(service, "worksection", "ws-e2e", lambda t: worksection_api(stack, t), secrets)
    check_scheduled_rotation(service, "workly", "wl-e2e", lambda t: workly_api(stack, t), secrets)
    check_cli_and_printed_curl(stack)
    check_refusals(stack)
    disconnect(service, connected)
    # Nothing secret ever reached the console: tokens, OAuth codes, connect-session ids.
    output = stack.output()
    leaked = [value[:6] + "..." for value in secrets if value and value in output]
    assert not leaked, leaked
