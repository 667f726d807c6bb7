"""Fault knobs over real HTTP: each one does what it says, before or after the grant happens."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from infra.sandboxes import Fault, FaultKind, WorklySandbox, WorksectionSandbox, submit_consent


def token_request(sandbox: WorklySandbox, **data: str) -> dict[str, str]:
    return {"client_id": sandbox.client_id, "client_secret": sandbox.client_secret, **data}


def login(sandbox: WorklySandbox, timeout: float = 5) -> requests.Response:
    data = token_request(sandbox, grant_type="password", username="ann@example.com", password="correct-horse-battery")
    return requests.post(sandbox.token_url, data=data, timeout=timeout)


def refresh(sandbox: WorklySandbox, refresh_token: str, timeout: float = 5) -> requests.Response:
    data = token_request(sandbox, grant_type="refresh_token", refresh_token=refresh_token)
    return requests.post(sandbox.token_url, data=data, timeout=timeout)


def tokens(sandbox: WorklySandbox) -> dict[str, Any]:
    response = login(sandbox)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("status", [500, 502, 503])
def test_next_n_responses_fail_with_an_html_page(workly: WorklySandbox, status: int) -> None:
    workly.faults.fail(status, times=2)
    for _ in range(2):
        response = login(workly)
        assert response.status_code == status
        assert response.headers["Content-Type"].startswith("text/html")
        assert str(status) in response.text
    assert login(workly).status_code == 200
    assert workly.calls["token"] == 3
    assert workly.outcomes["password"] == 1  # the failed ones granted nothing


def test_status_fault_with_retry_after(workly: WorklySandbox) -> None:
    workly.faults.fail(503, retry_after=7)
    assert login(workly).headers["Retry-After"] == "7"


@pytest.mark.parametrize("retry_after", [None, 30])
def test_rate_limit_with_or_without_retry_after(workly: WorklySandbox, retry_after: int | None) -> None:
    workly.faults.rate_limit(retry_after=retry_after)
    response = login(workly)
    assert response.status_code == 429
    assert response.json() == {"message": response.json()["message"], "code": 6000}
    assert response.headers.get("Retry-After") == (None if retry_after is None else "30")


def test_worksection_rate_limit_is_an_html_page(worksection: WorksectionSandbox) -> None:
    worksection.faults.rate_limit(retry_after=2, endpoint="refresh")
    response = requests.post(worksection.refresh_url, data={}, timeout=5)
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"
    assert response.headers["Content-Type"].startswith("text/html")


def test_error_200_uses_the_providers_error_shape(workly: WorklySandbox, worksection: WorksectionSandbox) -> None:
    workly.faults.error_200()
    response = login(workly)
    assert response.status_code == 200 and response.json()["code"] == 5000
    worksection.faults.error_200(endpoint="token")
    ws = requests.post(worksection.token_url, data={}, timeout=5)
    assert ws.status_code == 200
    assert ws.json()["error"] == "server_error" and "errorDescription" in ws.json()


def test_error_200_with_a_custom_body(workly: WorklySandbox) -> None:
    workly.faults.error_200(body='{"message": "x", "code": 7003}')
    assert login(workly).json() == {"message": "x", "code": 7003}


def test_malformed_json(workly: WorklySandbox) -> None:
    workly.faults.malformed_json()
    response = login(workly)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    with pytest.raises(requests.JSONDecodeError):
        response.json()
    assert workly.outcomes["password"] == 0


def test_malformed_json_after_the_grant_rotates_anyway(workly: WorklySandbox) -> None:
    first = tokens(workly)
    workly.faults.malformed_json(after=True)
    with pytest.raises(requests.JSONDecodeError):
        refresh(workly, first["refresh_token"]).json()
    assert workly.refreshes == 1
    assert refresh(workly, first["refresh_token"]).json()["code"] == 7008


@pytest.mark.parametrize("fields", [("refresh_token",), ("expires_in",), ("refresh_token", "expires_in")])
def test_omit_fields(workly: WorklySandbox, fields: tuple[str, ...]) -> None:
    workly.faults.omit_fields(*fields)
    body = tokens(workly)
    assert not set(fields) & set(body)
    assert "access_token" in body and "token_type" in body


def test_omit_account_url_on_exchange(worksection: WorksectionSandbox) -> None:
    redirect_uri = "https://app.example.com/cb"
    query = urlencode({"client_id": worksection.client_id, "response_type": "code", "redirect_uri": redirect_uri})
    with requests.Session() as session:
        location = submit_consent(
            session, f"{worksection.authorize_url}?{query}", email="bob@example.com", password="bob-password-1"
        )
    code = parse_qs(urlsplit(location).query)["code"][0]
    worksection.faults.omit_fields("account_url", endpoint="token")
    data = {
        "grant_type": "authorization_code",
        "client_id": worksection.client_id,
        "client_secret": worksection.client_secret,
        "code": code,
        "redirect_uri": redirect_uri,
    }
    body = requests.post(worksection.token_url, data=data, timeout=5).json()
    assert "account_url" not in body and body["refresh_token"].startswith("def50200")


def test_omit_fields_leaves_error_bodies_alone(workly: WorklySandbox) -> None:
    workly.faults.omit_fields("code")
    response = requests.post(workly.token_url, data={}, timeout=5)
    assert response.json()["code"] == 7003  # only successful answers are trimmed


def test_hang_before_the_grant_loses_nothing(workly: WorklySandbox) -> None:
    first = tokens(workly)
    workly.faults.hang(3, endpoint="token")
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        refresh(workly, first["refresh_token"], timeout=0.3)
    assert time.monotonic() - started < 2
    assert workly.refreshes == 0
    assert refresh(workly, first["refresh_token"]).status_code == 200  # the old token still works


def test_hang_after_the_grant_is_outcome_unknown(workly: WorklySandbox) -> None:
    first = tokens(workly)
    workly.faults.hang(3, endpoint="token", after=True)
    with pytest.raises(requests.ReadTimeout):
        refresh(workly, first["refresh_token"], timeout=0.3)
    assert workly.refreshes == 1  # rotation happened, the answer was lost
    assert refresh(workly, first["refresh_token"]).json()["code"] == 7008


def test_drop_before_the_grant(workly: WorklySandbox) -> None:
    first = tokens(workly)
    workly.faults.drop()
    with pytest.raises(requests.ConnectionError):
        refresh(workly, first["refresh_token"])
    assert workly.refreshes == 0
    assert refresh(workly, first["refresh_token"]).status_code == 200


def test_drop_after_the_grant(worksection: WorksectionSandbox) -> None:
    body = worksection.issue_tokens("bob@example.com")
    worksection.faults.drop(endpoint="refresh", after=True)
    data = {
        "grant_type": "refresh_token",
        "client_id": worksection.client_id,
        "client_secret": worksection.client_secret,
        "refresh_token": body["refresh_token"],
    }
    with pytest.raises(requests.ConnectionError):
        requests.post(worksection.refresh_url, data=data, timeout=5)
    assert worksection.refreshes == 1
    assert requests.post(worksection.refresh_url, data=data, timeout=5).status_code == 400


def test_latency_per_endpoint_and_global(workly: WorklySandbox) -> None:
    workly.faults.set_latency(0.3, endpoint="token")
    started = time.monotonic()
    assert login(workly).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    requests.get(workly.api_url, timeout=5)
    assert time.monotonic() - started < 0.25
    workly.faults.set_latency(0, endpoint="token")
    workly.faults.set_latency(0.2)
    started = time.monotonic()
    requests.get(workly.api_url, timeout=5)
    assert time.monotonic() - started >= 0.2


def test_faults_only_hit_their_endpoint_and_fire_in_order(worksection: WorksectionSandbox) -> None:
    worksection.faults.fail(502, endpoint="refresh")
    worksection.faults.fail(500, endpoint="token")
    worksection.faults.fail(503, endpoint="token")
    assert requests.post(worksection.token_url, timeout=5).status_code == 500
    assert requests.post(worksection.token_url, timeout=5).status_code == 503
    assert requests.post(worksection.token_url, timeout=5).status_code == 200
    assert requests.post(worksection.refresh_url, timeout=5).status_code == 502
    assert worksection.faults.pending() == []
    assert worksection.calls.snapshot() == {"token": 3, "refresh": 1}


def test_stop_wakes_a_hanging_request(clock: Any) -> None:
    sandbox = WorklySandbox(clock=clock).start()
    sandbox.faults.hang(30)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            requests.get(sandbox.api_url, timeout=10)
        except requests.RequestException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while sandbox.calls["employees"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    sandbox.stop()
    caller.join(timeout=5)
    assert time.monotonic() - started < 2
    assert not caller.is_alive()
    assert not sandbox.running


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match="at least once"):
        Fault(FaultKind.STATUS, times=0)
    with pytest.raises(ValueError, match="fields"):
        Fault(FaultKind.OMIT_FIELDS)
    with pytest.raises(ValueError, match="unknown fault fields"):
        Fault.from_dict({"kind": "status", "colour": "red"})
    fault = Fault(FaultKind.OMIT_FIELDS, fields=("a",), endpoint="token", times=2)
    assert Fault.from_dict(fault.to_dict()) == fault
