"""The Worksection sandbox over real HTTP: consent pages, codes, rotation and every error shape."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from tokenbroker.clock import ManualClock
from tokenbroker.providers import new_pkce_pair

from infra.sandboxes import ConsentFailed, WorksectionSandbox, parse_forms, submit_consent

REDIRECT_URI = "https://app.example.com/callback/worksection"


def authorize_url(sandbox: WorksectionSandbox, **overrides: str) -> str:
    params = {
        "client_id": sandbox.client_id,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "state": "state-123",
        "scope": "projects_read,users_read",
        **overrides,
    }
    return f"{sandbox.authorize_url}?{urlencode(params)}"


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def get_code(
    sandbox: WorksectionSandbox,
    email: str = "bob@example.com",
    password: str = "bob-password-1",
    account: str | None = None,
    **authorize_params: str,
) -> str:
    url = authorize_url(sandbox, **authorize_params)
    with requests.Session() as session:
        location = submit_consent(session, url, email=email, password=password, account=account)
    assert location.startswith(REDIRECT_URI + "?")
    query = query_of(location)
    assert query["state"] == "state-123"
    return query["code"]


def exchange(sandbox: WorksectionSandbox, code: str, **overrides: str) -> requests.Response:
    data = {
        "grant_type": "authorization_code",
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "code": code,
        "redirect_uri": REDIRECT_URI,
        **overrides,
    }
    return requests.post(sandbox.token_url, data=data, timeout=5)


def refresh(sandbox: WorksectionSandbox, refresh_token: str, **overrides: str) -> requests.Response:
    data = {
        "grant_type": "refresh_token",
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "refresh_token": refresh_token,
        **overrides,
    }
    return requests.post(sandbox.refresh_url, data=data, timeout=5)


def api(sandbox: WorksectionSandbox, access_token: str | None, action: str = "get_projects") -> requests.Response:
    headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
    return requests.get(sandbox.api_url, params={"action": action}, headers=headers, timeout=5)


def resource(sandbox: WorksectionSandbox, access_token: str, **overrides: str) -> requests.Response:
    data = {
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "access_token": access_token,
        **overrides,
    }
    return requests.post(sandbox.userinfo_url, data=data, timeout=5)


def connect(sandbox: WorksectionSandbox) -> dict[str, Any]:
    response = exchange(sandbox, get_code(sandbox))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def b64json(part: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


# --- authorize page ----------------------------------------------------------------------------


def test_authorize_page_is_an_accessible_form(worksection: WorksectionSandbox) -> None:
    response = requests.get(authorize_url(worksection), timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.text
    assert '<html lang="en">' in page and "<title>" in page
    assert '<label for="email">' in page and '<label for="password">' in page
    forms, alerts = parse_forms(page)
    assert alerts == []
    (form,) = forms
    assert form.method == "post" and form.action == "/oauth2/authorize"
    assert form.values["state"] == "state-123"
    assert form.values["redirect_uri"] == REDIRECT_URI
    assert {"email", "password"} <= set(form.inputs)
    assert ("decision", "approve") in form.buttons and ("decision", "deny") in form.buttons
    assert "projects_read" in page


def test_state_is_escaped_in_the_page(worksection: WorksectionSandbox) -> None:
    response = requests.get(authorize_url(worksection, state='"><script>x</script>'), timeout=5)
    assert "<script>x" not in response.text
    (form,), _ = parse_forms(response.text)
    assert form.values["state"] == '"><script>x</script>'


def test_unknown_client_gets_an_error_page_not_a_redirect(worksection: WorksectionSandbox) -> None:
    response = requests.get(authorize_url(worksection, client_id="nope"), timeout=5, allow_redirects=False)
    assert response.status_code == 401
    assert "Location" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")
    _, alerts = parse_forms(response.text)
    assert alerts and "Client authentication failed" in alerts[0]


def test_unregistered_redirect_uri_gets_an_error_page(worksection: WorksectionSandbox) -> None:
    worksection.knobs.redirect_uris = ("https://other.example.com/cb",)
    response = requests.get(authorize_url(worksection), timeout=5, allow_redirects=False)
    assert response.status_code == 400 and "Location" not in response.headers
    worksection.knobs.redirect_uris = (REDIRECT_URI,)
    assert requests.get(authorize_url(worksection), timeout=5).status_code == 200


def test_wrong_response_type_redirects_with_an_error(worksection: WorksectionSandbox) -> None:
    response = requests.get(authorize_url(worksection, response_type="token"), timeout=5, allow_redirects=False)
    assert response.status_code == 302
    assert query_of(response.headers["Location"]) == {"error": "unsupported_response_type", "state": "state-123"}


def test_unknown_scope_redirects_with_invalid_scope(worksection: WorksectionSandbox) -> None:
    response = requests.get(authorize_url(worksection, scope="projects_read,root"), timeout=5, allow_redirects=False)
    assert query_of(response.headers["Location"])["error"] == "invalid_scope"


def test_space_separated_scopes_are_accepted(worksection: WorksectionSandbox) -> None:
    response = requests.get(authorize_url(worksection, scope="projects_read tasks_write"), timeout=5)
    assert response.status_code == 200


def test_approve_redirects_with_code_and_state(worksection: WorksectionSandbox) -> None:
    code = get_code(worksection)
    assert code.startswith("def50200")
    assert worksection.calls["authorize"] == 2  # the page, then the form post


def test_deny_redirects_with_access_denied(worksection: WorksectionSandbox) -> None:
    with requests.Session() as session:
        location = submit_consent(
            session, authorize_url(worksection), email="bob@example.com", password="x", approve=False
        )
    query = query_of(location)
    assert query["error"] == "access_denied" and query["state"] == "state-123"
    assert "code" not in query


def test_wrong_password_shows_the_form_again_with_an_alert(worksection: WorksectionSandbox) -> None:
    response = requests.post(
        worksection.authorize_url,
        data={
            "client_id": worksection.client_id,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "state": "s",
            "email": "bob@example.com",
            "password": "wrong-password",
            "decision": "approve",
        },
        timeout=5,
        allow_redirects=False,
    )
    assert response.status_code == 200
    assert "wrong-password" not in response.text
    (form,), alerts = parse_forms(response.text)
    assert alerts == ["Incorrect e-mail or password."]
    assert form.values["email"] == "bob@example.com" and form.values["password"] == ""
    with pytest.raises(ConsentFailed, match="Incorrect"), requests.Session() as session:
        submit_consent(session, authorize_url(worksection), email="bob@example.com", password="wrong")


def test_user_with_several_accounts_chooses_one(worksection: WorksectionSandbox) -> None:
    with requests.Session() as session:
        first = session.post(
            worksection.authorize_url,
            data={
                "client_id": worksection.client_id,
                "response_type": "code",
                "redirect_uri": REDIRECT_URI,
                "email": "carol@example.com",
                "password": "carol-password-1",
                "decision": "approve",
            },
            timeout=5,
            allow_redirects=False,
        )
        assert first.status_code == 200
        (form,), _ = parse_forms(first.text)
        assert form.radios == {"account": ["alpha", "beta"]}
        assert "password" not in form.values and "carol-password-1" not in first.text
        assert "<legend>" in first.text
    code = get_code(worksection, "carol@example.com", "carol-password-1", account="beta")
    body = exchange(worksection, code).json()
    assert body["account_url"] == "https://beta.worksection.com"


def test_account_choice_is_required_and_checked(worksection: WorksectionSandbox) -> None:
    with pytest.raises(ConsentFailed, match="choose an account"), requests.Session() as session:
        submit_consent(session, authorize_url(worksection), email="carol@example.com", password="carol-password-1")
    with pytest.raises(ConsentFailed, match="Choose one of your accounts"), requests.Session() as session:
        submit_consent(
            session,
            authorize_url(worksection),
            email="carol@example.com",
            password="carol-password-1",
            account="gamma",
        )


# --- PKCE, as league/oauth2-server checks it ---------------------------------------------------------

# RFC 7636 Appendix B: computed independently of tokenbroker's own pkce_challenge.
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
OTHER_VERIFIER = "x" * 43  # well-formed, but not the one behind RFC_CHALLENGE
S256 = {"code_challenge": RFC_CHALLENGE, "code_challenge_method": "S256"}
LEAGUE_INVALID_GRANT = (
    "The provided authorization grant (e.g., authorization code, resource owner credentials) or refresh token "
    "is invalid, expired, revoked, does not match the redirection URI used in the authorization request, "
    "or was issued to another client."
)


def test_injected_code_without_the_verifier_is_refused(worksection: WorksectionSandbox) -> None:
    """RFC 9700 section 4.5: a leaked code replayed by someone who lacks the verifier gets nothing."""
    code = get_code(worksection, **S256)
    missing = exchange(worksection, code)
    assert missing.status_code == 400
    assert missing.json() == {"error": "invalid_request", "errorDescription": "Check the `code_verifier` parameter"}
    wrong = exchange(worksection, code, code_verifier=OTHER_VERIFIER)
    assert wrong.status_code == 400
    assert wrong.json() == {"error": "invalid_grant", "errorDescription": "Failed to verify `code_verifier`."}
    malformed = exchange(worksection, code, code_verifier="too-short")
    assert malformed.json() == {
        "error": "invalid_request",
        "errorDescription": "Code Verifier must follow the specifications of RFC-7636.",
    }
    assert worksection.outcomes["authorization_code"] == 0
    # league revokes a code only once it has issued tokens: the rightful client still gets through.
    good = exchange(worksection, code, code_verifier=RFC_VERIFIER)
    assert good.status_code == 200, good.text
    assert "access_token" in good.json()
    assert worksection.outcomes["authorization_code"] == 1
    assert exchange(worksection, code, code_verifier=RFC_VERIFIER).json()["errorDescription"] == (
        "Authorization code has been revoked"
    )


def test_a_verifier_for_another_flow_does_not_redeem_the_code(worksection: WorksectionSandbox) -> None:
    verifier, challenge = new_pkce_pair()
    ours = get_code(worksection, code_challenge=challenge, code_challenge_method="S256")
    theirs = get_code(worksection, **S256)
    # The attacker holds a valid (verifier, code) pair of their own flow and our leaked code.
    assert exchange(worksection, ours, code_verifier=RFC_VERIFIER).json()["error"] == "invalid_grant"
    assert exchange(worksection, theirs, code_verifier=verifier).json()["error"] == "invalid_grant"
    assert exchange(worksection, ours, code_verifier=verifier).status_code == 200


def test_wrong_verifier_in_the_league_9_dialect(worksection: WorksectionSandbox) -> None:
    worksection.knobs.league_version = 9
    response = exchange(worksection, get_code(worksection, **S256), code_verifier=OTHER_VERIFIER)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": LEAGUE_INVALID_GRANT,
        "message": LEAGUE_INVALID_GRANT,
        "hint": "Failed to verify `code_verifier`.",
    }


def test_missing_verifier_follows_the_invalid_request_status_knob(worksection: WorksectionSandbox) -> None:
    worksection.knobs.invalid_request_status = 200
    response = exchange(worksection, get_code(worksection, **S256))
    assert response.status_code == 200
    assert response.json()["errorDescription"] == "Check the `code_verifier` parameter"
    assert "access_token" not in response.json()


def test_plain_challenge_and_the_default_method(worksection: WorksectionSandbox) -> None:
    plain = "p" * 50
    explicit = get_code(worksection, code_challenge=plain, code_challenge_method="plain")
    assert exchange(worksection, explicit, code_verifier=RFC_VERIFIER).json()["error"] == "invalid_grant"
    assert exchange(worksection, explicit, code_verifier=plain).status_code == 200
    # league reads a challenge without a method as plain: S256's verifier does not match it.
    implicit = get_code(worksection, code_challenge=RFC_CHALLENGE)
    assert exchange(worksection, implicit, code_verifier=RFC_VERIFIER).json()["error"] == "invalid_grant"
    assert exchange(worksection, implicit, code_verifier=RFC_CHALLENGE).status_code == 200


def test_the_challenge_survives_the_account_choice(worksection: WorksectionSandbox) -> None:
    code = get_code(worksection, "carol@example.com", "carol-password-1", account="beta", **S256)
    assert exchange(worksection, code).json()["errorDescription"] == "Check the `code_verifier` parameter"
    body = exchange(worksection, code, code_verifier=RFC_VERIFIER).json()
    assert body["account_url"] == "https://beta.worksection.com"


def test_without_a_challenge_nothing_changes(worksection: WorksectionSandbox) -> None:
    assert exchange(worksection, get_code(worksection)).status_code == 200
    # ...except that a stray verifier is refused (league >= 8.4 blocks this PKCE downgrade).
    stray = exchange(worksection, get_code(worksection), code_verifier=RFC_VERIFIER)
    assert stray.json() == {
        "error": "invalid_request",
        "errorDescription": "code_verifier received when no code_challenge is present",
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"code_challenge": RFC_CHALLENGE, "code_challenge_method": "S512"}, "must be one of `S256`, `plain`"),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "specifications of RFC-7636"),
    ],
)
def test_bad_challenges_get_an_error_page(
    worksection: WorksectionSandbox, params: dict[str, str], message: str
) -> None:
    response = requests.get(authorize_url(worksection, **params), timeout=5, allow_redirects=False)
    assert response.status_code == 400 and "Location" not in response.headers
    _, alerts = parse_forms(response.text)
    assert alerts and message in alerts[0]


def test_burn_code_on_failed_pkce_knob(worksection: WorksectionSandbox) -> None:
    worksection.knobs.burn_code_on_failed_pkce = True
    code = get_code(worksection, **S256)
    assert exchange(worksection, code, code_verifier=OTHER_VERIFIER).json()["error"] == "invalid_grant"
    again = exchange(worksection, code, code_verifier=RFC_VERIFIER)
    assert again.json()["errorDescription"] == "Authorization code has been revoked"


# --- code exchange -----------------------------------------------------------------------------


def test_exchange_answers_the_documented_shape(worksection: WorksectionSandbox) -> None:
    body = connect(worksection)
    assert set(body) == {"token_type", "expires_in", "access_token", "refresh_token", "account_url"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["refresh_token"].startswith("def50200")
    assert body["account_url"] == "https://acme.worksection.com"
    header, payload, signature = body["access_token"].split(".")
    assert b64json(header)["alg"] == "RS256"
    claims = b64json(payload)
    assert claims["aud"] == worksection.client_id
    assert claims["scopes"] == ["projects_read", "users_read"]
    assert len(base64.urlsafe_b64decode(signature + "==")) == 256
    assert worksection.outcomes["authorization_code"] == 1


def test_code_is_single_use(worksection: WorksectionSandbox) -> None:
    code = get_code(worksection)
    assert exchange(worksection, code).status_code == 200
    again = exchange(worksection, code)
    assert again.status_code == 400
    assert again.json() == {"error": "invalid_request", "errorDescription": "Authorization code has been revoked"}


def test_code_errors_can_come_with_http_200(worksection: WorksectionSandbox) -> None:
    worksection.knobs.invalid_request_status = 200
    code = get_code(worksection)
    exchange(worksection, code)
    again = exchange(worksection, code)
    assert again.status_code == 200
    assert again.json()["errorDescription"] == "Authorization code has been revoked"
    assert "access_token" not in again.json()


def test_code_expires_after_ten_minutes(worksection: WorksectionSandbox, clock: ManualClock) -> None:
    code = get_code(worksection)
    clock.advance(600)
    response = exchange(worksection, code)
    assert response.status_code == 400
    assert response.json()["errorDescription"] == "Authorization code has expired"


def test_code_ttl_knob(worksection: WorksectionSandbox, clock: ManualClock) -> None:
    worksection.knobs.code_ttl = 5
    code = get_code(worksection)
    clock.advance(4)
    assert exchange(worksection, code).status_code == 200


@pytest.mark.parametrize(
    ("overrides", "description"),
    [
        ({"redirect_uri": "https://app.example.com/other"}, "Invalid redirect URI"),
        ({"code": "def50200garbage"}, "Cannot decrypt the authorization code"),
        ({"code": ""}, "Check the `code` parameter"),
        ({"grant_type": ""}, "Check the `grant_type` parameter"),
    ],
)
def test_exchange_invalid_requests(
    worksection: WorksectionSandbox, overrides: dict[str, str], description: str
) -> None:
    code = overrides.pop("code", None)
    response = exchange(worksection, get_code(worksection) if code is None else code, **overrides)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "errorDescription": description}


def test_code_is_bound_to_its_client(worksection: WorksectionSandbox) -> None:
    code = get_code(worksection)
    worksection.add_client("other", "other-secret")
    response = exchange(worksection, code, client_id="other", client_secret="other-secret")
    assert response.json()["errorDescription"] == "Authorization code was not issued to this client"


def test_invalid_client_comes_with_http_200_and_camel_case(worksection: WorksectionSandbox) -> None:
    response = exchange(worksection, get_code(worksection), client_secret="wrong")
    assert response.status_code == 200
    assert response.json() == {"error": "invalid_client", "errorDescription": "Client authentication failed"}
    worksection.knobs.invalid_client_status = 401
    assert exchange(worksection, "x", client_secret="wrong").status_code == 401


def test_client_credentials_in_basic_auth_are_accepted(worksection: WorksectionSandbox) -> None:
    response = requests.post(
        worksection.token_url,
        data={"grant_type": "authorization_code", "code": get_code(worksection), "redirect_uri": REDIRECT_URI},
        auth=(worksection.client_id, worksection.client_secret),
        timeout=5,
    )
    assert response.status_code == 200 and "access_token" in response.json()


def test_token_url_does_not_refresh(worksection: WorksectionSandbox) -> None:
    body = connect(worksection)
    response = exchange(worksection, "", grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert "access_token" not in response.json()
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


# --- refresh -----------------------------------------------------------------------------------


def test_refresh_rotates_and_kills_both_old_tokens(worksection: WorksectionSandbox) -> None:
    first = connect(worksection)
    assert api(worksection, first["access_token"]).status_code == 200
    response = refresh(worksection, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert set(second) == {"token_type", "expires_in", "access_token", "refresh_token"}  # no account_url
    assert second["refresh_token"] != first["refresh_token"]
    dead_access = api(worksection, first["access_token"])
    assert dead_access.status_code == 401
    assert dead_access.json()["message"] == "Access token has been revoked"
    assert resource(worksection, first["access_token"]).status_code == 401
    dead_refresh = refresh(worksection, first["refresh_token"])
    assert dead_refresh.status_code == 400
    assert dead_refresh.json() == {"error": "invalid_request", "errorDescription": "Cannot decrypt the refresh token"}
    assert api(worksection, second["access_token"]).status_code == 200
    third = refresh(worksection, second["refresh_token"]).json()
    assert api(worksection, second["access_token"]).status_code == 401
    assert api(worksection, third["access_token"]).status_code == 200
    assert worksection.refreshes == 2


def test_refresh_keeps_the_account(worksection: WorksectionSandbox) -> None:
    code = get_code(worksection, "carol@example.com", "carol-password-1", account="beta")
    first = exchange(worksection, code).json()
    worksection.knobs.refresh_includes_account_url = True
    second = refresh(worksection, first["refresh_token"]).json()
    assert second["account_url"] == "https://beta.worksection.com"
    assert resource(worksection, second["access_token"]).json()["account_url"] == "https://beta.worksection.com"


def test_dead_refresh_token_with_http_200(worksection: WorksectionSandbox) -> None:
    worksection.knobs.invalid_request_status = 200
    response = refresh(worksection, "def50200" + "0" * 32)
    assert response.status_code == 200
    assert response.json()["errorDescription"] == "Cannot decrypt the refresh token"


def test_league_9_style_errors(worksection: WorksectionSandbox, clock: ManualClock) -> None:
    worksection.knobs.league_version = 9
    first = connect(worksection)
    refresh(worksection, first["refresh_token"])
    revoked = refresh(worksection, first["refresh_token"])
    assert revoked.status_code == 400
    assert revoked.json() == {
        "error": "invalid_grant",
        "error_description": "The refresh token is invalid.",
        "message": "The refresh token is invalid.",
        "hint": "Token has been revoked",
    }
    fresh = worksection.issue_tokens("bob@example.com")
    clock.advance(7200)
    assert refresh(worksection, fresh["refresh_token"]).json()["hint"] == "Token has expired"
    bad_client = refresh(worksection, fresh["refresh_token"], client_secret="wrong").json()
    assert bad_client == {
        "error": "invalid_client",
        "error_description": "Client authentication failed",
        "message": "Client authentication failed",
    }


def test_refresh_token_is_bound_to_its_client(worksection: WorksectionSandbox) -> None:
    body = connect(worksection)
    worksection.add_client("other", "other-secret")
    response = refresh(worksection, body["refresh_token"], client_id="other", client_secret="other-secret")
    assert response.json()["errorDescription"] == "Token is not linked to client"
    assert refresh(worksection, body["refresh_token"]).status_code == 200  # still alive


def test_refresh_requires_the_refresh_grant_type(worksection: WorksectionSandbox) -> None:
    body = connect(worksection)
    response = refresh(worksection, body["refresh_token"], grant_type="authorization_code")
    assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"


def test_refresh_with_invalid_client(worksection: WorksectionSandbox) -> None:
    body = connect(worksection)
    response = refresh(worksection, body["refresh_token"], client_secret="wrong")
    assert response.status_code == 200
    assert response.json()["error"] == "invalid_client"


def test_token_type_knob(worksection: WorksectionSandbox) -> None:
    worksection.knobs.token_type = "Bearer"
    assert connect(worksection)["token_type"] == "Bearer"


def test_account_url_template_can_point_at_the_sandbox(worksection: WorksectionSandbox) -> None:
    worksection.knobs.account_url_template = "{url}"
    assert connect(worksection)["account_url"] == worksection.url
    worksection.knobs.account_url_template = "https://{account}.ws.test:{port}"
    assert connect(worksection)["account_url"] == f"https://acme.ws.test:{worksection.port}"


# --- user info and API -------------------------------------------------------------------------


def test_resource_returns_the_user(worksection: WorksectionSandbox) -> None:
    body = connect(worksection)
    response = resource(worksection, body["access_token"])
    assert response.status_code == 200
    assert response.json() == {
        "id": "1",
        "first_name": "Bob",
        "last_name": "User",
        "email": "bob@example.com",
        "account_url": "https://acme.worksection.com",
    }


def test_resource_rejects_bad_client_and_dead_token(worksection: WorksectionSandbox) -> None:
    body = connect(worksection)
    assert resource(worksection, body["access_token"], client_secret="wrong").json()["error"] == "invalid_client"
    worksection.expire_access_tokens()
    expired = resource(worksection, body["access_token"])
    assert expired.status_code == 401
    assert expired.json() == {"error": "access_denied", "errorDescription": "Access token is expired"}


def test_api_answers_projects(worksection: WorksectionSandbox) -> None:
    response = api(worksection, connect(worksection)["access_token"])
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["data"][0]["name"] == "Sandbox project"


def test_api_rejects_expired_and_missing_tokens(worksection: WorksectionSandbox, clock: ManualClock) -> None:
    body = connect(worksection)
    clock.advance(3600)
    expired = api(worksection, body["access_token"])
    assert expired.status_code == 401 and expired.json()["message"] == "Access token is expired"
    assert api(worksection, None).status_code == 401
    assert api(worksection, "not-a-token").json()["message"] == "Access token could not be verified"


def test_api_business_errors_come_with_http_200(worksection: WorksectionSandbox) -> None:
    response = api(worksection, connect(worksection)["access_token"], action="drop_tables")
    assert response.status_code == 200 and response.json()["status"] == "error"


def test_revoke_refresh_tokens_helper(worksection: WorksectionSandbox) -> None:
    body = connect(worksection)
    assert worksection.revoke_refresh_tokens() == 1
    assert refresh(worksection, body["refresh_token"]).status_code == 400


def test_real_default_lifetimes(clock: ManualClock) -> None:
    with WorksectionSandbox(clock=clock) as sandbox:
        sandbox.add_user("d@example.com", "password-d")
        body = sandbox.issue_tokens("d@example.com")
        assert body["expires_in"] == 86400
        clock.advance(29 * 86400)
        assert refresh(sandbox, body["refresh_token"]).status_code == 200
