"""One schedule policy: the sweep's interval, and the horizon and slack derived from it."""

from __future__ import annotations

import math
from typing import Any

import pytest
from tokenbroker import schedule
from tokenbroker.aws import AwsClients, DynamoTable
from tokenbroker.clock import ManualClock
from tokenbroker.errors import ConfigurationError
from tokenbroker.keys import ConnectionKey
from tokenbroker.providers import Provider
from tokenbroker.refresh import RefreshOutcome
from tokenbroker.schedule import SchedulePolicy, parse_schedule_expression
from tokenbroker.settings import Settings
from tokenbroker.sweep import RefreshMessage
from tokenbroker.tokens import TokenSet
from tokenbroker.wiring import Runtime

from tests.support.seeding import seed_connection

MINUTE = 60.0
HOUR = 3_600.0

# What EventBridge Scheduler takes and tokenbroker accepts; tests/template checks the
# template's AllowedPattern against the same lists.
ACCEPTED = {
    "rate(1 minute)": 60.0,
    "rate(5 minutes)": 300.0,
    "rate(15 minutes)": 900.0,
    "rate(90 minutes)": 5_400.0,
    "rate(1 hour)": 3_600.0,
    "rate(2 hours)": 7_200.0,
    "rate(1 day)": 86_400.0,
    "rate(10 days)": 864_000.0,
}
REFUSED = [
    "",
    "rate(0 minutes)",
    "rate(0 minute)",
    "rate(05 minutes)",
    "rate(1 minutes)",  # AWS wants the singular for 1
    "rate(5 minute)",
    "rate(5 seconds)",
    "rate(1.5 hours)",
    "rate(-5 minutes)",
    "rate( 5 minutes)",
    "rate(5  minutes)",
    "rate(5 minutes) ",
    "RATE(5 minutes)",
    "rate(5 Minutes)",
    "5 minutes",
    "rate(5 weeks)",
    "cron(0/15 * * * ? *)",
    "cron(0 9-17 ? * MON-FRI *)",
    "at(2030-01-01T00:00:00)",
]


@pytest.mark.parametrize(("expression", "seconds"), ACCEPTED.items())
def test_rate_expressions_parse_to_their_interval(expression: str, seconds: float) -> None:
    assert parse_schedule_expression(expression) == seconds


@pytest.mark.parametrize("expression", REFUSED)
def test_anything_else_is_a_configuration_error(expression: str) -> None:
    with pytest.raises(ConfigurationError, match="REFRESH_SCHEDULE"):
        parse_schedule_expression(expression)


def test_cron_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigurationError, match=r"not evenly spaced"):
        parse_schedule_expression("cron(0/5 * * * ? *)")


def test_horizon_and_slack_are_the_interval() -> None:
    policy = SchedulePolicy.from_expression("rate(15 minutes)")
    assert (policy.interval, policy.horizon, policy.slack) == (900.0, 900.0, 900.0)
    assert schedule.DEFAULT_POLICY.interval == 300.0  # the template's default, rate(5 minutes)


def test_a_horizon_override_may_widen_but_never_narrow() -> None:
    wider = SchedulePolicy.from_expression("rate(5 minutes)", horizon_override=420)
    assert (wider.horizon, wider.slack) == (420.0, 420.0)  # what the sweep enqueues, the engine takes
    assert SchedulePolicy(300, 300).horizon == 300.0
    with pytest.raises(ConfigurationError, match="SWEEP_HORIZON_SECONDS"):
        SchedulePolicy.from_expression("rate(15 minutes)", horizon_override=300)
    with pytest.raises(ConfigurationError):
        SchedulePolicy(300, math.nan)


@pytest.mark.parametrize("interval", [0.0, -1.0, math.inf, math.nan])
def test_the_interval_is_positive_and_finite(interval: float) -> None:
    with pytest.raises(ConfigurationError):
        SchedulePolicy(interval)


def test_settings_read_the_schedule_from_the_environment() -> None:
    base = {"TABLE_NAME": "t"}
    assert Settings.from_env(base).schedule == schedule.DEFAULT_POLICY
    assert Settings.from_env({**base, "REFRESH_SCHEDULE": "rate(1 hour)"}).schedule.horizon == HOUR
    both = Settings.from_env({**base, "REFRESH_SCHEDULE": "rate(1 hour)", "SWEEP_HORIZON_SECONDS": "4000"})
    assert (both.schedule.interval, both.schedule.horizon) == (HOUR, 4000.0)
    # A local scheduler without an expression (the local stack) gives the interval in seconds.
    local = Settings.from_env({**base, "REFRESH_SCHEDULE": "rate(5 minutes)", "REFRESH_INTERVAL_SECONDS": "10"})
    assert (local.schedule.interval, local.schedule.horizon) == (10.0, 10.0)
    # The old way of narrowing the horizon below the schedule is refused at start.
    with pytest.raises(ConfigurationError, match="SWEEP_HORIZON_SECONDS"):
        Settings.from_env({**base, "SWEEP_HORIZON_SECONDS": "60"})
    with pytest.raises(ConfigurationError, match="REFRESH_SCHEDULE"):
        Settings.from_env({**base, "REFRESH_SCHEDULE": "cron(0/5 * * * ? *)"})
    with pytest.raises(ConfigurationError, match="REFRESH_INTERVAL_SECONDS"):
        Settings.from_env({**base, "REFRESH_INTERVAL_SECONDS": "soon"})


def test_a_one_hour_token_due_within_a_long_interval_is_due_for_the_engine() -> None:
    """rate(15 minutes), 1-hour tokens: the 6-minute refresh-ahead lead is shorter than the interval."""
    now = 1_800_000_000.0
    slack = SchedulePolicy.from_expression("rate(15 minutes)").slack
    obtained = now - HOUR + 360 + 10 * MINUTE  # falls due 10 minutes from now
    assert schedule.next_refresh_at(obtained + HOUR, obtained, None, now) == now + 10 * MINUTE
    assert schedule.is_due(obtained + HOUR, obtained, None, now, slack=slack)
    # ... yet a token obtained just now is not due, so a duplicated message does nothing.
    assert not schedule.is_due(now + HOUR, now, None, now, slack=slack)


class _FixedProvider(Provider):
    """Answers every refresh with a new one-hour token; counts the calls. Nothing else is used."""

    def __init__(self, clock: ManualClock) -> None:
        self.name = "workly"
        self._clock = clock
        self.refresh_calls = 0

    def refresh(self, token: TokenSet) -> TokenSet:
        self.refresh_calls += 1
        now = int(self._clock.now())
        fresh = TokenSet(
            access_token=f"access-{self.refresh_calls}", token_type="Bearer", expires_at=now + 3600, obtained_at=now
        )
        return fresh.merged_over(token)

    def authorization_url(self, **_: Any) -> str:
        raise NotImplementedError

    def exchange_code(self, **_: Any) -> TokenSet:
        raise NotImplementedError

    def password_grant(self, **_: Any) -> TokenSet:
        raise NotImplementedError


def test_rate_15_minutes_enqueues_and_refreshes_a_connection_due_10_minutes_after_the_sweep(
    aws_clients: AwsClients, table: DynamoTable, clock: ManualClock
) -> None:
    """Settings from the template's variables, wiring.Runtime: the sweep and the worker agree.

    Before the policy the horizon stayed 300 s whatever the schedule, so this connection waited for
    the next run, 15 minutes later: 5 minutes after it fell due, a minute before its token expired.
    """
    sqs: Any = aws_clients.client("sqs")
    queue_url = str(sqs.create_queue(QueueName="refresh")["QueueUrl"])
    env = {"TABLE_NAME": table.name, "STAGE": "test", "REFRESH_QUEUE_URL": queue_url}
    provider = _FixedProvider(clock)  # the deployed wiring, except the provider: no HTTP in a unit test
    settings = Settings.from_env({**env, "REFRESH_SCHEDULE": "rate(15 minutes)"})
    runtime = Runtime(settings, aws=aws_clients, clock=clock, providers=lambda _name: provider)
    now = clock.now()

    def connect(name: str, due_in: float) -> ConnectionKey:
        key = ConnectionKey("workly", name)
        # A one-hour token refreshed 6 minutes ahead (schedule.refresh_ahead): obtained so that it falls due in due_in.
        obtained = int(now + due_in + 360 - HOUR)
        token = TokenSet(
            access_token=f"a-{name}",
            token_type="Bearer",
            expires_at=obtained + 3600,
            obtained_at=obtained,
            refresh_token=f"r-{name}",
        )
        saved = seed_connection(runtime.repository, runtime.catalog, clock, key, token)
        assert saved.connection.next_refresh_at == now + due_in
        return key

    soon = connect("due-in-10-min", 10 * MINUTE)
    connect("due-after-next-run", 16 * MINUTE)  # the next run (in 15 minutes) takes it

    sweeper = runtime.sweeper
    assert sweeper is not None
    assert sweeper.run().enqueued == 1
    [message] = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert RefreshMessage.from_body(message["Body"]).key == soon

    # The worker, wired from the same settings, refreshes it now instead of answering not_needed.
    result = runtime.refresh_worker.handle(message["Body"])
    assert result is not None and result.outcome is RefreshOutcome.REFRESHED
    assert provider.refresh_calls == 1
