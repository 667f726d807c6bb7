"""Security, over HTTP against the local stack (python -m infra.localstack): nobody gets in who does
not belong, and nothing secret comes out.

- OAuth states: forged, replayed, expired, used on another provider's callback;
- return_to: every open-redirect trick we know is refused at session creation;
- script injection in every parameter a page or an error echoes;
- IAM routes: unsigned and wrongly signed requests are 403 and have no effect (infra/localstack/sigv4.py);
- oversized and malformed input on every route: 4xx, never 5xx, the right error shape;
- a scan of every answer and every log line of the stack for every secret seen.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
import requests
from tokenbroker.clock import ManualClock
from tokenbroker.keys import ConnectionKey
from tokenbroker.stores import OneTimeStore

from tests.e2e.signing import signed_headers
from tests.reliability.harness.localstack import DEMO_ACCOUNT, DEMO_EMAIL, DEMO_PASSWORD, RETURN_PREFIX, LiveStack
from tests.reliability.harness.results import NOTHING, RowLog

pytestmark = pytest.mark.e2e

PAYLOAD = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def generation(stack: LiveStack, provider: str, connection_id: str) -> int | None:
    answer = stack.signed("GET", f"/connections/{provider}/{connection_id}")
    return int(answer.json()["generation"]) if answer.status_code == 200 else None


def is_refusal_page(response: requests.Response, status: int) -> bool:
    return response.status_code == status and response.headers.get("Content-Type", "").startswith("text/html")


# --- OAuth states -----------------------------------------------------------------------------------


def test_forged_replayed_expired_and_cross_provider_states(stack: LiveStack, findings: RowLog) -> None:
    from infra.sandboxes import submit_consent  # noqa: PLC0415 - only this test drives the consent form

    # Forged: a real code from the provider, with a state we made up.
    forged_id = new_id("forged")
    callback, query = stack.authorize(forged_id)
    forged = stack.public("GET", f"/callback/worksection?{urlencode({**query, 'state': secrets.token_urlsafe(32)})}")
    assert is_refusal_page(forged, 400) and generation(stack, "worksection", forged_id) is None

    # Replayed: the callback works once; the same URL again changes nothing.
    replay_id = new_id("replay")
    callback, _ = stack.authorize(replay_id)
    assert stack.public("GET", callback).status_code in (200, 302)
    first_generation = generation(stack, "worksection", replay_id)
    again = stack.public("GET", callback)
    assert is_refusal_page(again, 400) and generation(stack, "worksection", replay_id) == first_generation == 1

    # Expired: a state that outlived its 10 minutes (written by the stack's own store, an hour ago).
    expired_id = new_id("expired")
    old = OneTimeStore(stack.table(), clock=ManualClock(time.time() - 3600))
    redirect_uri = f"{stack.url}/callback/worksection"
    state = old.create_state(ConnectionKey("worksection", expired_id), redirect_uri=redirect_uri).state
    sandbox = stack.info["sandboxes"]["worksection"]
    authorize = f"{sandbox['url']}/oauth2/authorize?" + urlencode(
        {"client_id": sandbox["client_id"], "response_type": "code", "redirect_uri": redirect_uri, "state": state}
    )
    late = submit_consent(requests.Session(), authorize, email=DEMO_EMAIL, password=DEMO_PASSWORD, account=DEMO_ACCOUNT)
    expired = stack.public("GET", late)
    assert is_refusal_page(expired, 400) and generation(stack, "worksection", expired_id) is None

    # Cross-provider: Worksection's state on Workly's callback is refused and burned.
    cross_id = new_id("cross")
    callback, query = stack.authorize(cross_id)
    crossed = stack.public("GET", f"/callback/workly?{urlencode(query)}")
    assert is_refusal_page(crossed, 400)
    assert is_refusal_page(stack.public("GET", callback), 400)  # burned: the right callback fails too
    assert generation(stack, "worksection", cross_id) is None
    findings.record(
        "security",
        "forged, replayed, expired and cross-provider OAuth states (with real provider codes)",
        "local stack over HTTP",
        "400 page each time; no connection created or changed; a state used on the wrong callback is burned",
    )


# --- open redirects ------------------------------------------------------------------------------------

HOSTILE_RETURN_URLS = [
    "https://evil.example/app",
    "//evil.example/app",
    "javascript:alert(1)",
    "JavaScript://127.0.0.1:9/app%0aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "http://127.0.0.1:9.evil.example/app",
    "http://127.0.0.1:9@evil.example/app",
    "http://evil.example#@127.0.0.1:9/app",
    "http://127.0.0.1:9/app/../admin",
    "http://127.0.0.1:9/app/%2e%2e/admin",
    "http://127.0.0.1:9/app%2f..%2fadmin",
    "http://127.0.0.1:9/app\\@evil.example",
    "http://127.0.0.1:9/application",
    "http://127.0.0.1:99/app",
    "https://127.0.0.1:9/app",
    "HTTP://127.0.0.1:9/app",
    "http://127.0.0.1:9/app\r\nLocation: https://evil.example",
    "http://127.0.0.1:9/app\t",
    " http://127.0.0.1:9/app",
    "http://127.0.0.1:9/\u0430pp",  # Cyrillic a
    "http://①②⑦.0.0.1:9/app",
    "http://0x7f.0.0.1:9/app",
    "http:/127.0.0.1:9/app",
    "http:\\\\evil.example\\app",
    "/app",
    "http://127.0.0.1:9/app" + "a" * 3000,
]


def test_open_redirects_on_return_to_are_refused(stack: LiveStack, findings: RowLog) -> None:
    accepted = []
    for hostile in HOSTILE_RETURN_URLS:
        answer = stack.signed(
            "POST", "/connect-sessions", json={"provider": "worksection", "connection_id": "r", "return_to": hostile}
        )
        if answer.status_code != 400 or answer.json().get("error") != "bad_request":
            accepted.append((hostile[:60], answer.status_code))
    # The allowed prefix works, and the finished flow sends the browser there and nowhere else.
    ok_id = new_id("return")
    callback, _ = stack.authorize(ok_id, return_to=f"{RETURN_PREFIX}/done?x=1")
    done = stack.public("GET", callback)
    location = urlsplit(done.headers.get("Location", ""))
    findings.record(
        "security",
        f"{len(HOSTILE_RETURN_URLS)} open-redirect return_to values (scheme, host, port, userinfo, dot "
        "segments, encoded separators, CR/LF, look-alikes, prefix boundary)",
        "local stack over HTTP",
        f"{len(HOSTILE_RETURN_URLS) - len(accepted)} refused with 400 bad_request; the allowed prefix "
        "redirects to itself only",
        NOTHING if not accepted else f"accepted: {accepted}",
    )
    assert not accepted, accepted
    assert done.status_code == 302 and f"{location.scheme}://{location.netloc}" == "http://127.0.0.1:9"
    assert location.path == "/app/done" and "status=connected" in location.query and "code=" not in location.query


# --- script injection ------------------------------------------------------------------------------------


def test_script_injection_in_every_echoed_parameter(stack: LiveStack, findings: RowLog) -> None:
    workly_link = stack.connect_link("workly", new_id("xss"))
    ws_callback, ws_query = stack.authorize(new_id("xss"))
    probes: list[tuple[str, Callable[[], requests.Response]]] = [
        ("connect session id (path)", lambda: stack.public("GET", f"/connect/{quote(PAYLOAD, safe='')}")),
        (
            "login form e-mail",
            lambda: stack.public(
                "POST", workly_link, data={"action": "login", "email": PAYLOAD + "@x.example", "password": "wrong-pass"}
            ),
        ),
        (
            "password reset e-mail",
            lambda: stack.public("POST", workly_link, data={"action": "reset", "email": PAYLOAD + "@x.example"}),
        ),
        ("login form action", lambda: stack.public("POST", workly_link, data={"action": PAYLOAD})),
        ("callback provider (path)", lambda: stack.public("GET", f"/callback/{quote(PAYLOAD, safe='')}?state=x")),
        ("callback state", lambda: stack.public("GET", f"/callback/worksection?{urlencode({'state': PAYLOAD})}")),
        (
            "callback error and error_description",
            lambda: stack.public(
                "GET",
                "/callback/worksection?"
                + urlencode({"state": ws_query["state"], "error": PAYLOAD, "error_description": PAYLOAD}),
            ),
        ),
        (
            "callback code",
            lambda: stack.public("GET", f"/callback/worksection?{urlencode({**ws_query, 'code': PAYLOAD})}"),
        ),
        ("unknown public path", lambda: stack.public("GET", f"/connect/{quote(PAYLOAD, safe='')}/x")),
        ("vend provider (path)", lambda: stack.signed("GET", f"/tokens/{quote(PAYLOAD, safe='')}/x")),
        (
            "connect-session body",
            lambda: stack.signed("POST", "/connect-sessions", json={"provider": PAYLOAD, "connection_id": PAYLOAD}),
        ),
        ("list provider", lambda: stack.signed("GET", f"/connections?{urlencode({'provider': PAYLOAD})}")),
    ]
    problems = []
    for name, probe in probes:
        answer = probe()
        content_type = answer.headers.get("Content-Type", "")
        echoed = PAYLOAD in answer.text or "<script>alert(1)" in answer.text
        if echoed and (content_type.startswith("text/html") or "json" not in content_type):
            problems.append(f"{name}: echoed unescaped ({answer.status_code}, {content_type})")
        if content_type.startswith("text/html"):
            csp = answer.headers.get("Content-Security-Policy", "")
            if "script-src" not in csp and "default-src 'none'" not in csp:
                problems.append(f"{name}: HTML without a script-src CSP")
    del ws_callback
    findings.record(
        "security",
        f"script injection in {len(probes)} echoed parameters (paths, form fields, callback query, JSON bodies)",
        "local stack over HTTP",
        "escaped in every page (strict CSP), JSON errors are application/json",
        NOTHING if not problems else "; ".join(problems),
    )
    assert not problems, problems


# --- SigV4 on the IAM routes -------------------------------------------------------------------------


def _iam_routes(connection_id: str) -> list[tuple[str, str, bytes]]:
    return [
        ("GET", f"/tokens/worksection/{connection_id}?min_ttl=0", b""),
        ("POST", f"/tokens/worksection/{connection_id}/refresh", b"{}"),
        ("GET", f"/connections/worksection/{connection_id}", b""),
        ("GET", "/connections?provider=worksection", b""),
        ("DELETE", f"/connections/worksection/{connection_id}", b""),
        ("POST", "/connect-sessions", json.dumps({"provider": "worksection", "connection_id": "x"}).encode()),
    ]


def _defects(stack: LiveStack) -> dict[str, Callable[[str, str, bytes], tuple[str, dict[str, str], bytes]]]:
    info = stack.info
    key, secret, region = info["access_key_id"], info["secret_access_key"], info["region"]
    now = time.time()

    def sign(method: str, url: str, body: bytes, **overrides: Any) -> dict[str, str]:
        options: dict[str, Any] = {"access_key": key, "secret_key": secret, "region": region, **overrides}
        return signed_headers(method, url, body=body, headers={"Content-Type": "application/json"}, **options)

    return {
        "unsigned": lambda m, u, b: (u, {"Content-Type": "application/json"}, b),
        "wrong secret key": lambda m, u, b: (u, sign(m, u, b, secret_key=secret + "x"), b),
        "unknown access key": lambda m, u, b: (u, sign(m, u, b, access_key="AKIAEVIL00000000"), b),
        "wrong region": lambda m, u, b: (u, sign(m, u, b, region="eu-west-1"), b),
        "signed 10 minutes ago": lambda m, u, b: (u, sign(m, u, b, at=now - 600), b),
        "signed 10 minutes ahead": lambda m, u, b: (u, sign(m, u, b, at=now + 600), b),
        "body changed after signing": lambda m, u, b: (u, sign(m, u, b), b + b" "),
        "signed for another path": lambda m, u, b: (u, sign(m, stack.url + "/connections?provider=workly", b), b),
        "query added after signing": lambda m, u, b: (u + ("&" if "?" in u else "?") + "x=1", sign(m, u, b), b),
        "garbage Authorization": lambda m, u, b: (
            u,
            {"Authorization": "AWS4-HMAC-SHA256 Credential=x", "X-Amz-Date": "20200101T000000Z"},
            b,
        ),
    }


def test_iam_routes_refuse_unsigned_and_wrongly_signed_requests(stack: LiveStack, findings: RowLog) -> None:
    victim = new_id("victim")
    stack.connect_worksection(victim)
    admitted = []
    defects = _defects(stack)
    for method, path, body in _iam_routes(victim):
        for defect, build in defects.items():
            url, headers, sent = build(method, stack.url + path, body)
            answer = stack.record(requests.request(method, url, headers=headers, data=sent or None, timeout=15))
            if answer.status_code != 403 or answer.json().get("error") != "forbidden":
                admitted.append(f"{method} {path.split('?')[0]} {defect}: {answer.status_code}")
    # None of them had an effect: the connection is still there, at generation 1.
    assert generation(stack, "worksection", victim) == 1
    tried = len(defects) * len(_iam_routes(victim))
    findings.record(
        "security",
        f"unsigned / wrongly signed requests on every IAM route ({tried}: wrong key, secret, region, "
        "clock skew, tampered body and path, garbage header)",
        "local stack gateway (infra/localstack/sigv4.py)",
        "403 forbidden every time; the DELETE never reached the handler (connection intact)",
        NOTHING if not admitted else "; ".join(admitted),
    )
    assert not admitted, admitted


# --- oversized and malformed input --------------------------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000


def test_oversized_and_malformed_input_on_every_route(stack: LiveStack, findings: RowLog) -> None:
    victim = new_id("malformed")
    stack.connect_worksection(victim)
    workly_link = stack.connect_link("workly", new_id("malformed"))
    workly_path = urlsplit(workly_link).path
    long_id = "a" * 129
    iam: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/tokens/worksection/{long_id}", {}),
        ("GET", "/tokens/worksection/a%20b", {}),
        ("GET", "/tokens/worksection/..%2F..%2Fapps%2Fworksection", {}),
        ("GET", "/tokens/worksection/%00", {}),
        ("GET", "/tokens/worksection/%C3%A9t%C3%A9", {}),
        ("GET", "/tokens/WORKSECTION!/x", {}),
        ("GET", f"/tokens/{'p' * 500}/x", {}),
        ("GET", f"/tokens/worksection/{victim}?min_ttl=-1", {}),
        ("GET", f"/tokens/worksection/{victim}?min_ttl=abc", {}),
        ("GET", f"/tokens/worksection/{victim}?min_ttl=1e9", {}),
        ("GET", f"/tokens/worksection/{victim}?min_ttl=99999999999999999999999999", {}),
        ("GET", f"/tokens/worksection/{victim}?min_ttl=%EF%BC%91", {}),  # full-width digit one
        ("POST", f"/tokens/worksection/{victim}/refresh", {"data": b"not json"}),
        ("POST", f"/tokens/worksection/{victim}/refresh", {"data": b"[]"}),
        ("POST", f"/tokens/worksection/{victim}/refresh", {"data": DEEP.encode()}),
        ("POST", f"/tokens/worksection/{victim}/refresh", {"json": {"rejected_token_sha256": 5}}),
        ("POST", f"/tokens/worksection/{victim}/refresh", {"json": {"rejected_token_sha256": "A" * 64}}),
        ("POST", f"/tokens/worksection/{victim}/refresh", {"json": {"rejected_token_sha256": "a" * 100_000}}),
        ("POST", f"/tokens/worksection/{victim}/refresh", {"json": {"surprise": True}}),
        ("POST", f"/tokens/worksection/{victim}/refresh", {"data": b"\xff\xfe\x00garbage"}),
        ("GET", "/connections", {}),
        ("GET", "/connections?provider=", {}),
        ("GET", "/connections?provider=worksection&limit=0", {}),
        ("GET", "/connections?provider=worksection&limit=101", {}),
        ("GET", "/connections?provider=worksection&limit=abc", {}),
        ("GET", "/connections?provider=worksection&cursor=garbage", {}),
        ("GET", f"/connections?provider=worksection&cursor={'x' * 3000}", {}),
        ("GET", "/connections?provider=workly&cursor=eyJwIjoid29ya3NlY3Rpb24iLCJjIjoiYSJ9", {}),
        ("DELETE", f"/connections/worksection/{long_id}", {}),
        ("POST", "/connect-sessions", {}),
        ("POST", "/connect-sessions", {"data": b"[]"}),
        ("POST", "/connect-sessions", {"data": DEEP.encode()}),
        ("POST", "/connect-sessions", {"json": {"provider": "nope", "connection_id": "x"}}),
        ("POST", "/connect-sessions", {"json": {"provider": "worksection", "connection_id": long_id}}),
        ("POST", "/connect-sessions", {"json": {"provider": "worksection", "connection_id": "x", "scopes": "a b"}}),
        (
            "POST",
            "/connect-sessions",
            {"json": {"provider": "worksection", "connection_id": "x", "scopes": ["a"] * 999}},
        ),
        (
            "POST",
            "/connect-sessions",
            {"json": {"provider": "worksection", "connection_id": "x", "metadata": {"k": 1}}},
        ),
        (
            "POST",
            "/connect-sessions",
            {
                "json": {
                    "provider": "worksection",
                    "connection_id": "x",
                    "metadata": {f"k{i}": "v" for i in range(5000)},
                }
            },
        ),
        ("POST", "/connect-sessions", {"json": {"provider": ["worksection"], "connection_id": {"a": 1}}}),
        ("POST", "/connect-sessions", {"json": {"provider": "worksection", "connection_id": "x", "x": "y" * 500_000}}),
        ("POST", "/connect-sessions", {"data": b'{"provider": "worksection", "connection_id": "\xff"}'}),
    ]
    public: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/connect/{'s' * 10_000}", {}),
        ("GET", "/connect/%00", {}),
        ("GET", f"/connect/{secrets.token_urlsafe(32)}", {}),
        ("POST", f"/connect/{secrets.token_urlsafe(32)}", {"data": {"email": "a@b.c", "password": "x"}}),
        ("POST", workly_path, {"json": {"email": DEMO_EMAIL, "password": DEMO_PASSWORD}}),
        ("POST", workly_path, {"data": {"email": "a@b.c", "password": "p" * 20_000}}),
        ("POST", workly_path, {"data": "&".join(f"f{i}=v" for i in range(200))}),
        ("POST", workly_path, {"data": b"\xff\xfe=\x00"}),
        ("POST", workly_path, {"data": {"email": "x" * 5000 + "@b.c", "password": "whatever-1"}}),
        ("GET", "/callback/worksection", {}),
        ("GET", "/callback/worksection?state=a&state=b", {}),
        ("GET", f"/callback/worksection?state={'s' * 10_000}&code=x", {}),
        ("GET", "/callback/worksection?" + "&".join(f"p{i}=v" for i in range(500)), {}),
        ("GET", f"/callback/{'w' * 2000}?state=x", {}),
        ("GET", "/callback/%00?state=x", {}),
    ]
    problems = []
    for method, path, kwargs in iam:
        answer = stack.signed(method, path, headers={"Content-Type": "application/json"}, **kwargs)
        content_type = answer.headers.get("Content-Type", "")
        body = _json_or_empty(answer)
        # "error" from tokenbroker; the gateway's own {"message": "Not Found"} when no route matches.
        shape_ok = "json" in content_type and ("error" in body or body == {"message": "Not Found"})
        if not 400 <= answer.status_code < 500 or not shape_ok:
            problems.append(f"IAM {method} {path[:60]} {_input(kwargs)}: {answer.status_code} {answer.text[:60]!r}")
    for method, path, kwargs in public:
        headers = {"Origin": "null"}
        if "data" in kwargs and not isinstance(kwargs["data"], dict):
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        answer = stack.public(method, path, headers=headers, **kwargs)
        if not 400 <= answer.status_code < 500 or not answer.headers.get("Content-Type", "").startswith("text/html"):
            shown = "/connect/<session>" if path == workly_path else path[:60]
            problems.append(f"public {method} {shown} {_input(kwargs)}: {answer.status_code}")
    # Still intact after all that.
    assert generation(stack, "worksection", victim) == 1
    findings.record(
        "security",
        f"oversized and malformed input on every route ({len(iam)} IAM requests, {len(public)} public: ids, "
        "numbers, bodies, nesting, encodings, repeated and excess parameters)",
        "local stack over HTTP",
        "4xx with a JSON error on IAM routes and an HTML page on public routes; no 5xx; nothing changed",
        NOTHING if not problems else "; ".join(problems),
    )
    assert not problems, "\n".join(problems)


def _input(kwargs: dict[str, Any]) -> str:
    if not kwargs:
        return ""
    name, value = next(iter(kwargs.items()))
    return f"[{name} {repr(value)[:40]}]"


def _json_or_empty(answer: requests.Response) -> dict[str, Any]:
    try:
        value = answer.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --- nothing secret anywhere ------------------------------------------------------------------------------


def test_no_secret_in_any_answer_page_error_or_log_line(stack: LiveStack, findings: RowLog) -> None:
    """Every flow that handles a secret, its failures too, then a scan of every answer tokenbroker
    gave in this process and every log line the stack wrote."""
    ws_id, workly_id = new_id("scan-ws"), new_id("scan-workly")
    stack.connect_worksection(ws_id)
    stack.connect_workly(workly_id, remember=True)
    for provider, connection_id in (("worksection", ws_id), ("workly", workly_id)):
        vended = stack.signed("GET", f"/tokens/{provider}/{connection_id}?min_ttl=0").json()
        refreshed = stack.signed("POST", f"/tokens/{provider}/{connection_id}/refresh", json={})
        assert refreshed.status_code == 200 and refreshed.json()["generation"] == vended["generation"] + 1
        stack.learn_secret(provider, connection_id)
        stack.signed("GET", f"/connections/{provider}/{connection_id}")
    stack.signed("GET", "/connections?provider=worksection")
    # Failures that carry secrets in their input.
    link = stack.connect_link("workly", new_id("scan-wrong"))
    stack.public("POST", link, data={"action": "login", "email": DEMO_EMAIL, "password": "not-the-demo-password"})
    stack.secrets.add("not-the-demo-password", kind="password")
    _, query = stack.authorize(new_id("scan-code"))
    stack.public("GET", f"/callback/workly?{urlencode(query)}")  # the code on the wrong callback
    stack.signed("POST", f"/tokens/worksection/{ws_id}/refresh", json={"rejected_token_sha256": "f" * 64})
    stack.signed("DELETE", f"/connections/worksection/{ws_id}")
    stack.signed("GET", f"/tokens/worksection/{ws_id}")
    time.sleep(0.3)  # let the stack's output pumps catch up
    leaks = stack.leaks()
    counts = f"{len(stack.answers)} answers, {len(stack.log_lines())} log lines"
    counts += f", {stack.secrets.count()} secret values"
    findings.record(
        "security",
        "secret scan: refresh/access tokens, codes, states, session ids, passwords, client secrets",
        "local stack: every answer and log line",
        f"scanned {counts}; access tokens only in vend answers",
        NOTHING if not leaks else "; ".join(sorted(set(leaks))[:10]),
    )
    assert len(stack.secrets.never) >= 8 and stack.log_lines()
    assert not leaks, sorted(set(leaks))
