"""RefreshSchedule: one value drives the scheduler and the functions' SchedulePolicy, and CloudFormation
refuses at deploy time exactly what the functions would refuse at their first invocation."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenbroker.errors import ConfigurationError
from tokenbroker.schedule import DEFAULT_SCHEDULE_EXPRESSION, RATE_PATTERN, parse_schedule_expression

from tests.template.sam import load, resources_of, transformed
from tests.unit.refresh.test_schedule_policy import ACCEPTED, REFUSED

FUNCTION = "AWS::Lambda::Function"
# The functions whose collaborators depend on the schedule: the sweep (horizon), the worker and the
# vend function (the refresh engine's slack). The callback function never refreshes on a schedule.
SCHEDULED = {"RefreshSweepFunction", "RefreshWorkerFunction", "VendFunction"}


@cache  # parsing template.yaml per generated example would blow hypothesis's deadline
def parameter() -> dict[str, Any]:
    value: dict[str, Any] = load()["Parameters"]["RefreshSchedule"]
    return value


def parser_accepts(expression: str) -> bool:
    try:
        parse_schedule_expression(expression)
    except ConfigurationError:
        return False
    return True


def pattern_accepts(expression: str) -> bool:
    # CloudFormation matches AllowedPattern against the whole value (Java's String.matches).
    return re.fullmatch(parameter()["AllowedPattern"], expression) is not None


def test_the_schedule_expression_reaches_every_function_that_uses_it() -> None:
    functions = {name: r["Properties"] for name, r in resources_of(transformed(), FUNCTION).items()}
    for name in SCHEDULED:
        assert functions[name]["Environment"]["Variables"]["REFRESH_SCHEDULE"] == {"Ref": "RefreshSchedule"}, name
        # No hand-set horizon that could disagree with the schedule.
        assert "SWEEP_HORIZON_SECONDS" not in functions[name]["Environment"]["Variables"], name
    [schedule] = resources_of(transformed(), "AWS::Scheduler::Schedule").values()
    assert schedule["Properties"]["ScheduleExpression"] == {"Ref": "RefreshSchedule"}


def test_the_allowed_pattern_is_the_parsers_pattern_and_the_default_passes_it() -> None:
    assert parameter()["AllowedPattern"] == RATE_PATTERN
    assert parameter()["Default"] == DEFAULT_SCHEDULE_EXPRESSION
    assert pattern_accepts(parameter()["Default"])


@pytest.mark.parametrize("expression", [*ACCEPTED, *REFUSED])
def test_pattern_and_parser_agree_on_samples(expression: str) -> None:
    assert pattern_accepts(expression) == parser_accepts(expression) == (expression in ACCEPTED)


@given(
    st.builds(
        "rate({}{} {}){}".format,
        st.sampled_from(["", "0", "1", "01", " "]),
        st.integers(min_value=0, max_value=200).map(str),
        st.sampled_from(["minute", "minutes", "hour", "hours", "day", "days", "second", "seconds", "week"]),
        st.sampled_from(["", " ", "x"]),
    )
)
def test_pattern_and_parser_agree_on_generated_rates(expression: str) -> None:
    assert pattern_accepts(expression) == parser_accepts(expression)
