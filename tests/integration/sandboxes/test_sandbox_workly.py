"""The Workly sandbox over real HTTP: every endpoint and error shape of providers.md."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from tokenbroker.clock import ManualClock

from infra.sandboxes import WorklySandbox

HEX40 = re.compile(r"^[0-9a-f]{40}$")


def password_grant(sandbox: WorklySandbox, username: str, password: str, **overrides: str) -> requests.Response:
    data = {
        "grant_type": "password",
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "username": username,
        "password": password,
        **overrides,
    }
    return requests.post(sandbox.token_url, data=data, timeout=5)


def refresh_grant(sandbox: WorklySandbox, refresh_token: str, **overrides: str) -> requests.Response:
    data = {
        "grant_type": "refresh_token",
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "refresh_token": refresh_token,
        **overrides,
    }
    return requests.post(sandbox.token_url, data=data, timeout=5)


def employees(sandbox: WorklySandbox, access_token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
    return requests.get(sandbox.api_url, headers=headers, timeout=5)


def login(sandbox: WorklySandbox) -> dict[str, Any]:
    response = password_grant(sandbox, "ann@example.com", "correct-horse-battery")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_error(response: requests.Response, status: int, code: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) == {"message", "code"}


def test_base_url_carries_the_v1_prefix(workly: WorklySandbox) -> None:
    assert workly.base_url == f"http://127.0.0.1:{workly.port}/v1"
    assert workly.token_url == workly.base_url + "/oauth/token"


def test_password_grant_answers_the_documented_shape(workly: WorklySandbox) -> None:
    body = login(workly)
    assert set(body) == {"access_token", "expires_in", "token_type", "scope", "refresh_token"}
    assert HEX40.match(body["access_token"]) and HEX40.match(body["refresh_token"])
    assert body["access_token"] != body["refresh_token"]
    assert body["expires_in"] == 3600
    assert body["token_type"] == "bearer"
    assert body["scope"] == "v1:list:employee,v1:view:employee"
    assert workly.outcomes["password"] == 1


def test_login_is_case_insensitive_on_the_email(workly: WorklySandbox) -> None:
    assert password_grant(workly, "ANN@example.com", "correct-horse-battery").status_code == 200


def test_access_token_opens_the_api(workly: WorklySandbox) -> None:
    response = employees(workly, login(workly)["access_token"])
    assert response.status_code == 200
    assert response.json()[0]["email"] == "ann@example.com"


def test_refresh_rotates_and_the_old_refresh_token_dies(workly: WorklySandbox) -> None:
    first = login(workly)
    second = refresh_grant(workly, first["refresh_token"])
    assert second.status_code == 200
    new = second.json()
    assert HEX40.match(new["refresh_token"]) and new["refresh_token"] != first["refresh_token"]
    assert new["access_token"] != first["access_token"]
    assert_error(refresh_grant(workly, first["refresh_token"]), 400, 7008)
    third = refresh_grant(workly, new["refresh_token"])
    assert third.status_code == 200
    assert workly.refreshes == 2


def test_old_access_token_lives_until_expiry_by_default(workly: WorklySandbox) -> None:
    first = login(workly)
    new = refresh_grant(workly, first["refresh_token"]).json()
    assert employees(workly, first["access_token"]).status_code == 200
    assert employees(workly, new["access_token"]).status_code == 200


def test_refresh_kills_old_access_knob(workly: WorklySandbox) -> None:
    workly.knobs.refresh_kills_old_access = True
    first = login(workly)
    new = refresh_grant(workly, first["refresh_token"]).json()
    assert_error(employees(workly, first["access_token"]), 401, 7008)
    assert employees(workly, new["access_token"]).status_code == 200


def test_rotated_refresh_code_knob(workly: WorklySandbox) -> None:
    workly.knobs.rotated_refresh_code = 7006
    first = login(workly)
    refresh_grant(workly, first["refresh_token"])
    assert_error(refresh_grant(workly, first["refresh_token"]), 400, 7006)


def test_refresh_token_expires_with_the_clock(workly: WorklySandbox, clock: ManualClock) -> None:
    body = login(workly)
    clock.advance(7200)
    assert_error(refresh_grant(workly, body["refresh_token"]), 400, 7006)


def test_access_token_expires_with_the_clock(workly: WorklySandbox, clock: ManualClock) -> None:
    body = login(workly)
    clock.advance(3599)
    assert employees(workly, body["access_token"]).status_code == 200
    clock.advance(1)
    assert_error(employees(workly, body["access_token"]), 401, 7009)
    # An expired access token does not stop the refresh.
    assert refresh_grant(workly, body["refresh_token"]).status_code == 200


def test_expire_and_revoke_helpers(workly: WorklySandbox) -> None:
    body = login(workly)
    assert workly.expire_access_tokens() == 1
    assert_error(employees(workly, body["access_token"]), 401, 7009)
    assert workly.revoke_refresh_tokens("ann@example.com") == 1
    assert_error(refresh_grant(workly, body["refresh_token"]), 400, 7008)


def test_unknown_refresh_token_is_7008(workly: WorklySandbox) -> None:
    assert_error(refresh_grant(workly, "0" * 40), 400, 7008)


def test_refresh_token_is_bound_to_its_client(workly: WorklySandbox) -> None:
    body = login(workly)
    workly.add_client("other-client", "other-secret")
    response = refresh_grant(workly, body["refresh_token"], client_id="other-client", client_secret="other-secret")
    assert_error(response, 400, 7008)


@pytest.mark.parametrize(
    ("username", "password"),
    [("ann@example.com", "wrong-password"), ("nobody@example.com", "correct-horse-battery")],
)
def test_wrong_login_or_password_is_7002(workly: WorklySandbox, username: str, password: str) -> None:
    assert_error(password_grant(workly, username, password), 400, 7002)


def test_credential_error_status_knob(workly: WorklySandbox) -> None:
    workly.knobs.credential_error_status = 401
    assert_error(password_grant(workly, "ann@example.com", "wrong-password"), 401, 7002)


@pytest.mark.parametrize("overrides", [{"client_secret": "wrong"}, {"client_id": "unknown"}, {"client_secret": ""}])
def test_invalid_client_is_7003(workly: WorklySandbox, overrides: dict[str, str]) -> None:
    assert_error(password_grant(workly, "ann@example.com", "correct-horse-battery", **overrides), 401, 7003)


def test_removed_client_is_rejected(workly: WorklySandbox) -> None:
    workly.remove_client(workly.client_id)
    assert_error(password_grant(workly, "ann@example.com", "correct-horse-battery"), 401, 7003)


@pytest.mark.parametrize("grant_type", ["client_credentials", "authorization_code", ""])
def test_invalid_grant_type_is_7005(workly: WorklySandbox, grant_type: str) -> None:
    response = password_grant(workly, "ann@example.com", "correct-horse-battery", grant_type=grant_type)
    assert_error(response, 400, 7005)


def test_short_password_is_a_validation_error(workly: WorklySandbox) -> None:
    assert_error(password_grant(workly, "ann@example.com", "short"), 422, 8002)


def test_missing_username_is_a_validation_error(workly: WorklySandbox) -> None:
    assert_error(password_grant(workly, "", "correct-horse-battery"), 422, 8001)


def test_upgrade_required_knob_is_426_7010(workly: WorklySandbox) -> None:
    workly.knobs.upgrade_required = True
    assert_error(password_grant(workly, "ann@example.com", "correct-horse-battery"), 426, 7010)


def test_expired_subscription_is_402(workly: WorklySandbox) -> None:
    body = login(workly)
    workly.set_subscription_expired("ann@example.com")
    assert password_grant(workly, "ann@example.com", "correct-horse-battery").status_code == 402
    assert refresh_grant(workly, body["refresh_token"]).status_code == 402
    assert employees(workly, body["access_token"]).status_code == 402
    workly.set_subscription_expired("ann@example.com", False)
    assert refresh_grant(workly, body["refresh_token"]).status_code == 200


def test_maintenance_knob_is_an_html_503(workly: WorklySandbox) -> None:
    workly.knobs.maintenance = True
    response = password_grant(workly, "ann@example.com", "correct-horse-battery")
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html" in response.text


def test_rate_limit_knob_is_429_6000_until_the_minute_ends(workly: WorklySandbox, clock: ManualClock) -> None:
    clock.advance(60 - clock.now() % 60)  # start of a minute
    workly.knobs.rate_limit_per_minute = 2
    assert password_grant(workly, "ann@example.com", "correct-horse-battery").status_code == 200
    assert password_grant(workly, "ann@example.com", "correct-horse-battery").status_code == 200
    limited = password_grant(workly, "ann@example.com", "correct-horse-battery")
    assert_error(limited, 429, 6000)
    assert "Retry-After" not in limited.headers
    assert limited.headers["X-Rate-Limit-Remaining"] == "0"
    clock.advance(60)
    assert password_grant(workly, "ann@example.com", "correct-horse-battery").status_code == 200


def test_password_reset_answers_in_russian_and_is_recorded(workly: WorklySandbox) -> None:
    response = requests.post(workly.password_reset_url, data={"email": "ann@example.com"}, timeout=5)
    assert response.status_code == 200
    message = response.json()["message"]
    assert re.search("[\u0400-\u04ff]", message)  # Cyrillic
    unknown = requests.post(workly.password_reset_url, data={"email": "who@example.com"}, timeout=5)
    assert unknown.json() == response.json()  # does not reveal who has an account
    assert [(r.email, r.known_user) for r in workly.password_resets] == [
        ("ann@example.com", True),
        ("who@example.com", False),
    ]


def test_password_reset_without_email_is_a_validation_error(workly: WorklySandbox) -> None:
    response = requests.post(workly.password_reset_url, data={}, timeout=5)
    assert_error(response, 422, 8001)
    assert workly.password_resets == []


def test_api_without_token_is_7007(workly: WorklySandbox) -> None:
    assert_error(employees(workly, None), 401, 7007)
    assert_error(employees(workly, "f" * 40), 401, 7008)


def test_issue_tokens_seeds_a_working_pair(workly: WorklySandbox) -> None:
    body = workly.issue_tokens("ann@example.com")
    assert employees(workly, body["access_token"]).status_code == 200
    assert refresh_grant(workly, body["refresh_token"]).status_code == 200


def test_custom_prefix_and_client(clock: ManualClock) -> None:
    with WorklySandbox(clock=clock, prefix="", client_id="cid", client_secret="csecret") as sandbox:
        sandbox.add_user("x@example.com", "long-enough")
        assert sandbox.base_url == sandbox.url
        response = requests.post(
            sandbox.url + "/oauth/token",
            data={
                "grant_type": "password",
                "client_id": "cid",
                "client_secret": "csecret",
                "username": "x@example.com",
                "password": "long-enough",
            },
            timeout=5,
        )
        assert response.status_code == 200
        assert response.json()["expires_in"] == 30 * 86400  # the real default lifetime


def test_unknown_path_is_404(workly: WorklySandbox) -> None:
    response = requests.get(workly.base_url + "/nope", timeout=5)
    assert response.status_code == 404
    assert workly.calls.total() == 0
