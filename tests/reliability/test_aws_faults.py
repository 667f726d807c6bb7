"""AWS faults: throttling and 5xx on GetSecretValue, PutSecretValue and the DynamoDB writes of a
refresh, and a real conditional-check failure at every conditional write.

Faults are answered inside botocore (harness/awsfaults.py) with the status and error body AWS
sends. The clients here make one attempt per call (``max_attempts=1``): an injected fault is a
call that failed after all SDK retries. One test lets a write land and answers 500 anyway, through
botocore's standard retries (the retry reuses the ClientRequestToken: one version, no harm).
Conditional failures are real: another owner takes the lease (as a worker does once ours expired)
right before the conditional write.

For each write the test follows the system through the schedule until it settles and checks what
was kept, what the next run did, and that the events a consumer relies on were published.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from tokenbroker.aws import AwsClients, default_config
from tokenbroker.clock import ManualClock
from tokenbroker.events import EventType
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import Connection, ConnectionStatus, PasswordLogin, StoredToken
from tokenbroker.refresh import RefreshOutcome
from tokenbroker.stores import ConnectionStore, TokenStore
from tokenbroker.stores.connections import connection_pk

from infra.sandboxes import WorklySandbox, WorksectionSandbox
from infra.sandboxes.catalog import sandbox_provider, token_from_answer
from tests.reliability.harness.awsfaults import AwsFaults
from tests.reliability.harness.results import NOTHING, RowLog
from tests.reliability.harness.system import (
    SWEEP_EVERY,
    WORKLY_EMAIL,
    WORKLY_PASSWORD,
    WS_EMAIL,
    WS_PASSWORD,
    System,
)
from tests.support.aws import REGION, new_table

LEASE = 90.0
WS = ConnectionKey("worksection", "acme-bob")
WORKLY = ConnectionKey("workly", "ann")


@pytest.fixture
def one_shot_clients(mocked_aws: None) -> AwsClients:
    """Clients that make one attempt per call: an injected fault is what survives SDK retries."""
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", aws_session_token="testing", region_name=REGION
    )
    return AwsClients(session, config=default_config(max_attempts=1))


@pytest.fixture
def worksection(clock: ManualClock) -> Iterator[WorksectionSandbox]:
    with WorksectionSandbox(clock=clock) as sandbox:
        sandbox.add_user(WS_EMAIL, WS_PASSWORD, accounts=("acme",))
        yield sandbox


@pytest.fixture
def workly(clock: ManualClock) -> Iterator[WorklySandbox]:
    with WorklySandbox(clock=clock) as sandbox:
        sandbox.add_user(WORKLY_EMAIL, WORKLY_PASSWORD)
        yield sandbox


def build(
    clients: AwsClients, clock: ManualClock, worksection: WorksectionSandbox, workly: WorklySandbox
) -> tuple[System, AwsFaults]:
    system = System.create(clients, new_table(clients), clock, lease_seconds=LEASE)
    system.providers["worksection"] = sandbox_provider(system.catalog, worksection, clock)
    system.providers["workly"] = sandbox_provider(system.catalog, workly, clock)
    return system, AwsFaults(clients.dynamodb, clients.secretsmanager)


@pytest.fixture
def rig(
    one_shot_clients: AwsClients, clock: ManualClock, worksection: WorksectionSandbox, workly: WorklySandbox
) -> tuple[System, AwsFaults]:
    return build(one_shot_clients, clock, worksection, workly)


def seed_worksection(system: System, sandbox: WorksectionSandbox) -> StoredToken:
    stored = system.seed(WS, token_from_answer(sandbox.issue_tokens(WS_EMAIL), system.clock.now()))
    system.advance_to_due(WS)
    return stored


def seed_workly(system: System, sandbox: WorklySandbox) -> StoredToken:
    token = token_from_answer(sandbox.issue_tokens(WORKLY_EMAIL), system.clock.now())
    stored = system.seed(WORKLY, token, login=PasswordLogin(WORKLY_EMAIL, WORKLY_PASSWORD))
    system.advance_to_due(WORKLY)
    return stored


# --- wrappers that arm a fault (or take the lease away) right before one store call ---------------


class FaultyConnections(ConnectionStore):
    """The real store; before ``method`` runs, arm an AWS fault or let an intruder take the lease."""

    def __init__(self, inner: ConnectionStore, method: str, *, faults: AwsFaults | None = None, kind: str = "") -> None:
        self.__dict__.update(inner.__dict__)
        self.method, self.faults, self.kind = method, faults, kind
        self.fired = 0

    def _before(self, method: str, key: ConnectionKey) -> None:
        if method != self.method or self.fired:
            return
        self.fired += 1
        if self.faults is not None:
            self.faults.arm("UpdateItem", self.kind)
        else:
            steal_lease(self, key)

    def acquire_lease(self, key: ConnectionKey, owner: str, duration: float, **kw: Any) -> Connection | None:
        self._before("acquire_lease", key)
        return super().acquire_lease(key, owner, duration, **kw)

    def commit_refresh(self, key: ConnectionKey, *args: Any, **kw: Any) -> Connection:
        self._before("commit_refresh", key)
        return super().commit_refresh(key, *args, **kw)

    def record_failure(self, key: ConnectionKey, *args: Any, **kw: Any) -> None:
        self._before("record_failure", key)
        super().record_failure(key, *args, **kw)

    def mark_needs_reauth(self, key: ConnectionKey, *args: Any, **kw: Any) -> Connection:
        self._before("mark_needs_reauth", key)
        return super().mark_needs_reauth(key, *args, **kw)

    def release(self, key: ConnectionKey, owner: str, **kw: Any) -> bool:
        self._before("release", key)
        return super().release(key, owner, **kw)


def steal_lease(store: ConnectionStore, key: ConnectionKey) -> None:
    """Another worker takes the lease (ours expired while we worked): a plain write, no condition."""
    now = store._clock.now()
    store._client.update_item(
        TableName=store._table,
        Key={"pk": {"S": connection_pk(key.provider)}, "sk": {"S": key.connection_id}},
        UpdateExpression="SET lease_owner = :o, lease_until = :u",
        ExpressionAttributeValues={":o": {"S": "intruder"}, ":u": {"N": str(now + LEASE)}},
    )


class FaultyTokens(TokenStore):
    """The real token store; arms ``times`` faults on the next ``get`` or ``put``."""

    def __init__(self, inner: TokenStore, faults: AwsFaults, method: str, kind: str, times: int = 1) -> None:
        self.__dict__.update(inner.__dict__)
        self.faults, self.method, self.kind, self.times = faults, method, kind, times

    def _arm(self, method: str, operation: str) -> None:
        if method == self.method and self.times:
            self.faults.arm(operation, self.kind, times=self.times)
            self.times = 0

    def get(self, key: ConnectionKey) -> StoredToken:
        self._arm("get", "GetSecretValue")
        return super().get(key)

    def put(self, key: ConnectionKey, stored: StoredToken, *, restore_deleted: bool = False) -> str:
        self._arm("put", "PutSecretValue")
        return super().put(key, stored, restore_deleted=restore_deleted)


# --- GetSecretValue ---------------------------------------------------------------------------------


def test_get_secret_value_throttled_under_the_lease(
    rig: tuple[System, AwsFaults], worksection: WorksectionSandbox, findings: RowLog
) -> None:
    system, faults = rig
    before = seed_worksection(system, worksection)
    failing = FaultyTokens(system.tokens, faults, "get", "throttling")
    first = system.run_schedule(SWEEP_EVERY, tokens=failing)
    assert first.outcomes == ["raised ClientError"] and first.failed_records == 1  # SQS retries it
    item = system.item(WS)
    assert item.lease is None and item.attempt is None  # released: nothing was sent
    assert worksection.calls["refresh"] == 0 and system.secret(WS) == before
    later = system.run_schedule(SWEEP_EVERY)
    assert later.outcomes == ["refreshed"] and system.secret(WS).generation == 2
    findings.record(
        "aws",
        "GetSecretValue throttled (re-read under the lease)",
        "moto + botocore",
        "record failed (SQS retry), lease released before any provider call; refreshed at the next sweep",
    )


def test_get_secret_value_throttled_on_the_vend_path(
    rig: tuple[System, AwsFaults], worksection: WorksectionSandbox, findings: RowLog
) -> None:
    system, faults = rig
    stored = seed_worksection(system, worksection)
    vending = system.vending()
    faults.arm("GetSecretValue", "throttling")
    with pytest.raises(ClientError) as refused:
        vending.vend(WS, min_ttl=60)
    assert stored.token.access_token not in str(refused.value)
    assert vending.vend(WS, min_ttl=60).access_token == stored.token.access_token  # the retry works
    findings.record(
        "aws",
        "GetSecretValue throttled (vend fast path)",
        "moto + botocore",
        "the vend fails (the handler answers 500 internal_error, no token in it); the caller's retry is served",
    )


# --- PutSecretValue after the provider answered ------------------------------------------------------


def test_put_secret_value_throttled_twice_is_retried_until_it_lands(
    rig: tuple[System, AwsFaults], worksection: WorksectionSandbox, findings: RowLog
) -> None:
    system, faults = rig
    seed_worksection(system, worksection)
    faults.sent.clear()
    failing = FaultyTokens(system.tokens, faults, "put", "throttling", times=2)
    log = system.run_schedule(SWEEP_EVERY, tokens=failing)
    assert log.outcomes == ["refreshed"]
    assert faults.injected["PutSecretValue"] == 2 and faults.sent["PutSecretValue"] == 1
    assert system.secret(WS).generation == 2 and system.item(WS).generation == 2
    assert worksection.refreshes == 1
    findings.record(
        "aws",
        "PutSecretValue throttled twice after the provider answered",
        "moto + botocore",
        "the engine retries the same ClientRequestToken with backoff; the third try lands: refreshed",
    )


def test_put_secret_value_5xx_after_the_write_landed_is_absorbed_by_the_sdk(
    aws_clients: AwsClients,
    clock: ManualClock,
    worksection: WorksectionSandbox,
    workly: WorklySandbox,
    findings: RowLog,
) -> None:
    system, faults = build(aws_clients, clock, worksection, workly)  # standard retries, 3 attempts
    seed_worksection(system, worksection)
    faults.sent.clear()
    faults.arm("PutSecretValue", "internal_service_error", processed=True)
    log = system.run_schedule(SWEEP_EVERY)
    assert log.outcomes == ["refreshed"]
    assert faults.injected["PutSecretValue"] == 1 and faults.sent["PutSecretValue"] == 2
    assert not system.metrics.total("TokenWriteLost")
    versions = system.clients.secretsmanager.list_secret_version_ids(SecretId=system.tokens.secret_name(WS))
    assert len(versions["Versions"]) == 2  # the seed and generation 2: the retry was not a third version
    findings.record(
        "aws",
        "PutSecretValue landed but answered HTTP 500 (SDK standard retries)",
        "moto + botocore",
        "botocore retried with the same ClientRequestToken: one version; the engine never saw it: refreshed",
    )


@pytest.mark.parametrize("provider", ["worksection", "workly"])
def test_put_secret_value_down_after_the_provider_answered(
    rig: tuple[System, AwsFaults],
    worksection: WorksectionSandbox,
    workly: WorklySandbox,
    provider: str,
    findings: RowLog,
) -> None:
    """The token exists only in memory and Secrets Manager refuses it five times. This is the window
    the design accepts; measured here: what the next run can still save."""
    system, faults = rig
    key = WS if provider == "worksection" else WORKLY
    if provider == "worksection":
        seed_worksection(system, worksection)
    else:
        seed_workly(system, workly)
    failing = FaultyTokens(system.tokens, faults, "put", "internal_service_error", times=100)
    first = system.run_schedule(SWEEP_EVERY, tokens=failing)
    assert first.outcomes == ["raised ClientError"] and first.failed_records == 1
    assert faults.injected["PutSecretValue"] == 5  # DEFAULT_PUT_ATTEMPTS, then it gives up
    assert system.metrics.total("TokenWriteLost", provider=provider) == 1
    item = system.item(key)
    assert item.lease is not None and item.attempt is not None  # kept: the next run knows
    faults.clear()

    system.manual_clock.advance(LEASE)
    later = system.run_schedule(3600)
    settled = [o for o in later.outcomes if o != "not_needed"]
    if provider == "worksection":
        # A dead grant right after an interrupted attempt may be checked once more before it is final.
        assert settled in (["needs_reauth"], ["transient_failure", "needs_reauth"]), later
        assert system.secret(key).status is ConnectionStatus.NEEDS_REAUTH
        [event] = system.events_of(EventType.CONNECTION_NEEDS_REAUTHORIZATION, key)
        assert event.reason is not None and event.reason.startswith("needs_reauth")
        assert worksection.calls["refresh"] <= 3  # the one that rotated, at most two refusals
        did = "5 write attempts, TokenWriteLost metric, attempt left visible; the next runs retry with the "
        did += f"rotated-away refresh token ({', '.join(settled)}): needs_reauth + event"
        lost = "the grant: the rotated token existed only in memory (write window)"
    else:
        assert settled == [RefreshOutcome.REAUTHENTICATED], later
        assert system.secret(key).generation == 2
        did = "5 write attempts, TokenWriteLost metric; the next run re-logs in with the stored login"
        lost = NOTHING
    findings.record("aws", f"PutSecretValue HTTP 500 x5 after the provider answered ({provider})", "moto", did, lost)


# --- DynamoDB writes: throttling and 5xx ---------------------------------------------------------


def test_lease_write_throttled(
    rig: tuple[System, AwsFaults], worksection: WorksectionSandbox, findings: RowLog
) -> None:
    system, faults = rig
    before = seed_worksection(system, worksection)
    failing = FaultyConnections(system.connections, "acquire_lease", faults=faults, kind="provisioned_throughput")
    first = system.run_schedule(SWEEP_EVERY, connections=failing)
    assert first.outcomes == ["raised ClientError"] and first.failed_records == 1
    assert system.item(WS).lease is None and worksection.calls["refresh"] == 0 and system.secret(WS) == before
    assert system.run_schedule(SWEEP_EVERY).outcomes == ["refreshed"]
    findings.record(
        "aws",
        "UpdateItem (lease) ProvisionedThroughputExceeded",
        "moto + botocore",
        "record failed before anything happened (SQS retry); refreshed at the next sweep",
    )


def test_commit_write_fails_after_the_secret_landed(
    rig: tuple[System, AwsFaults], worksection: WorksectionSandbox, findings: RowLog
) -> None:
    """The new token is durable (secret generation 2); the item update fails. The next run must
    reconcile the item from the secret without a provider call, and consumers listening for
    'Token Refreshed' must still hear about generation 2 once."""
    system, faults = rig
    seed_worksection(system, worksection)
    failing = FaultyConnections(system.connections, "commit_refresh", faults=faults, kind="internal_error")
    first = system.run_schedule(SWEEP_EVERY, connections=failing)
    assert first.outcomes == ["raised ClientError"] and first.failed_records == 1
    written = system.secret(WS)
    assert written.generation == 2 and system.item(WS).generation == 1
    assert system.vending().vend(WS, min_ttl=60).generation == 2  # consumers already get it

    system.manual_clock.advance(LEASE)
    later = system.run_schedule(SWEEP_EVERY)
    assert later.outcomes == ["not_needed"]
    item = system.item(WS)
    assert item.generation == 2 and item.lease is None and item.attempt is None
    assert worksection.refreshes == 1
    refreshed_events = [e.generation for e in system.events_of(EventType.TOKEN_REFRESHED, WS)]
    findings.record(
        "aws",
        "UpdateItem (commit) HTTP 500 after the secret write",
        "moto + botocore",
        "record failed; the secret (generation 2) is vended at once; the next run reconciles the item "
        "from the secret without a provider call",
        NOTHING if refreshed_events == [2] else "the 'Token Refreshed' event of generation 2 (never published)",
    )
    assert refreshed_events == [2], "no 'Token Refreshed' event was ever published for generation 2"


def test_failure_write_throttled_after_a_provider_error(
    rig: tuple[System, AwsFaults], worksection: WorksectionSandbox, findings: RowLog
) -> None:
    system, faults = rig
    before = seed_worksection(system, worksection)
    worksection.faults.fail(503, endpoint="refresh")
    failing = FaultyConnections(system.connections, "record_failure", faults=faults, kind="throttling")
    first = system.run_schedule(SWEEP_EVERY, connections=failing)
    assert first.outcomes == ["raised ClientError"] and first.failed_records == 1
    assert system.item(WS).lease is not None and system.secret(WS) == before
    system.manual_clock.advance(LEASE)
    later = system.run_schedule(SWEEP_EVERY)
    assert later.outcomes == ["refreshed"] and system.secret(WS).generation == 2
    assert system.metrics.total("RefreshInterrupted") == 1
    findings.record(
        "aws",
        "UpdateItem (record failure) throttled after a provider 503",
        "moto + botocore",
        "record failed, token kept, lease left to expire; the next run retries (interrupted) and refreshes",
    )


def test_needs_reauth_write_throttled_after_a_dead_grant(
    rig: tuple[System, AwsFaults], worksection: WorksectionSandbox, findings: RowLog
) -> None:
    """The grant is dead; the secret is marked, the item write fails. The next run must finish the
    job and the operator must still get the 'Connection Needs Reauthorization' event (and metric)."""
    system, faults = rig
    seed_worksection(system, worksection)
    worksection.revoke_refresh_tokens()
    failing = FaultyConnections(system.connections, "mark_needs_reauth", faults=faults, kind="throttling")
    first = system.run_schedule(SWEEP_EVERY, connections=failing)
    assert first.outcomes == ["raised ClientError"]
    assert system.secret(WS).status is ConnectionStatus.NEEDS_REAUTH  # the secret first: vends answer 409
    system.manual_clock.advance(LEASE)
    later = system.run_schedule(SWEEP_EVERY)
    assert later.outcomes == ["needs_reauth"]
    assert system.item(WS).status is ConnectionStatus.NEEDS_REAUTH
    events = system.events_of(EventType.CONNECTION_NEEDS_REAUTHORIZATION, WS)
    metric = system.metrics.total("ConnectionsNeedingReauth", provider="worksection")
    findings.record(
        "aws",
        "UpdateItem (needs_reauth) throttled after a dead grant",
        "moto + botocore",
        f"secret marked first (vend 409), record failed; the next run marks the item; events: {len(events)}, "
        f"ConnectionsNeedingReauth metric: {metric:g}",
        NOTHING if len(events) == 1 and metric == 1 else "the 'Connection Needs Reauthorization' event and metric",
    )
    assert len(events) == 1 and metric == 1, "the operator is never told that the connection needs reauthorization"


# --- a conditional-check failure at every conditional write ------------------------------------------


def test_conditional_failure_on_the_lease(
    rig: tuple[System, AwsFaults], worksection: WorksectionSandbox, findings: RowLog
) -> None:
    system, _ = rig
    before = seed_worksection(system, worksection)
    contended = FaultyConnections(system.connections, "acquire_lease")  # an intruder holds it first
    log = system.run_schedule(SWEEP_EVERY, connections=contended)
    assert log.outcomes == ["contended"] and log.failed_records == 0
    assert worksection.calls["refresh"] == 0 and system.secret(WS) == before
    assert system.metrics.total("LeaseContention") == 1
    assert not system.events_of(EventType.TOKEN_REFRESH_FAILED) and system.item(WS).failures == 0
    findings.record(
        "aws",
        "ConditionalCheckFailed: lease held by another worker",
        "moto",
        "contended (not an error, no failure counted, no event), no provider call",
    )


def test_conditional_failure_on_the_commit(
    rig: tuple[System, AwsFaults], worksection: WorksectionSandbox, findings: RowLog
) -> None:
    system, _ = rig
    seed_worksection(system, worksection)
    stolen = FaultyConnections(system.connections, "commit_refresh")
    first = system.run_schedule(SWEEP_EVERY, connections=stolen)
    assert first.outcomes == ["refreshed"] and first.failed_records == 0  # durable: still a refresh
    assert system.metrics.total("RefreshCommitLost") == 1
    assert system.secret(WS).generation == 2 and system.item(WS).generation == 1
    system.manual_clock.advance(LEASE)  # the intruder's lease runs out
    later = system.run_schedule(3600)
    assert later.outcomes[:1] == ["not_needed"]
    assert system.item(WS).generation == 2 and worksection.refreshes == 1
    findings.record(
        "aws",
        "ConditionalCheckFailed: commit after the lease was taken over",
        "moto",
        "refreshed (committed=False), RefreshCommitLost metric; the next lease holder reconciles the item",
    )


def test_conditional_failure_on_the_failure_record(
    rig: tuple[System, AwsFaults], worksection: WorksectionSandbox, findings: RowLog
) -> None:
    system, _ = rig
    before = seed_worksection(system, worksection)
    worksection.faults.fail(502, endpoint="refresh")
    stolen = FaultyConnections(system.connections, "record_failure")
    first = system.run_schedule(SWEEP_EVERY, connections=stolen)
    assert first.outcomes == ["raised LeaseLost"] and first.failed_records == 1
    assert system.secret(WS) == before
    system.manual_clock.advance(LEASE)
    assert system.run_schedule(SWEEP_EVERY).outcomes == ["refreshed"]
    findings.record(
        "aws",
        "ConditionalCheckFailed: failure record after the lease was taken over",
        "moto",
        "LeaseLost: record failed (SQS retry), token kept; refreshed once the other lease ran out",
    )


def test_conditional_failure_on_needs_reauth(
    rig: tuple[System, AwsFaults], worksection: WorksectionSandbox, findings: RowLog
) -> None:
    system, _ = rig
    seed_worksection(system, worksection)
    worksection.revoke_refresh_tokens()
    stolen = FaultyConnections(system.connections, "mark_needs_reauth")
    first = system.run_schedule(SWEEP_EVERY, connections=stolen)
    assert first.outcomes == ["raised LeaseLost"]
    system.manual_clock.advance(LEASE)
    later = system.run_schedule(SWEEP_EVERY)
    assert later.outcomes == ["needs_reauth"]
    assert system.item(WS).status is ConnectionStatus.NEEDS_REAUTH
    events = system.events_of(EventType.CONNECTION_NEEDS_REAUTHORIZATION, WS)
    findings.record(
        "aws",
        "ConditionalCheckFailed: needs_reauth after the lease was taken over",
        "moto",
        f"LeaseLost; the next run marks the item; 'Connection Needs Reauthorization' events: {len(events)}",
        NOTHING if len(events) == 1 else "the 'Connection Needs Reauthorization' event",
    )
    assert len(events) == 1, "the operator is never told that the connection needs reauthorization"


def test_conditional_failure_on_the_release(
    rig: tuple[System, AwsFaults], worksection: WorksectionSandbox, findings: RowLog
) -> None:
    system, _ = rig
    before = seed_worksection(system, worksection)
    stolen = FaultyConnections(system.connections, "release")
    # A vend whose predicate is false under the lease: not_needed, then the release finds no lease.
    result = system.engine(connections=stolen).refresh(WS, reason="vend", should_refresh=lambda _: False)
    assert result.outcome is RefreshOutcome.NOT_NEEDED
    assert system.item(WS).lease is not None and system.item(WS).lease.owner == "intruder"  # type: ignore[union-attr]
    assert system.secret(WS) == before and worksection.calls["refresh"] == 0
    findings.record(
        "aws",
        "ConditionalCheckFailed: release after the lease was taken over",
        "moto",
        "not_needed; the failed release is a no-op, the other owner's lease is untouched",
    )
