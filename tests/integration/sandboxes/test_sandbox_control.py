"""The /_sandbox control API, thread safety under concurrent refreshes, and the standalone runner."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from infra.sandboxes import WorklySandbox, WorksectionSandbox

REPO = Path(__file__).resolve().parents[3]


def login(
    sandbox: WorklySandbox,
    email: str = "ann@example.com",
    password: str = "correct-horse-battery",
    timeout: float = 5,
) -> requests.Response:
    data = {
        "grant_type": "password",
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "username": email,
        "password": password,
    }
    return requests.post(sandbox.token_url, data=data, timeout=timeout)


def control(sandbox: WorklySandbox | WorksectionSandbox, path: str) -> str:
    return f"{sandbox.url}/_sandbox/{path}"


def test_faults_armed_over_http(workly: WorklySandbox) -> None:
    armed = requests.post(
        control(workly, "faults"),
        json=[
            {"kind": "status", "status": 502, "endpoint": "token", "times": 2},
            {"kind": "rate_limit", "retry_after": 3},
        ],
        timeout=5,
    )
    assert armed.status_code == 200
    pending = armed.json()["pending"]
    assert [(p["kind"], p["remaining"]) for p in pending] == [("status", 2), ("rate_limit", 1)]
    assert login(workly).status_code == 502
    assert requests.get(control(workly, "faults"), timeout=5).json()["pending"][0]["remaining"] == 1
    assert requests.delete(control(workly, "faults"), timeout=5).json()["pending"] == []
    assert login(workly).status_code == 200


def test_hang_after_armed_over_http(workly: WorklySandbox) -> None:
    requests.post(control(workly, "faults"), json={"kind": "hang", "seconds": 2, "after": True}, timeout=5)
    with pytest.raises(requests.ReadTimeout):
        login(workly, timeout=0.3)
    assert workly.outcomes["password"] == 1  # granted, answer lost


def test_latency_over_http(workly: WorklySandbox) -> None:
    response = requests.post(control(workly, "faults"), json={"latency": 0.25, "endpoint": "token"}, timeout=5)
    assert response.json()["latency"] == [{"endpoint": "token", "seconds": 0.25}]
    started = time.monotonic()
    login(workly)
    assert time.monotonic() - started >= 0.25


def test_bad_fault_spec_is_a_400(workly: WorklySandbox) -> None:
    response = requests.post(control(workly, "faults"), json={"kind": "explode"}, timeout=5)
    assert response.status_code == 400
    assert workly.faults.pending() == []


def test_calls_and_reset(workly: WorklySandbox) -> None:
    body = login(workly).json()
    requests.get(workly.api_url, headers={"Authorization": f"Bearer {body['access_token']}"}, timeout=5)
    calls = requests.get(control(workly, "calls"), timeout=5).json()
    assert calls == {"calls": {"token": 1, "employees": 1}, "outcomes": {"password": 1}, "refreshes": 0}
    workly.faults.fail(500)
    requests.post(control(workly, "reset"), json={}, timeout=5)
    assert workly.calls.total() == 0 and workly.faults.pending() == []
    # Tokens survive a plain reset, not a state reset.
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert requests.get(workly.api_url, headers=headers, timeout=5).status_code == 200
    requests.post(control(workly, "reset"), json={"state": True}, timeout=5)
    assert requests.get(workly.api_url, headers=headers, timeout=5).status_code == 401


def test_users_clients_and_knobs_over_http(workly: WorklySandbox) -> None:
    created = requests.post(
        control(workly, "users"), json={"email": "dan@example.com", "password": "dan-password"}, timeout=5
    )
    assert created.status_code == 201
    assert login(workly, "dan@example.com", "dan-password").status_code == 200
    knobs = requests.post(control(workly, "knobs"), json={"upgrade_required": True, "access_ttl": 5}, timeout=5)
    assert knobs.json()["upgrade_required"] is True and knobs.json()["access_ttl"] == 5
    assert login(workly).status_code == 426
    assert requests.post(control(workly, "knobs"), json={"nope": 1}, timeout=5).status_code == 400
    assert requests.post(control(workly, "knobs"), json={"maintenance": "yes"}, timeout=5).status_code == 400
    assert requests.post(control(workly, "knobs"), json={"scope": None}, timeout=5).status_code == 400
    requests.post(control(workly, "knobs"), json={"upgrade_required": False, "rate_limit_per_minute": None}, timeout=5)
    requests.post(control(workly, "clients"), json={"client_id": "new", "client_secret": "new-secret"}, timeout=5)
    assert workly.client_is_valid("new", "new-secret")


def test_expire_revoke_and_password_resets_over_http(workly: WorklySandbox) -> None:
    body = login(workly).json()
    assert requests.post(control(workly, "expire-access-tokens"), json={}, timeout=5).json() == {"expired": 1}
    assert requests.post(control(workly, "revoke-refresh-tokens"), timeout=5).json() == {"revoked": 1}
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert requests.get(workly.api_url, headers=headers, timeout=5).json()["code"] == 7009
    requests.post(workly.password_reset_url, data={"email": "ann@example.com"}, timeout=5)
    resets = requests.get(control(workly, "password-resets"), timeout=5).json()
    assert [(r["email"], r["known_user"]) for r in resets] == [("ann@example.com", True)]


def test_worksection_knobs_over_http(worksection: WorksectionSandbox) -> None:
    response = requests.post(
        control(worksection, "knobs"),
        json={"league_version": 9, "redirect_uris": ["https://a.example.com/cb"]},
        timeout=5,
    )
    assert response.status_code == 200
    assert worksection.knobs.league_version == 9
    assert worksection.knobs.redirect_uris == ("https://a.example.com/cb",)
    added = requests.post(
        control(worksection, "users"),
        json={"email": "eve@example.com", "password": "eve-password", "accounts": ["one", "two"]},
        timeout=5,
    )
    assert added.status_code == 201 and worksection.users["eve@example.com"].accounts == ("one", "two")


def test_unknown_control_action_is_404(workly: WorklySandbox) -> None:
    assert requests.get(control(workly, "password-resets-x"), timeout=5).status_code == 404
    assert requests.post(control(workly, "calls"), timeout=5).status_code == 405


def test_concurrent_refreshes_of_one_token_have_one_winner(workly: WorklySandbox) -> None:
    refresh_token = login(workly).json()["refresh_token"]
    data = {
        "grant_type": "refresh_token",
        "client_id": workly.client_id,
        "client_secret": workly.client_secret,
        "refresh_token": refresh_token,
    }
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(
            pool.map(lambda _: requests.post(workly.token_url, data=data, timeout=10).status_code, range(32))
        )
    assert statuses.count(200) == 1
    assert statuses.count(400) == 31
    assert workly.refreshes == 1
    assert workly.calls["token"] == 33


def test_standalone_runner_prints_urls_and_stops_on_ctrl_c() -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'shared'}"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.sandboxes",
            "--workly-port",
            "0",
            "--worksection-port",
            "0",
            "--access-ttl",
            "120",
            "--user",
            "cli@example.com:cli-password",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        workly_url = re.search(r"base_url=(\S+)", lines[0])
        token_url = re.search(r"token_url=(\S+)", lines[1])
        assert workly_url and token_url, lines
        response = requests.post(
            workly_url.group(1) + "/oauth/token",
            data={
                "grant_type": "password",
                "client_id": "6779ef20e75817b79602",
                "client_secret": "workly-sandbox-client-secret",
                "username": "cli@example.com",
                "password": "cli-password",
            },
            timeout=5,
        )
        assert response.status_code == 200 and response.json()["expires_in"] == 120
        assert requests.post(token_url.group(1), data={}, timeout=5).json()["error"] == "invalid_client"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
        assert process.returncode == 0, err
        assert "stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
