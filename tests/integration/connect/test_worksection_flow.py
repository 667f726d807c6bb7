"""Authorization-code flow: connect link -> Worksection sandbox's real sign-in form -> callback."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from tokenbroker.errors import (
    ConnectionNotFound,
    ProviderError,
    ProviderErrorKind,
)
from tokenbroker.events import EventType
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import ConnectionStatus
from tokenbroker.providers import pkce_challenge
from tokenbroker.schedule import next_refresh_at

from tests.integration.connect.conftest import WS_EMAIL, WS_PASSWORD
from tests.integration.connect.harness import PUBLIC_BASE_URL, RETURN_BASE, Answer, Harness

KEY = ConnectionKey("worksection", "team-42")


def start(h: Harness, **options: object) -> Answer:
    """Open a fresh connect link: the handler answers with a redirect to the provider."""
    answer = h.get(h.link("worksection", KEY.connection_id, **options))  # type: ignore[arg-type]
    assert answer.status == 302, answer.body
    return answer


def sign_in(h: Harness, authorize: Answer, *, approve: bool = True) -> str:
    return h.consent(authorize.location, email=WS_EMAIL, password=WS_PASSWORD, account="acme", approve=approve)


def assert_nothing_stored(h: Harness, key: ConnectionKey = KEY) -> None:
    assert h.connections.get(key) is None
    with pytest.raises(ConnectionNotFound):
        h.tokens.get(key)
    assert h.events.events == []


def test_full_flow_redirects_back_with_the_connection(harness: Harness) -> None:
    h = harness
    authorize = start(h, return_to=RETURN_BASE + "?tab=integrations", metadata={"tenant": "t-1"})

    target = urlsplit(authorize.location)
    params = parse_qs(target.query)
    assert f"{target.scheme}://{target.netloc}{target.path}" == h.worksection.authorize_url
    assert params["redirect_uri"] == [f"{PUBLIC_BASE_URL}/callback/worksection"]
    assert params["client_id"] == [h.worksection.client_id]
    assert params["response_type"] == ["code"]
    assert len(params["state"][0]) >= 22  # >= 128 bits of URL-safe base64
    # PKCE is on for Worksection: the callback's exchange below only succeeds with the verifier.
    assert params["code_challenge_method"] == ["S256"]
    assert len(params["code_challenge"][0]) == 43

    callback = sign_in(h, authorize)
    assert callback.startswith(f"{PUBLIC_BASE_URL}/callback/worksection?")
    done = h.get(callback)

    assert done.status == 302, done.body
    assert done.location.startswith(RETURN_BASE + "?tab=integrations&")
    assert done.location_query == {
        "tab": "integrations",
        "status": "connected",
        "provider": "worksection",
        "connection_id": KEY.connection_id,
    }
    assert done.headers["referrer-policy"] == "no-referrer"
    assert done.headers["cache-control"] == "no-store"

    stored = h.tokens.get(KEY)
    assert stored.generation == 1
    assert stored.status is ConnectionStatus.ACTIVE
    assert stored.login is None
    assert stored.token.refresh_token
    assert stored.metadata["account_url"] == "https://acme.worksection.com"
    assert stored.metadata["user_email"] == WS_EMAIL
    assert stored.metadata["tenant"] == "t-1"

    connection = h.connections.get(KEY)
    assert connection is not None
    assert connection.status is ConnectionStatus.ACTIVE
    assert connection.generation == 1
    assert connection.metadata == stored.metadata
    assert connection.expires_at == stored.token.expires_at
    assert connection.refresh_expires_at == stored.token.obtained_at + 30 * 86_400
    assert connection.next_refresh_at == next_refresh_at(
        stored.token.expires_at, stored.token.obtained_at, connection.refresh_expires_at, h.clock.now()
    )

    (event,) = h.events.events
    assert event.type is EventType.CONNECTION_CREATED
    assert (event.provider, event.connection_id, event.generation) == ("worksection", KEY.connection_id, 1)
    assert h.worksection.calls["token"] == 1
    assert h.worksection.calls["resource"] == 1


def test_without_return_to_shows_a_success_page(harness: Harness) -> None:
    h = harness
    done = h.get(sign_in(h, start(h)))
    assert done.status == 200
    assert "Worksection account" in done.body
    assert WS_EMAIL in done.body
    assert done.headers["content-type"].startswith("text/html")
    assert done.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in done.headers["content-security-policy"]
    assert h.tokens.get(KEY).generation == 1


def test_opening_a_link_twice_works_and_a_completed_flow_ends_it(harness: Harness) -> None:
    """A link preview (or a second tab) opening the link must not burn it; one completion does."""
    h = harness
    path = h.link("worksection", KEY.connection_id)
    preview = h.get(path)
    assert preview.status == 302
    second = h.get(path)
    assert second.status == 302
    first_state = parse_qs(urlsplit(preview.location).query)["state"][0]
    assert parse_qs(urlsplit(second.location).query)["state"][0] != first_state  # each opening its own state
    assert h.get(sign_in(h, second)).status == 200
    assert h.tokens.get(KEY).generation == 1
    again = h.get(path)
    assert again.status == 404
    assert "already been used" in again.body
    # The preview's state is still unspent, but the link it belongs to has completed: nothing is exchanged.
    late = h.get(sign_in(h, preview))
    assert late.status == 404
    assert h.tokens.get(KEY).generation == 1


def test_an_expired_connect_link_is_refused(harness: Harness) -> None:
    h = harness
    path = h.link("worksection", KEY.connection_id)
    h.clock.advance(901)
    assert h.get(path).status == 404
    assert h.worksection.calls["authorize"] == 0


def test_connect_url_falls_back_to_the_request_domain(harness: Harness) -> None:
    h = harness
    h.service._public_base_url = None  # as on AWS without PUBLIC_BASE_URL
    link = h.service.create_session(
        "worksection", "x", request_base_url="https://abc123.execute-api.us-east-1.amazonaws.com"
    )
    assert link.connect_url.startswith("https://abc123.execute-api.us-east-1.amazonaws.com/connect/")
    answer = h.get(urlsplit(link.connect_url).path, domain="abc123.execute-api.us-east-1.amazonaws.com")
    redirect_uri = parse_qs(urlsplit(answer.location).query)["redirect_uri"][0]
    assert redirect_uri == "https://abc123.execute-api.us-east-1.amazonaws.com/callback/worksection"


def test_a_replayed_callback_is_refused_and_changes_nothing(harness: Harness) -> None:
    h = harness
    callback = sign_in(h, start(h))
    assert h.get(callback).status == 200  # no return_to: the success page
    replay = h.get(callback)
    assert replay.status == 400
    assert "cannot be completed" in replay.body
    assert h.tokens.get(KEY).generation == 1
    assert len(h.events.events) == 1
    assert h.worksection.calls["token"] == 1  # the replayed code never reached the provider


def test_a_forged_state_is_refused(harness: Harness) -> None:
    h = harness
    answer = h.get(
        "/callback/worksection?" + urlencode({"code": "forged-code-123456", "state": secrets.token_urlsafe(32)})
    )
    assert answer.status == 400
    assert h.worksection.calls["token"] == 0
    assert_nothing_stored(h)


@pytest.mark.parametrize("state", ["", "short", "x" * 44, "<script>alert(1)</script>", "a" * 42 + "/"])
def test_a_malformed_or_missing_state_is_refused(harness: Harness, state: str) -> None:
    answer = harness.get("/callback/worksection?" + urlencode({"code": "c0de-c0de-c0de", "state": state}))
    assert answer.status == 400
    assert "<script>" not in answer.body
    assert harness.worksection.calls["token"] == 0


def test_an_expired_state_is_refused(harness: Harness) -> None:
    h = harness
    callback = sign_in(h, start(h))
    h.clock.advance(601)
    answer = h.get(callback)
    assert answer.status == 400
    assert h.worksection.calls["token"] == 0
    assert_nothing_stored(h)


def test_a_state_used_on_another_providers_callback_is_refused_and_burned(harness: Harness) -> None:
    h = harness
    callback = sign_in(h, start(h))
    query = urlsplit(callback).query
    crossed = h.get("/callback/workly?" + query)
    assert crossed.status == 400
    # The state was consumed by the wrong callback: the genuine one can no longer use it.
    genuine = h.get(callback)
    assert genuine.status == 400
    assert h.worksection.calls["token"] == 0
    assert_nothing_stored(h)


def test_a_code_the_provider_refuses_shows_a_provider_error(harness: Harness) -> None:
    h = harness
    callback = sign_in(h, start(h))
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    params["code"] = "def50200" + secrets.token_hex(40)  # a code Worksection never issued
    answer = h.get("/callback/worksection?" + urlencode(params))
    assert answer.status == 502
    assert "could not complete" in answer.body or "refused" in answer.body
    assert h.worksection.calls["token"] == 1
    assert_nothing_stored(h)
    # The state is spent even though the exchange failed.
    assert h.get(callback).status == 400


def test_an_injected_code_is_refused_and_the_victims_flow_still_completes(harness: Harness) -> None:
    """RFC 9700 section 4.5: an attacker pastes a victim's leaked code into their own callback."""
    h = harness
    victim_callback = sign_in(h, start(h))
    victim = {k: v[0] for k, v in parse_qs(urlsplit(victim_callback).query).items()}
    attacker_key = ConnectionKey("worksection", "mallory-1")
    attacker_authorize = h.get(h.link("worksection", attacker_key.connection_id))
    attacker_state = parse_qs(urlsplit(attacker_authorize.location).query)["state"][0]

    injected = h.get("/callback/worksection?" + urlencode({"code": victim["code"], "state": attacker_state}))
    assert injected.status == 502  # the provider refused: the attacker's verifier is not the victim's
    assert h.worksection.calls["token"] == 1
    assert h.worksection.outcomes["authorization_code"] == 0
    assert_nothing_stored(h, attacker_key)
    assert_nothing_stored(h)

    # league keeps a code whose verifier check failed: the victim's own callback still works.
    assert h.get(victim_callback).status == 200
    assert h.tokens.get(KEY).metadata["user_email"] == WS_EMAIL
    assert h.connections.get(attacker_key) is None


def test_access_denied_shows_a_page_and_burns_the_state(harness: Harness) -> None:
    h = harness
    callback = sign_in(h, start(h), approve=False)
    assert parse_qs(urlsplit(callback).query)["error"] == ["access_denied"]
    answer = h.get(callback)
    assert answer.status == 403
    assert "Access was not granted" in answer.body
    assert_nothing_stored(h)
    assert h.get(callback).status == 400


def test_other_provider_errors_are_escaped_on_the_page(harness: Harness) -> None:
    h = harness
    state = parse_qs(urlsplit(start(h).location).query)["state"][0]
    evil = '<script>alert("x")</script>'
    query = urlencode({"state": state, "error": evil, "error_description": evil, "error_uri": evil})
    answer = h.get("/callback/worksection?" + query)
    assert answer.status == 502
    assert "<script" not in answer.body
    assert "scriptalertxscript" in answer.body  # the code is shown reduced to harmless characters
    assert_nothing_stored(h)


def test_html_in_the_provider_path_is_escaped(harness: Harness) -> None:
    answer = harness.get("/callback/%3Cscript%3Ealert(1)%3C%2Fscript%3E?state=" + "a" * 43)
    assert answer.status in (400, 404)
    assert "<script>" not in answer.body


def test_a_repeated_state_parameter_is_refused(harness: Harness) -> None:
    h = harness
    state = parse_qs(urlsplit(start(h).location).query)["state"][0]
    answer = h.get(f"/callback/worksection?state={state}&state={state}&code=abcdefgh12345")
    assert answer.status == 400
    assert h.worksection.calls["token"] == 0


def test_a_transient_token_failure_stores_nothing(harness: Harness) -> None:
    h = harness
    callback = sign_in(h, start(h))
    h.worksection.faults.fail(503, endpoint="token")
    answer = h.get(callback)
    assert answer.status in (502, 503)
    assert "Nothing was stored" in answer.body
    assert_nothing_stored(h)


def test_reconnecting_a_needs_reauth_connection_bumps_the_generation(harness: Harness) -> None:
    h = harness
    h.get(sign_in(h, start(h)))
    owner = "refresher-1"
    assert h.connections.acquire_lease(KEY, owner, 90) is not None
    h.connections.mark_needs_reauth(
        KEY, owner, ProviderError(ProviderErrorKind.INVALID_CREDENTIALS, "grant revoked", provider="worksection")
    )
    assert h.connections.get(KEY).status is ConnectionStatus.NEEDS_REAUTH  # type: ignore[union-attr]

    done = h.get(sign_in(h, start(h, return_to=RETURN_BASE)))
    assert done.status == 302
    assert done.location_query["status"] == "connected"

    connection = h.connections.get(KEY)
    assert connection is not None
    assert connection.status is ConnectionStatus.ACTIVE
    assert connection.generation == 2
    assert connection.last_error is None
    assert connection.next_refresh_at is not None
    stored = h.tokens.get(KEY)
    assert stored.generation == 2
    assert stored.status is ConnectionStatus.ACTIVE
    assert [e.type for e in h.events.events] == [EventType.CONNECTION_CREATED, EventType.CONNECTION_REAUTHORIZED]
    assert h.events.events[-1].generation == 2


def test_pkce_providers_get_a_challenge_and_the_state_keeps_the_verifier(harness: Harness) -> None:
    h = harness
    answer = h.get(h.link("acme", "acme-1", scopes=["openid", "email"]))
    assert answer.status == 302
    params = {k: v[0] for k, v in parse_qs(urlsplit(answer.location).query).items()}
    assert answer.location.startswith("https://login.acme.example/authorize?")
    assert params["code_challenge_method"] == "S256"
    assert params["scope"] == "openid email"
    pending = h.onetime.consume_state(params["state"])
    assert pending is not None
    assert pending.code_verifier is not None
    assert pkce_challenge(pending.code_verifier) == params["code_challenge"]
    assert pending.redirect_uri == f"{PUBLIC_BASE_URL}/callback/acme"
    assert pending.code_verifier not in answer.location


def test_no_page_redirect_or_log_line_holds_a_secret(harness: Harness) -> None:
    h = harness
    callback = sign_in(h, start(h, return_to=RETURN_BASE))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    h.get(callback)
    h.get(callback)  # a replay, so the failure paths log too
    stored = h.tokens.get(KEY)
    secrets_used = [code, stored.token.access_token, stored.token.refresh_token or "", WS_PASSWORD]
    for answer in h.answers:
        text = answer.body + " ".join(answer.headers.values())
        for secret in secrets_used:
            assert secret not in text
    lines = h.log_lines()
    assert any("connection saved" in line for line in lines)
    for line in lines:
        for secret in secrets_used:
            assert secret not in line
    for event in h.events.events:
        assert not any(secret in str(event.detail()) for secret in secrets_used)


def test_too_many_query_parameters_is_a_400_page(harness: Harness) -> None:
    query = "&".join(f"p{i}=v" for i in range(40))
    answer = harness.get("/callback/worksection?" + query)
    assert answer.status == 400
    assert answer.headers["content-type"].startswith("text/html")
