"""The engine against the Workly and Worksection sandboxes over real HTTP, on moto, with a ManualClock."""

from __future__ import annotations

import json

import pytest
import requests
from tokenbroker.errors import (
    ProviderErrorKind,
)
from tokenbroker.events import EventType
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import ConnectionStatus, PasswordLogin
from tokenbroker.refresh import RefreshOutcome

from infra.sandboxes import WorklySandbox, WorksectionSandbox
from infra.sandboxes.catalog import token_from_answer
from tests.integration.refresh.harness import DAY, WORKLY_EMAIL, WORKLY_PASSWORD, WS_EMAIL, Rig
from tests.support.errors import raises_kind

WS_KEY = ConnectionKey("worksection", "acme-bob")
WORKLY_KEY = ConnectionKey("workly", "ann")


def seed_worksection(rig: Rig, sandbox: WorksectionSandbox) -> None:
    rig.seed(WS_KEY, token_from_answer(sandbox.issue_tokens(WS_EMAIL), rig.clock.now()), metadata={"team": "a"})


def seed_workly(rig: Rig, *, remember_login: bool = False, password: str = WORKLY_PASSWORD) -> None:
    token = rig.providers["workly"].password_grant(username=WORKLY_EMAIL, password=WORKLY_PASSWORD)
    login = PasswordLogin(WORKLY_EMAIL, password) if remember_login else None
    rig.seed(WORKLY_KEY, token, login=login)


def api_status(sandbox: WorksectionSandbox, access_token: str) -> int:
    response = requests.get(
        sandbox.api_url,
        params={"action": "get_projects"},
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=5,
    )
    return response.status_code


def secret_text(rig: Rig, key: ConnectionKey) -> str:
    return rig.tokens.get(key).token.access_token


# --- success and rotation -------------------------------------------------------------------------


def test_worksection_two_rotations_kill_the_old_tokens(sandboxed: Rig, worksection: WorksectionSandbox) -> None:
    rig = sandboxed
    seed_worksection(rig, worksection)
    engine = rig.engine()
    seen = [rig.tokens.get(WS_KEY)]
    for generation in (2, 3):
        # Not due yet: nothing happens, the provider is not called.
        early = engine.refresh(WS_KEY)
        assert early.outcome is RefreshOutcome.NOT_NEEDED
        rig.advance_to_due(WS_KEY)
        result = engine.refresh(WS_KEY)
        assert result.outcome is RefreshOutcome.REFRESHED, result
        assert result.generation == generation and result.committed
        current = rig.tokens.get(WS_KEY)
        assert current.generation == generation and current.status is ConnectionStatus.ACTIVE
        previous = seen[-1]
        assert current.token.refresh_token != previous.token.refresh_token
        # Rotation killed the old access token at once, and the old refresh token too.
        assert api_status(worksection, previous.token.access_token) == 401
        assert api_status(worksection, current.token.access_token) == 200
        with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED):
            rig.providers["worksection"].refresh(previous.token)
        # account_url (omitted by the refresh answer) and metadata are kept.
        assert current.token.extra["account_url"] == "https://acme.worksection.com"
        assert current.metadata == {"team": "a"}
        item = rig.item(WS_KEY)
        assert item.generation == generation and item.lease is None and item.attempt is None
        assert item.expires_at == current.token.expires_at
        assert item.refresh_expires_at == current.token.obtained_at + 30 * DAY
        assert item.next_refresh_at == current.token.expires_at - 0.1 * DAY
        seen.append(current)
    assert worksection.refreshes == 2
    events = rig.events.of_type(EventType.TOKEN_REFRESHED)
    assert [(e.generation, e.reason) for e in events] == [(2, "scheduled"), (3, "scheduled")]
    for token in seen:
        assert token.token.access_token not in json.dumps([e.detail() for e in rig.events.events])
    assert rig.metrics.total("RefreshOutcome", provider="worksection", outcome="refreshed") == 2


def test_workly_two_rotations(sandboxed: Rig, workly: WorklySandbox) -> None:
    rig = sandboxed
    seed_workly(rig)
    engine = rig.engine()
    for generation in (2, 3):
        before = rig.tokens.get(WORKLY_KEY)
        rig.advance_to_due(WORKLY_KEY)
        result = engine.refresh(WORKLY_KEY)
        assert result.outcome is RefreshOutcome.REFRESHED
        current = rig.tokens.get(WORKLY_KEY)
        assert current.generation == generation
        assert current.token.refresh_token != before.token.refresh_token
        assert current.token.expires_at == int(rig.clock.now()) + 30 * 86400
        with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED):  # Workly rotation: the used refresh token is dead
            rig.providers["workly"].refresh(before.token)
        # 30-day token: refreshed 3 days ahead; the 60-day refresh token is no constraint.
        assert rig.item(WORKLY_KEY).next_refresh_at == current.token.expires_at - 3 * DAY
    assert workly.refreshes == 2


def test_answer_without_refresh_token_and_expires_in(sandboxed: Rig, workly: WorklySandbox) -> None:
    rig = sandboxed
    seed_workly(rig)
    before = rig.tokens.get(WORKLY_KEY)
    workly.faults.omit_fields("refresh_token", "expires_in", endpoint="token")
    rig.advance_to_due(WORKLY_KEY)
    result = rig.engine().refresh(WORKLY_KEY)
    assert result.outcome is RefreshOutcome.REFRESHED
    current = rig.tokens.get(WORKLY_KEY)
    assert current.token.access_token != before.token.access_token
    # Kept refresh token (the sandbox rotated it away, but the answer did not say so: our best).
    assert current.token.refresh_token == before.token.refresh_token
    # Catalog lifetime (30 days), never "does not expire".
    assert current.token.expires_at == int(rig.clock.now()) + 30 * 86400


def test_answer_without_account_url_keeps_it(sandboxed: Rig, worksection: WorksectionSandbox) -> None:
    rig = sandboxed
    seed_worksection(rig, worksection)
    worksection.knobs.refresh_includes_account_url = False
    rig.advance_to_due(WS_KEY)
    assert rig.engine().refresh(WS_KEY).outcome is RefreshOutcome.REFRESHED
    assert rig.tokens.get(WS_KEY).token.extra["account_url"] == "https://acme.worksection.com"


# --- dead grants ----------------------------------------------------------------------------------


def test_dead_grant_marks_needs_reauth(sandboxed: Rig, worksection: WorksectionSandbox) -> None:
    rig = sandboxed
    seed_worksection(rig, worksection)
    worksection.revoke_refresh_tokens()
    rig.advance_to_due(WS_KEY)
    result = rig.engine().refresh(WS_KEY)
    assert result.outcome is RefreshOutcome.NEEDS_REAUTH
    assert result.error is not None and result.error.kind is ProviderErrorKind.REAUTHORIZATION_REQUIRED
    secret = rig.tokens.get(WS_KEY)
    assert secret.status is ConnectionStatus.NEEDS_REAUTH and secret.generation == 2  # the mark is a write
    item = rig.item(WS_KEY)
    assert item.status is ConnectionStatus.NEEDS_REAUTH and item.lease is None and item.generation == 2
    assert item.last_error is not None and item.last_error.code == "needs_reauth"
    # Out of the due index: the sweep never picks it again.
    assert list(rig.connections.due(rig.clock.now() + 365 * DAY)) == []
    [event] = rig.events.of_type(EventType.CONNECTION_NEEDS_REAUTHORIZATION)
    assert event.connection_id == WS_KEY.connection_id and event.reason and event.reason.startswith("needs_reauth")
    assert rig.metrics.total("ConnectionsNeedingReauth", provider="worksection") == 1
    # Again: no provider call, same answer.
    calls = worksection.calls["refresh"]
    assert rig.engine().refresh(WS_KEY).outcome is RefreshOutcome.NEEDS_REAUTH
    assert worksection.calls["refresh"] == calls


def test_workly_dead_grant_reauthenticates_with_the_stored_login(sandboxed: Rig, workly: WorklySandbox) -> None:
    rig = sandboxed
    seed_workly(rig, remember_login=True)
    workly.revoke_refresh_tokens()
    rig.advance_to_due(WORKLY_KEY)
    result = rig.engine().refresh(WORKLY_KEY)
    assert result.outcome is RefreshOutcome.REAUTHENTICATED
    secret = rig.tokens.get(WORKLY_KEY)
    assert secret.generation == 2 and secret.status is ConnectionStatus.ACTIVE
    assert secret.login == PasswordLogin(WORKLY_EMAIL, WORKLY_PASSWORD)
    assert workly.outcomes["password"] == 2  # the seed and the re-login
    assert rig.item(WORKLY_KEY).status is ConnectionStatus.ACTIVE
    [event] = rig.events.of_type(EventType.TOKEN_REFRESHED)
    assert event.reason == "stored_login"
    # The new grant refreshes normally afterwards.
    rig.advance_to_due(WORKLY_KEY)
    assert rig.engine().refresh(WORKLY_KEY).outcome is RefreshOutcome.REFRESHED


def test_workly_wrong_stored_password_needs_reauth(sandboxed: Rig, workly: WorklySandbox) -> None:
    rig = sandboxed
    seed_workly(rig, remember_login=True, password="changed-since-then")
    workly.revoke_refresh_tokens()
    rig.advance_to_due(WORKLY_KEY)
    result = rig.engine().refresh(WORKLY_KEY)
    assert result.outcome is RefreshOutcome.NEEDS_REAUTH
    assert result.error is not None and result.error.provider_code == "7002"
    assert rig.tokens.get(WORKLY_KEY).status is ConnectionStatus.NEEDS_REAUTH
    [event] = rig.events.of_type(EventType.CONNECTION_NEEDS_REAUTHORIZATION)
    assert event.reason is not None and "7002" in event.reason
    assert "changed-since-then" not in repr(rig.events.events)


# --- configuration and account problems ------------------------------------------------------------


def test_workly_426_is_a_configuration_failure(sandboxed: Rig, workly: WorklySandbox) -> None:
    rig = sandboxed
    seed_workly(rig)
    before = rig.tokens.get(WORKLY_KEY)
    workly.knobs.upgrade_required = True
    rig.advance_to_due(WORKLY_KEY)
    now = rig.clock.now()
    result = rig.engine().refresh(WORKLY_KEY)
    assert result.outcome is RefreshOutcome.CONFIGURATION_FAILURE
    assert result.error is not None and result.error.provider_code == "7010"
    item = rig.item(WORKLY_KEY)
    assert item.status is ConnectionStatus.ACTIVE and item.failures == 1
    assert item.next_refresh_at == now + 3600  # paused: no retry storm
    assert rig.tokens.get(WORKLY_KEY) == before  # token kept
    [event] = rig.events.of_type(EventType.TOKEN_REFRESH_FAILED)
    assert event.reason is not None and event.reason.startswith("provider_configuration")
    assert rig.metrics.total("RefreshProblem", provider="workly", kind="configuration") == 1
    # Within the pause a scheduled run does not even read the secret.
    assert rig.engine().refresh(WORKLY_KEY).outcome is RefreshOutcome.NOT_NEEDED
    assert workly.calls["token"] == 2  # the seed's password grant and the one refresh


def test_worksection_invalid_client_is_a_configuration_failure(sandboxed: Rig, worksection: WorksectionSandbox) -> None:
    rig = sandboxed
    seed_worksection(rig, worksection)
    worksection.remove_client(worksection.client_id)  # our credentials no longer work (HTTP 200 error body)
    rig.advance_to_due(WS_KEY)
    now = rig.clock.now()
    result = rig.engine().refresh(WS_KEY)
    assert result.outcome is RefreshOutcome.CONFIGURATION_FAILURE
    assert rig.item(WS_KEY).next_refresh_at == now + 3600
    assert rig.item(WS_KEY).status is ConnectionStatus.ACTIVE
    assert rig.tokens.get(WS_KEY).generation == 1
    assert len(rig.events.of_type(EventType.TOKEN_REFRESH_FAILED)) == 1


def test_workly_402_is_an_account_failure(sandboxed: Rig, workly: WorklySandbox) -> None:
    rig = sandboxed
    seed_workly(rig)
    workly.set_subscription_expired(WORKLY_EMAIL)
    rig.advance_to_due(WORKLY_KEY)
    now = rig.clock.now()
    result = rig.engine().refresh(WORKLY_KEY)
    assert result.outcome is RefreshOutcome.ACCOUNT_FAILURE
    item = rig.item(WORKLY_KEY)
    assert item.status is ConnectionStatus.ACTIVE and item.next_refresh_at == now + 3600
    assert item.last_error is not None and item.last_error.code == "provider_account"
    assert len(rig.events.of_type(EventType.TOKEN_REFRESH_FAILED)) == 1


# --- transient failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arm",
    [
        pytest.param(lambda s: s.faults.fail(503, endpoint="refresh"), id="503-html"),
        pytest.param(lambda s: s.faults.fail(502, endpoint="refresh"), id="502-html"),
        pytest.param(lambda s: s.faults.error_200(endpoint="refresh"), id="200-error-body"),
        pytest.param(lambda s: s.faults.malformed_json(endpoint="refresh"), id="malformed-json"),
        pytest.param(lambda s: s.faults.rate_limit(endpoint="refresh"), id="429-no-retry-after"),
        pytest.param(lambda s: s.faults.hang(2.0, endpoint="refresh"), id="read-timeout"),
        pytest.param(lambda s: s.faults.drop(endpoint="refresh"), id="dropped"),
    ],
)
def test_transient_failures_back_off_and_keep_the_token(
    sandboxed: Rig, worksection: WorksectionSandbox, arm: object
) -> None:
    rig = sandboxed
    seed_worksection(rig, worksection)
    before = rig.tokens.get(WS_KEY)
    arm(worksection)  # type: ignore[operator]
    rig.advance_to_due(WS_KEY)
    now = rig.clock.now()
    result = rig.engine().refresh(WS_KEY)
    assert result.outcome is RefreshOutcome.TRANSIENT_FAILURE, result
    assert result.error is not None and result.error.kind in (
        ProviderErrorKind.TRANSIENT,
        ProviderErrorKind.OUTCOME_UNKNOWN,
    )
    assert rig.tokens.get(WS_KEY) == before
    item = rig.item(WS_KEY)
    assert item.failures == 1 and item.status is ConnectionStatus.ACTIVE and item.lease is None
    assert item.next_refresh_at == now + 30  # first failure: up to 30 s (jitter pinned at its top)
    assert not rig.events.of_type(EventType.TOKEN_REFRESH_FAILED)  # not loud before the 3rd
    # The fault is gone: the next run after the backoff succeeds and clears the failures.
    rig.clock.advance(31)
    again = rig.engine().refresh(WS_KEY)
    assert again.outcome is RefreshOutcome.REFRESHED
    assert rig.item(WS_KEY).failures == 0 and rig.item(WS_KEY).last_error is None


def test_retry_after_is_a_floor(sandboxed: Rig, workly: WorklySandbox) -> None:
    rig = sandboxed
    seed_workly(rig)
    workly.faults.rate_limit(retry_after=600, endpoint="token")
    rig.advance_to_due(WORKLY_KEY)
    now = rig.clock.now()
    result = rig.engine().refresh(WORKLY_KEY)
    assert result.outcome is RefreshOutcome.TRANSIENT_FAILURE
    assert result.retry_after == 600
    assert rig.item(WORKLY_KEY).next_refresh_at == now + 600
    # A sweep enqueues up to its horizon (300 s) early; the engine still waits out the Retry-After.
    rig.clock.advance(599)
    assert rig.engine().refresh(WORKLY_KEY).outcome is RefreshOutcome.NOT_NEEDED
    assert workly.calls["token"] == 2  # the seed's password grant and the limited refresh
    rig.clock.advance(1)
    assert rig.engine().refresh(WORKLY_KEY).outcome is RefreshOutcome.REFRESHED


def test_consecutive_failures_grow_and_become_loud(sandboxed: Rig, worksection: WorksectionSandbox) -> None:
    rig = sandboxed
    seed_worksection(rig, worksection)
    worksection.faults.fail(503, endpoint="refresh", times=6)
    rig.advance_to_due(WS_KEY)
    engine = rig.engine()
    delays = []
    for _ in range(6):
        now = rig.clock.now()
        assert engine.refresh(WS_KEY).outcome is RefreshOutcome.TRANSIENT_FAILURE
        item = rig.item(WS_KEY)
        assert item.next_refresh_at is not None
        delays.append(item.next_refresh_at - now)
        rig.clock.advance(item.next_refresh_at - now + 1)
    assert delays == [30, 60, 120, 240, 480, 960]
    assert rig.item(WS_KEY).failures == 6
    loud = rig.events.of_type(EventType.TOKEN_REFRESH_FAILED)
    assert len(loud) == 2  # the 3rd and the 6th
    assert engine.refresh(WS_KEY).outcome is RefreshOutcome.REFRESHED


def test_outcome_unknown_with_rotation_then_dead_grant(sandboxed: Rig, worksection: WorksectionSandbox) -> None:
    """The provider rotated but the answer was lost: the stored refresh token is dead. Measured:
    first run transient (outcome unknown), the next run gets a dead grant -> needs_reauth."""
    rig = sandboxed
    seed_worksection(rig, worksection)
    worksection.faults.drop(endpoint="refresh", after=True)
    rig.advance_to_due(WS_KEY)
    first = rig.engine().refresh(WS_KEY)
    assert first.outcome is RefreshOutcome.TRANSIENT_FAILURE
    assert first.error is not None and first.error.kind is ProviderErrorKind.OUTCOME_UNKNOWN
    assert worksection.refreshes == 1  # the grant was performed
    rig.clock.advance(31)
    second = rig.engine().refresh(WS_KEY)
    assert second.outcome is RefreshOutcome.NEEDS_REAUTH


def test_outcome_unknown_on_workly_recovers_with_the_stored_login(sandboxed: Rig, workly: WorklySandbox) -> None:
    rig = sandboxed
    seed_workly(rig, remember_login=True)
    workly.faults.hang(2.0, endpoint="token", after=True)
    rig.advance_to_due(WORKLY_KEY)
    first = rig.engine().refresh(WORKLY_KEY)
    assert first.outcome is RefreshOutcome.TRANSIENT_FAILURE
    rig.clock.advance(31)
    second = rig.engine().refresh(WORKLY_KEY)
    assert second.outcome is RefreshOutcome.REAUTHENTICATED
    assert rig.tokens.get(WORKLY_KEY).generation == 2


def test_a_vend_during_a_backoff_does_not_call_the_provider(sandboxed: Rig, worksection: WorksectionSandbox) -> None:
    rig = sandboxed
    seed_worksection(rig, worksection)
    worksection.faults.fail(503, endpoint="refresh", times=100)
    rig.advance_to_due(WS_KEY)
    engine = rig.engine()
    assert engine.refresh(WS_KEY).outcome is RefreshOutcome.TRANSIENT_FAILURE
    next_at = rig.item(WS_KEY).next_refresh_at
    assert next_at is not None
    for _ in range(10):
        rig.clock.advance(2)
        result = engine.refresh(WS_KEY, reason="vend", should_refresh=lambda _: True)
        assert result.outcome is RefreshOutcome.TRANSIENT_FAILURE and result.deferred
        assert result.retry_after == pytest.approx(next_at - rig.clock.now())
        assert result.error is not None and result.error.kind is ProviderErrorKind.TRANSIENT
    assert worksection.calls["refresh"] == 1
    assert rig.metrics.total("RefreshOutcome", provider="worksection", outcome="deferred") == 10
    assert rig.metrics.total("RefreshOutcome", provider="worksection", outcome="transient_failure") == 1
    assert rig.item(WS_KEY).failures == 1  # deferrals are not failures
    rig.clock.advance(next_at - rig.clock.now())
    again = engine.refresh(WS_KEY, reason="vend", should_refresh=lambda _: True)
    assert again.outcome is RefreshOutcome.TRANSIENT_FAILURE and not again.deferred
    assert worksection.calls["refresh"] == 2
