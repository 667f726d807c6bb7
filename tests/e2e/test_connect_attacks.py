"""The attacks of issue 13, end to end over HTTP on the real local stack, one browser per person.

`python -m infra.localstack` runs as a subprocess (moto server, both sandboxes, the gateway that
invokes the real handlers). Each "browser" is a requests session with its own cookie jar; the
application's backend calls the IAM routes with SigV4. Every attack must fail and leave nothing
behind, and the honest path next to it must still work. Everything is on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from infra.sandboxes import submit_consent
from tests.e2e.stackproc import StackProcess, running_stack
from tests.e2e.test_local_stack import Service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RETURN_PREFIX = "http://127.0.0.1:9/app"
ALICE = {"email": "alice@example.com", "password": "alice-password-1"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    args = ["--sweep-interval", "1", "--allowed-return-urls", RETURN_PREFIX]
    with running_stack(args, tmp_path_factory.mktemp("attacks")) as running:
        ws = running.info["sandboxes"]["worksection"]["url"]
        added = requests.post(f"{ws}/_sandbox/users", json={**ALICE, "accounts": ["alice-co"]}, timeout=5)
        assert added.status_code == 201, added.text
        yield running


@pytest.fixture(scope="module")
def service(stack: StackProcess) -> Service:
    return Service(stack.api_url)


def demo(stack: StackProcess) -> dict[str, str]:
    user: dict[str, str] = stack.info["demo_users"][0]
    return user


def sandbox_calls(stack: StackProcess, provider: str, endpoint: str) -> int:
    url = stack.info["sandboxes"][provider]["url"]
    return int(requests.get(f"{url}/_sandbox/calls", timeout=5).json()["calls"].get(endpoint, 0))


def link(service: Service, provider: str, connection_id: str, **options: Any) -> dict[str, Any]:
    body = json.dumps({"provider": provider, "connection_id": connection_id, **options})
    answer: dict[str, Any] = service.ok("POST", "/connect-sessions", body, status=201)
    return answer


def status_of(service: Service, provider: str, connection_id: str) -> int | str:
    response = service.call("GET", f"/connections/{provider}/{connection_id}")
    return response.json()["status"] if response.status_code == 200 else response.status_code


def approve(browser: requests.Session, connect_url: str, user: dict[str, str], account: str) -> str:
    """Open the link in ``browser`` and approve at the Worksection sandbox: the callback URL."""
    opened = browser.get(connect_url, allow_redirects=False, timeout=10)
    assert opened.status_code == 302, opened.text
    return submit_consent(
        browser, opened.headers["Location"], email=user["email"], password=user["password"], account=account
    )


def test_a_forwarded_authorize_url_lands_nothing(stack: StackProcess, service: Service) -> None:
    mallory, alice = requests.Session(), requests.Session()
    connect_url = link(service, "worksection", "atk-forward")["connect_url"]
    authorize = mallory.get(connect_url, allow_redirects=False, timeout=10).headers["Location"]
    exchanges = sandbox_calls(stack, "worksection", "token")
    callback = submit_consent(alice, authorize, email=ALICE["email"], password=ALICE["password"], account="alice-co")
    refused = alice.get(callback, allow_redirects=False, timeout=10)
    assert refused.status_code == 400
    assert "started in another browser" in refused.text
    assert sandbox_calls(stack, "worksection", "token") == exchanges  # the code was never exchanged
    assert status_of(service, "worksection", "atk-forward") == 404
    replay = mallory.get(callback, allow_redirects=False, timeout=10)  # the state is burned
    assert replay.status_code == 400
    assert status_of(service, "worksection", "atk-forward") == 404


def test_a_forwarded_link_in_confirm_mode_is_discarded(stack: StackProcess, service: Service) -> None:
    session = link(
        service,
        "worksection",
        "atk-confirm",
        return_to=f"{RETURN_PREFIX}/done",
        end_user_id="mallory",
        confirm=True,
    )
    alice = requests.Session()  # Mallory forwarded his link; Alice completes it in her own browser
    done = alice.get(approve(alice, session["connect_url"], ALICE, "alice-co"), allow_redirects=False, timeout=10)
    assert done.status_code == 302
    back = parse_qs(urlsplit(done.headers["Location"]).query)
    assert back["status"] == ["pending_confirmation"]
    assert back["connect_session"] == [session["session_id"]]
    assert status_of(service, "worksection", "atk-confirm") == "pending"
    pending = service.call("GET", "/tokens/worksection/atk-confirm")
    assert (pending.status_code, pending.json()["error"]) == (409, "pending_confirmation")
    # The application knows Alice is signed in where the browser landed: it confirms as Alice.
    mismatch = service.call(
        "POST", f"/connect-sessions/{session['session_id']}/confirm", json.dumps({"end_user_id": "alice"})
    )
    assert (mismatch.status_code, mismatch.json()["error"]) == (403, "end_user_mismatch")
    assert status_of(service, "worksection", "atk-confirm") == 404
    assert service.call("GET", "/tokens/worksection/atk-confirm").status_code == 404


def test_confirm_mode_connects_and_reconnects_keeping_the_old_grant_until_confirmed(
    stack: StackProcess, service: Service
) -> None:
    user = demo(stack)
    tokens = []
    for round_ in (1, 2):
        session = link(service, "worksection", "cf-ann", end_user_id="ann", confirm=True)
        browser = requests.Session()
        page = browser.get(approve(browser, session["connect_url"], user, "demo"), timeout=10)
        assert page.status_code == 200
        assert "Almost done" in page.text
        if round_ == 2:  # a re-connect: the old grant keeps serving until the application confirms
            assert service.vend("worksection", "cf-ann")["access_token"] == tokens[0]
            assert status_of(service, "worksection", "cf-ann") == "active"
        confirmed = service.ok(
            "POST", f"/connect-sessions/{session['session_id']}/confirm", json.dumps({"end_user_id": "ann"})
        )
        assert (confirmed["status"], confirmed["generation"]) == ("active", round_)
        token = service.vend("worksection", "cf-ann")
        assert token["generation"] == round_
        tokens.append(token["access_token"])
    assert tokens[0] != tokens[1]


def test_an_injected_authorization_code_is_refused_by_pkce(stack: StackProcess, service: Service) -> None:
    victim, attacker = requests.Session(), requests.Session()
    victim_link = link(service, "worksection", "victim-ws")["connect_url"]
    victim_callback = approve(victim, victim_link, ALICE, "alice-co")
    stolen_code = parse_qs(urlsplit(victim_callback).query)["code"][0]  # e.g. leaked from a log or a Referer
    attacker_link = link(service, "worksection", "attacker-ws")["connect_url"]
    opened = attacker.get(attacker_link, allow_redirects=False, timeout=10)
    attacker_state = parse_qs(urlsplit(opened.headers["Location"]).query)["state"][0]
    injected = attacker.get(
        f"{stack.api_url}/callback/worksection?" + urlencode({"code": stolen_code, "state": attacker_state}),
        allow_redirects=False,
        timeout=10,
    )
    assert injected.status_code >= 400
    assert status_of(service, "worksection", "attacker-ws") == 404  # Alice's account is not in his connection
    done = victim.get(victim_callback, allow_redirects=False, timeout=10)
    assert done.status_code == 200, done.text  # and her own flow still completes
    assert status_of(service, "worksection", "victim-ws") == "active"


def test_guessing_the_password_uses_the_link_up(stack: StackProcess, service: Service) -> None:
    user = demo(stack)
    connect_url = link(service, "workly", "atk-guess")["connect_url"]
    browser = requests.Session()
    assert browser.get(connect_url, timeout=10).status_code == 200
    before = sandbox_calls(stack, "workly", "token")
    statuses = [
        browser.post(
            connect_url, data={"action": "login", "email": user["email"], "password": f"guess-{i:03d}-x"}, timeout=10
        ).status_code
        for i in range(5)
    ]
    assert statuses == [401, 401, 401, 401, 429]
    right = browser.post(
        connect_url, data={"action": "login", "email": user["email"], "password": user["password"]}, timeout=10
    )
    assert right.status_code == 429
    assert "used up" in right.text
    assert sandbox_calls(stack, "workly", "token") - before == 5
    assert status_of(service, "workly", "atk-guess") == 404


def test_reset_requests_do_not_flood_the_provider(stack: StackProcess, service: Service) -> None:
    workly = stack.info["sandboxes"]["workly"]["url"]
    connect_url = link(service, "workly", "atk-reset")["connect_url"]
    browser = requests.Session()
    browser.get(connect_url, timeout=10)
    before = len(requests.get(f"{workly}/_sandbox/password-resets", timeout=5).json())
    statuses = [
        browser.post(connect_url, data={"action": "reset", "email": demo(stack)["email"]}, timeout=10).status_code
        for _ in range(20)
    ]
    assert statuses.count(200) == 1 and statuses.count(429) == 19
    assert len(requests.get(f"{workly}/_sandbox/password-resets", timeout=5).json()) - before == 1


def test_a_link_preview_does_not_burn_the_link(stack: StackProcess, service: Service) -> None:
    connect_url = link(service, "worksection", "preview-ok")["connect_url"]
    preview = requests.get(
        connect_url, headers={"User-Agent": "Slackbot-LinkExpanding 1.0"}, allow_redirects=False, timeout=10
    )
    assert preview.status_code == 302  # the previewer only sees a redirect to the provider
    browser = requests.Session()
    done = browser.get(approve(browser, connect_url, demo(stack), "demo"), allow_redirects=False, timeout=10)
    assert done.status_code == 200, done.text
    assert status_of(service, "worksection", "preview-ok") == "active"
