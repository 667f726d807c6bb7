"""The vend function end to end: payload-2.0 events in, real stores on moto, the refresh engine and
the Worksection sandbox behind it."""

from __future__ import annotations

import hashlib
import io
import logging
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from tokenbroker.aws import AwsCallCounter
from tokenbroker.clock import ManualClock
from tokenbroker.errors import ConnectionNotFound
from tokenbroker.events import EventType
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import ConnectionStatus
from tokenbroker.observability import logger

from tests.integration.vending.stack import DAY, RETURN_BASE, Stack
from tests.unit.vending.apigw import API_DOMAIN, LambdaContext, iam_event, invoke

KEY = ConnectionKey("worksection", "acme-1")
TOKEN_PATH = "/tokens/worksection/acme-1"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def api_status(stack: Stack, token: str) -> int:
    """What the third-party API says about a token."""
    return requests.get(
        stack.worksection.api_url,
        params={"action": "get_projects"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    ).status_code


# --- vend ----------------------------------------------------------------------------------------


def test_a_fresh_vend_costs_exactly_one_aws_call(stack: Stack, vend_handler: ModuleType) -> None:
    seeded = stack.seed("acme-1")
    with AwsCallCounter(stack.clients) as counter:
        answer = invoke(vend_handler, iam_event("GET", TOKEN_PATH))
    assert answer.status == 200
    assert answer.json["access_token"] == seeded.token.access_token
    assert answer.json["metadata"]["account_url"] == "https://acme.worksection.com"
    assert seeded.token.refresh_token is not None and seeded.token.refresh_token not in answer.body
    assert counter.calls == {"GetSecretValue": 1}
    assert stack.worksection.calls["refresh"] == 0


def test_the_direct_invoke_vend_also_costs_one_aws_call(stack: Stack, vend_handler: ModuleType) -> None:
    seeded = stack.seed("acme-1")
    with AwsCallCounter(stack.clients) as counter:
        answer = vend_handler.lambda_handler(
            {"action": "vend", "provider": "worksection", "connection_id": "acme-1"}, LambdaContext()
        )
    assert answer["access_token"] == seeded.token.access_token
    assert counter.total == 1


def test_an_expiring_token_is_refreshed_once_and_the_old_one_dies(stack: Stack, vend_handler: ModuleType) -> None:
    seeded = stack.seed("acme-1", expires_in=30)

    answer = invoke(vend_handler, iam_event("GET", TOKEN_PATH, query={"min_ttl": "60"}))

    assert answer.status == 200
    assert answer.json["access_token"] != seeded.token.access_token
    assert answer.json["generation"] == seeded.generation + 1
    assert answer.json["expires_in"] >= 60
    assert stack.worksection.calls["refresh"] == 1
    assert api_status(stack, answer.json["access_token"]) == 200
    assert api_status(stack, seeded.token.access_token) == 401  # Worksection rotation
    assert len(stack.events.of_type(EventType.TOKEN_REFRESHED)) == 1
    # The next vend is fresh again: no second refresh.
    again = invoke(vend_handler, iam_event("GET", TOKEN_PATH, query={"min_ttl": "60"}))
    assert again.json["access_token"] == answer.json["access_token"]
    assert stack.worksection.calls["refresh"] == 1


def test_a_dead_grant_is_409_needs_reauth_and_stays_so_without_provider_calls(
    stack: Stack, vend_handler: ModuleType
) -> None:
    stack.seed("acme-1", expires_in=30)
    stack.worksection.revoke_refresh_tokens()

    first = invoke(vend_handler, iam_event("GET", TOKEN_PATH))
    second = invoke(vend_handler, iam_event("GET", TOKEN_PATH))

    assert first.status == 409 and first.json["error"] == "needs_reauth"
    assert "/connect-sessions" in first.json["message"]
    assert second.status == 409
    assert stack.worksection.calls["refresh"] == 1
    assert stack.tokens.get(KEY).status is ConnectionStatus.NEEDS_REAUTH


def test_a_provider_outage_is_503_provider_unavailable_and_the_token_is_kept(
    stack: Stack, vend_handler: ModuleType
) -> None:
    seeded = stack.seed("acme-1", expires_in=30)
    stack.worksection.faults.fail(502, endpoint="refresh")

    answer = invoke(vend_handler, iam_event("GET", TOKEN_PATH))

    assert answer.status == 503 and answer.json["error"] == "provider_unavailable"
    assert int(answer.headers["retry-after"]) >= 1
    assert stack.tokens.get(KEY).token.access_token == seeded.token.access_token


def test_a_lease_held_elsewhere_is_503_refresh_in_progress_after_the_bounded_wait(
    stack: Stack, vend_handler: ModuleType, clock: ManualClock
) -> None:
    stack.seed("acme-1", expires_in=30)
    assert stack.connections.acquire_lease(KEY, "another-worker", 120) is not None
    started = clock.now()

    answer = invoke(vend_handler, iam_event("GET", TOKEN_PATH))

    assert answer.status == 503 and answer.json["error"] == "refresh_in_progress"
    assert int(answer.headers["retry-after"]) >= 1
    assert clock.now() - started == pytest.approx(3)  # the stack's wait_seconds, on the ManualClock
    assert stack.worksection.calls["refresh"] == 0


def test_unknown_connections_and_providers_are_404(stack: Stack, vend_handler: ModuleType) -> None:
    unknown = invoke(vend_handler, iam_event("GET", "/tokens/worksection/nobody"))
    assert unknown.status == 404 and unknown.json["error"] == "not_found"
    not_in_catalog = invoke(vend_handler, iam_event("GET", "/tokens/salesforce/x1"))
    assert not_in_catalog.status == 404 and not_in_catalog.json["error"] == "unknown_provider"


# --- compare-and-refresh -------------------------------------------------------------------------


def test_a_stale_rejected_hash_returns_the_newer_token_without_a_refresh(
    stack: Stack, vend_handler: ModuleType
) -> None:
    seeded = stack.seed("acme-1")
    rotated = invoke(vend_handler, iam_event("POST", TOKEN_PATH + "/refresh")).json  # forced
    assert stack.worksection.calls["refresh"] == 1

    answer = invoke(
        vend_handler,
        iam_event("POST", TOKEN_PATH + "/refresh", json_body={"rejected_token_sha256": sha(seeded.token.access_token)}),
    )

    assert answer.status == 200
    assert answer.json["access_token"] == rotated["access_token"]
    assert stack.worksection.calls["refresh"] == 1


def test_the_current_rejected_hash_refreshes(stack: Stack, vend_handler: ModuleType) -> None:
    seeded = stack.seed("acme-1")
    stack.worksection.expire_access_tokens()  # the third-party API now rejects it
    assert api_status(stack, seeded.token.access_token) == 401

    answer = invoke(
        vend_handler,
        iam_event("POST", TOKEN_PATH + "/refresh", json_body={"rejected_token_sha256": sha(seeded.token.access_token)}),
    )

    assert answer.status == 200 and answer.json["generation"] == seeded.generation + 1
    assert api_status(stack, answer.json["access_token"]) == 200
    assert stack.worksection.calls["refresh"] == 1


# --- connections ---------------------------------------------------------------------------------


def test_get_and_list_connections_show_status_never_tokens(stack: Stack, vend_handler: ModuleType) -> None:
    seeded = stack.seed("acme-1")
    stack.seed("acme-2")

    one = invoke(vend_handler, iam_event("GET", "/connections/worksection/acme-1"))
    listed = invoke(vend_handler, iam_event("GET", "/connections", query={"provider": "worksection", "limit": "1"}))
    rest = invoke(
        vend_handler,
        iam_event("GET", "/connections", query={"provider": "worksection", "cursor": listed.json["cursor"]}),
    )

    assert one.status == 200
    assert one.json["status"] == "active" and one.json["generation"] == seeded.generation
    assert one.json["metadata"] == {"user_email": "bob@example.com"}
    assert [c["connection_id"] for c in listed.json["connections"]] == ["acme-1"]
    assert [c["connection_id"] for c in rest.json["connections"]] == ["acme-2"] and rest.json["cursor"] is None
    for answer in (one, listed, rest):
        assert seeded.token.access_token not in answer.body
        assert "access_token" not in answer.body and "refresh_token" not in answer.body


def test_delete_disconnects_at_once(stack: Stack, vend_handler: ModuleType) -> None:
    stack.seed("acme-1")

    answer = invoke(vend_handler, iam_event("DELETE", "/connections/worksection/acme-1"))

    assert answer.status == 204
    with pytest.raises(ConnectionNotFound):
        stack.tokens.get(KEY)  # scheduled for deletion: no longer readable
    assert stack.connections.get(KEY) is None
    (event,) = stack.events.of_type(EventType.CONNECTION_DELETED)
    assert event.connection_id == "acme-1"
    assert invoke(vend_handler, iam_event("GET", TOKEN_PATH)).status == 404
    assert invoke(vend_handler, iam_event("DELETE", "/connections/worksection/acme-1")).status == 404


# --- connect sessions ----------------------------------------------------------------------------


def test_create_connect_session_answers_a_one_time_link_on_the_api_domain(
    stack: Stack, vend_handler: ModuleType
) -> None:
    answer = invoke(
        vend_handler,
        iam_event(
            "POST",
            "/connect-sessions",
            json_body={"provider": "worksection", "connection_id": "acme-9", "return_to": RETURN_BASE + "done"},
        ),
    )
    assert answer.status == 201
    link = urlsplit(answer.json["connect_url"])
    assert (link.scheme, link.netloc) == ("https", API_DOMAIN)
    assert link.path.startswith("/connect/")
    assert answer.json["expires_at"] > stack.clock.now()


def test_create_connect_session_refuses_a_foreign_return_url(stack: Stack, vend_handler: ModuleType) -> None:
    answer = invoke(
        vend_handler,
        iam_event(
            "POST",
            "/connect-sessions",
            json_body={"provider": "worksection", "connection_id": "acme-9", "return_to": "https://evil.example/"},
        ),
    )
    assert answer.status == 400 and answer.json["error"] == "bad_request"


def test_a_minute_old_day_token_is_not_refreshed_by_the_max_min_ttl(stack: Stack, vend_handler: ModuleType) -> None:
    stack.seed("acme-1", expires_in=DAY - 60)  # one minute old
    answer = invoke(vend_handler, iam_event("GET", TOKEN_PATH, query={"min_ttl": "86400"}))
    assert answer.status == 200
    assert stack.worksection.calls["refresh"] == 0


def test_no_token_reaches_the_logs(stack: Stack, vend_handler: ModuleType) -> None:
    powertools_logger: Any = logger  # Powertools' Logger proxies the standard handler methods
    stream = io.StringIO()
    capture = logging.StreamHandler(stream)
    capture.setFormatter(powertools_logger.registered_formatter)  # the production, redacting one
    powertools_logger.addHandler(capture)
    try:
        seeded = stack.seed("acme-1", expires_in=30)
        vended = invoke(vend_handler, iam_event("GET", TOKEN_PATH)).json
        rejected = {"rejected_token_sha256": sha(vended["access_token"])}
        assert invoke(vend_handler, iam_event("POST", TOKEN_PATH + "/refresh", json_body=rejected)).status == 200
        mistake = {"rejected_token": vended["access_token"]}  # a caller sending the token itself
        assert invoke(vend_handler, iam_event("POST", TOKEN_PATH + "/refresh", json_body=mistake)).status == 400
    finally:
        powertools_logger.removeHandler(capture)
    current = stack.tokens.get(KEY).token
    logged = stream.getvalue()
    assert "token refreshed" in logged  # the capture works
    secrets = [seeded.token.access_token, seeded.token.refresh_token, vended["access_token"]]
    secrets += [current.access_token, current.refresh_token]
    for secret in secrets:
        assert secret is not None and secret not in logged
