"""Application confirmation (confirm mode): a grant waits, pending, until the application's backend
vouches for the end user who completed the flow.

The attack it answers: Mallory creates a connect link for his connection and forwards it to
Alice; she completes it in her own browser (binding cannot tell). In confirm mode the grant stays
pending, is never vended, and the application, which knows that Alice (not Mallory) is signed in
where the browser lands, confirms as Alice: mismatch, discarded.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from tokenbroker.api.statuses import http_status
from tokenbroker.browser_binding import new_binding
from tokenbroker.connect import (
    Connected,
    ConnectSessionExpired,
    ConnectSessionNotCompleted,
    EndUserMismatch,
    SessionNotFound,
)
from tokenbroker.errors import (
    ConnectionNotFound,
    InvalidInput,
    PendingConfirmation,
)
from tokenbroker.events import EventType
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import ConnectionStatus
from tokenbroker.stores.tokens import PENDING_STAGE

from infra.sandboxes import submit_consent
from tests.integration.vending.stack import RETURN_BASE, WS_EMAIL, WS_PASSWORD, Stack
from tests.unit.vending.apigw import iam_event, invoke

KEY = ConnectionKey("worksection", "team-7")
ALICE_EMAIL, ALICE_PASSWORD = "alice@example.com", "alice-password-1"
BASE = "https://connect.example.test"


def complete(stack: Stack, session_id: str, *, email: str = WS_EMAIL, password: str = WS_PASSWORD) -> Connected:
    """One browser: open the link, approve at the sandbox, come back to the callback."""
    binding = new_binding()
    begun = stack.connect.begin(session_id, binding=binding, request_base_url=BASE)
    location = getattr(begun, "location", "")
    callback = submit_consent(requests.Session(), location, email=email, password=password)
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    return stack.connect.complete_callback("worksection", query, binding=binding)


def confirm_link(stack: Stack, end_user_id: str, connection_id: str = KEY.connection_id) -> str:
    link = stack.connect.create_session(
        "worksection",
        connection_id,
        return_to=RETURN_BASE + "done",
        end_user_id=end_user_id,
        confirm=True,
        request_base_url=BASE,
    )
    return link.session_id


def secret_stages(stack: Stack, key: ConnectionKey = KEY) -> dict[str, list[str]]:
    described = stack.clients.secretsmanager.describe_secret(SecretId=stack.tokens.secret_name(key))
    return {version: stages for version, stages in described["VersionIdsToStages"].items() if stages}


def test_a_new_connection_waits_pending_until_confirmed(stack: Stack) -> None:
    session_id = confirm_link(stack, "user-ann")
    done = complete(stack, session_id)
    assert done.pending
    query = parse_qs(urlsplit(done.redirect_to or "").query)
    assert query["status"] == ["pending_confirmation"]
    assert query["connect_session"] == [session_id]
    # Pending: listed, never vended, never refreshed, not in the due index, no event yet.
    connection = stack.connections.get(KEY)
    assert connection is not None and connection.status is ConnectionStatus.PENDING
    with pytest.raises(PendingConfirmation) as refused:
        stack.vending.vend(KEY, min_ttl=0)
    assert http_status(refused.value) == 409
    with pytest.raises(PendingConfirmation):
        stack.vending.refresh_rejected(KEY)
    assert stack.worksection.refreshes == 0
    assert list(stack.connections.due(stack.clock.now() + 10 * 86400)) == []
    assert stack.events.events == []

    confirmed = stack.connect.confirm(session_id, "user-ann")
    assert (confirmed.status, confirmed.generation) == (ConnectionStatus.ACTIVE, 1)
    vended = stack.vending.vend(KEY, min_ttl=0)
    assert vended.generation == 1
    assert [e.type for e in stack.events.events] == [EventType.CONNECTION_CREATED]
    assert PENDING_STAGE not in [stage for stages in secret_stages(stack).values() for stage in stages]
    # A confirmation is one-shot.
    with pytest.raises(SessionNotFound):
        stack.connect.confirm(session_id, "user-ann")


def test_a_forwarded_link_confirmed_as_another_end_user_is_discarded(stack: Stack) -> None:
    stack.worksection.add_user(ALICE_EMAIL, ALICE_PASSWORD, accounts=("alice-co",))
    session_id = confirm_link(stack, "mallory")  # Mallory's link, completed by Alice
    complete(stack, session_id, email=ALICE_EMAIL, password=ALICE_PASSWORD)
    with pytest.raises(EndUserMismatch) as refused:
        stack.connect.confirm(session_id, "alice")  # the app's signed-in user where the browser landed
    assert http_status(refused.value) == 403
    assert stack.connections.get(KEY) is None
    with pytest.raises(ConnectionNotFound):
        stack.tokens.get(KEY)
    with pytest.raises(ConnectionNotFound):
        stack.vending.vend(KEY)
    assert stack.events.events == []
    # Mallory cannot confirm it afterwards either: the grant is gone with the session.
    with pytest.raises(SessionNotFound):
        stack.connect.confirm(session_id, "mallory")


def test_a_reconnect_keeps_serving_the_old_grant_until_confirmed(stack: Stack) -> None:
    first = confirm_link(stack, "user-ann")
    complete(stack, first)
    stack.connect.confirm(first, "user-ann")
    old = stack.vending.vend(KEY, min_ttl=0)

    second = confirm_link(stack, "user-ann")
    complete(stack, second)
    connection = stack.connections.get(KEY)
    assert connection is not None and connection.status is ConnectionStatus.ACTIVE  # still the old grant
    assert stack.vending.vend(KEY, min_ttl=0).access_token == old.access_token
    stages = secret_stages(stack)
    current = next(v for v, labels in stages.items() if "AWSCURRENT" in labels)
    pending = next(v for v, labels in stages.items() if PENDING_STAGE in labels)
    assert current != pending  # the new grant waits beside the old one, which stays current

    confirmed = stack.connect.confirm(second, "user-ann")
    assert confirmed.generation == 2
    new = stack.vending.vend(KEY, min_ttl=0)
    assert (new.generation, new.access_token != old.access_token) == (2, True)
    assert [e.type for e in stack.events.events] == [EventType.CONNECTION_CREATED, EventType.CONNECTION_REAUTHORIZED]


def test_a_reconnect_confirmed_for_someone_else_keeps_the_old_grant(stack: Stack) -> None:
    first = confirm_link(stack, "user-ann")
    complete(stack, first)
    stack.connect.confirm(first, "user-ann")
    old = stack.vending.vend(KEY, min_ttl=0)
    second = confirm_link(stack, "user-ann")
    complete(stack, second)
    with pytest.raises(EndUserMismatch):
        stack.connect.confirm(second, "user-bob")
    assert stack.vending.vend(KEY, min_ttl=0).access_token == old.access_token
    connection = stack.connections.get(KEY)
    assert connection is not None and (connection.status, connection.generation) == (ConnectionStatus.ACTIVE, 1)
    assert PENDING_STAGE not in [stage for stages in secret_stages(stack).values() for stage in stages]


def test_unconfirmed_grants_are_discarded_when_the_session_expires(stack: Stack) -> None:
    session_id = confirm_link(stack, "user-ann")
    complete(stack, session_id)
    assert stack.connect.discard_expired_pending() == 0  # not expired yet
    stack.clock.advance(901)
    with pytest.raises(ConnectSessionExpired) as late:
        stack.connect.confirm(session_id, "user-ann")
    assert http_status(late.value) == 410
    assert stack.connect.discard_expired_pending() == 1
    assert stack.connections.get(KEY) is None
    with pytest.raises(ConnectionNotFound):
        stack.tokens.get(KEY)
    with pytest.raises(SessionNotFound):
        stack.connect.confirm(session_id, "user-ann")
    assert stack.connect.discard_expired_pending() == 0


def test_confirm_answers_for_unfinished_unknown_and_plain_sessions(stack: Stack) -> None:
    session_id = confirm_link(stack, "user-ann")
    with pytest.raises(ConnectSessionNotCompleted):
        stack.connect.confirm(session_id, "user-ann")
    with pytest.raises(SessionNotFound):
        stack.connect.confirm("A" * 43, "user-ann")
    with pytest.raises(SessionNotFound):
        stack.connect.confirm("../../etc", "user-ann")
    plain = stack.connect.create_session("worksection", "plain", request_base_url=BASE).session_id
    with pytest.raises(InvalidInput):
        stack.connect.confirm(plain, "user-ann")
    with pytest.raises(InvalidInput):
        stack.connect.confirm(session_id, "")
    with pytest.raises(InvalidInput):
        stack.connect.create_session("worksection", "x", confirm=True, request_base_url=BASE)  # no end_user_id
    with pytest.raises(InvalidInput):
        stack.connect.create_session("worksection", "x", end_user_id="u" * 257, request_base_url=BASE)


def test_a_newer_pending_grant_replaces_an_older_one(stack: Stack) -> None:
    older = confirm_link(stack, "user-ann")
    newer = confirm_link(stack, "user-ann")
    complete(stack, older)
    complete(stack, newer)
    with pytest.raises(ConnectSessionExpired):
        stack.connect.confirm(older, "user-ann")
    assert stack.connect.confirm(newer, "user-ann").status is ConnectionStatus.ACTIVE


def test_the_confirm_route_and_direct_invoke(stack: Stack, vend_handler: ModuleType) -> None:
    session_id = confirm_link(stack, "user-ann")
    complete(stack, session_id)
    wrong: Any = vend_handler.handle_direct(
        {"action": "confirm_connect_session", "session_id": session_id, "end_user_id": 7}
    )
    assert wrong[0] == 400
    path = f"/connect-sessions/{session_id}/confirm"
    answer = invoke(vend_handler, iam_event("POST", path, json_body={"end_user_id": "user-ann"}))
    assert answer.status == 200, answer.body
    assert (answer.json["status"], answer.json["generation"]) == ("active", 1)
    assert "access_token" not in answer.body
    again = vend_handler.handle_direct(
        {"action": "confirm_connect_session", "session_id": session_id, "end_user_id": "user-ann"}
    )
    assert again[0] == 404
