"""When to refresh next: refresh-ahead for healthy tokens, jittered backoff after a failure.

All times are epoch seconds (floats). Pure functions: the clock and the randomness are arguments,
so the rules are tested without sleeping.

Refresh-ahead (design.md): ``expires_at - max(5 min, 10 % of the access-token lifetime)``, and
never later than the refresh token's estimated expiry minus a safety margin of
``max(1 day, 10 % of the refresh-token lifetime)``. Two clamps the design leaves implicit:

* the lead is at most half the access-token lifetime, otherwise a token that lives 5 minutes or
  less would be due the moment it was obtained and refreshed on every sweep;
* likewise the refresh-token margin is at most half the refresh-token lifetime, so a short-lived
  refresh token (hours) is still used before it dies instead of making the token due at once.

Backoff after a transient failure: exponential with full jitter (AWS Architecture Blog,
"Exponential Backoff And Jitter"), base 30 s, cap 1 h. Then two bounds, in this order:

1. the deadline: the retry must come while a refresh still helps. While the access token is
   alive that is ``expires_at - 60 s`` (consumers keep getting a valid token); once it has expired
   it is the refresh token's estimated expiry (after that the grant is dead for good). Near the
   deadline the delay is at most half of the time left, so at least two more attempts happen
   before it passes, but never less than ``MIN_RETRY_DELAY``.
2. ``Retry-After`` is a floor and wins over the deadline: the provider told us that an earlier call
   fails, and hammering it only extends a rate limit. It is clamped to the cap so that a bogus
   header cannot park a connection for days.

The sweep runs every few minutes, so these instants are when a connection becomes *eligible*
again; the actual retry happens at the first sweep after it.

How often the sweep runs is one number, ``SchedulePolicy.interval``, read from the scheduler's
own expression (``REFRESH_SCHEDULE``, the template's ``RefreshSchedule``). The sweep's horizon and
the engine's slack are derived from it, so they cannot drift apart: the sweep enqueues what falls
due before its next run, and the engine accepts exactly that much early.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tokenbroker.errors import ConfigurationError

MIN_REFRESH_AHEAD = 300.0
REFRESH_AHEAD_FRACTION = 0.10
MIN_REFRESH_TOKEN_MARGIN = 86_400.0
REFRESH_TOKEN_MARGIN_FRACTION = 0.10

BACKOFF_BASE = 30.0
BACKOFF_CAP = 3_600.0
MIN_RETRY_DELAY = 10.0
# The access token is considered gone this long before it expires (clock skew, request time).
DEADLINE_MARGIN = 60.0
# A configuration or account problem is not fixed by retrying: look again after this long.
PROBLEM_PAUSE = 3_600.0

Random = Callable[[], float]


def refresh_ahead(lifetime: float) -> float:
    """How long before expiry a token of this lifetime is refreshed."""
    lifetime = max(0.0, lifetime)
    return min(max(MIN_REFRESH_AHEAD, REFRESH_AHEAD_FRACTION * lifetime), lifetime / 2)


def refresh_token_margin(refresh_lifetime: float) -> float:
    """How long before the refresh token's estimated expiry the last refresh must happen."""
    refresh_lifetime = max(0.0, refresh_lifetime)
    return min(max(MIN_REFRESH_TOKEN_MARGIN, REFRESH_TOKEN_MARGIN_FRACTION * refresh_lifetime), refresh_lifetime / 2)


def next_refresh_at(
    expires_at: float,
    obtained_at: float,
    refresh_expires_at: float | None,
    now: float,
) -> float:
    """The refresh-ahead instant for a token, never earlier than ``now``.

    ``obtained_at`` is when the token was issued (its lifetime is ``expires_at - obtained_at``);
    ``refresh_expires_at`` is the estimate from the catalog's refresh-token lifetime, or None when
    the provider's refresh tokens do not expire (or nobody knows).
    """
    target = expires_at - refresh_ahead(expires_at - obtained_at)
    if refresh_expires_at is not None:
        target = min(target, refresh_expires_at - refresh_token_margin(refresh_expires_at - obtained_at))
    return max(now, target)


def is_due(
    expires_at: float,
    obtained_at: float,
    refresh_expires_at: float | None,
    now: float,
    *,
    slack: float = 0.0,
) -> bool:
    """Whether a token is due for a scheduled refresh, ``slack`` seconds early at most.

    The slack is what lets the sweep enqueue ahead (``SchedulePolicy.slack``, its query horizon).
    It is clamped to half the time a token obtained just now waits until it is due, so such a
    token is never due: a duplicated message after a successful refresh then finds nothing to do.
    """
    # Half of what a fresh token waits until it is due, not half the refresh-ahead lead: a sweep
    # interval longer than the lead (rate(15 minutes), 1-hour tokens) must still get what it enqueues.
    fresh_wait = next_refresh_at(expires_at, obtained_at, refresh_expires_at, obtained_at) - obtained_at
    slack = min(max(0.0, slack), fresh_wait / 2)
    return now + slack >= next_refresh_at(expires_at, obtained_at, refresh_expires_at, now)


def refresh_deadline(expires_at: float | None, refresh_expires_at: float | None, now: float) -> float | None:
    """The latest instant a retry is still useful (see the module docstring), or None."""
    if expires_at is not None and expires_at - DEADLINE_MARGIN > now:
        return expires_at - DEADLINE_MARGIN
    if refresh_expires_at is not None and refresh_expires_at - DEADLINE_MARGIN > now:
        return refresh_expires_at - DEADLINE_MARGIN
    return None


def backoff_delay(failures: int, *, rng: Random = random.random) -> float:
    """Full-jitter exponential delay for the ``failures``-th consecutive failure (1-based)."""
    exponent = min(max(failures, 1) - 1, 32)  # 2**32 * 30 s is far beyond the cap already
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0**exponent)
    return rng() * ceiling


def backoff_until(
    *,
    now: float,
    failures: int,
    expires_at: float | None,
    refresh_expires_at: float | None,
    retry_after: float | None = None,
    rng: Random = random.random,
) -> float:
    """When a connection that just failed transiently becomes eligible for the next attempt."""
    delay = backoff_delay(failures, rng=rng)
    deadline = refresh_deadline(expires_at, refresh_expires_at, now)
    if deadline is not None:
        delay = min(delay, max(MIN_RETRY_DELAY, (deadline - now) / 2))
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, BACKOFF_CAP))
    return now + delay


def pause_until(*, now: float, retry_after: float | None = None) -> float:
    """Next look after a configuration or account problem: long enough that nothing storms."""
    return now + max(PROBLEM_PAUSE, min(retry_after or 0.0, 24 * BACKOFF_CAP))


# --- the sweep's schedule ----------------------------------------------------------------------

DEFAULT_SCHEDULE_EXPRESSION = "rate(5 minutes)"
_UNIT_SECONDS = {"minute": 60, "hour": 3_600, "day": 86_400}
# Exactly what parse_schedule_expression accepts; template.yaml's RefreshSchedule AllowedPattern is
# this same text (tests/template checks both). Singular unit for 1, plural otherwise, as AWS wants.
RATE_PATTERN = r"^rate\((1 (minute|hour|day)|([2-9]|[1-9][0-9]+) (minutes|hours|days))\)$"
_RATE = re.compile(RATE_PATTERN)


def parse_schedule_expression(expression: str) -> float:
    """Seconds between runs of an EventBridge ``rate()`` expression.

    ``cron()`` and ``at()`` are refused: their runs are not evenly spaced (``cron(0 9-17 ? * MON-FRI *)``
    sleeps all weekend), so no single horizon is both safe and cheap. Use ``rate()``.
    """
    match = _RATE.fullmatch(expression)
    if match is None:
        if expression.startswith(("cron(", "at(")):
            raise ConfigurationError(
                f"REFRESH_SCHEDULE must be a rate() expression, got {expression!r}: cron() and at() runs are"
                " not evenly spaced, so the sweep cannot know how far ahead to enqueue"
            )
        raise ConfigurationError(f"REFRESH_SCHEDULE must look like rate(5 minutes), got {expression!r}")
    value, unit = expression[len("rate(") : -1].split(" ")
    return int(value) * _UNIT_SECONDS[unit.removesuffix("s")]


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    """How often the sweep runs (``interval``, seconds) and what follows from it.

    ``horizon_override`` (``SWEEP_HORIZON_SECONDS``) may widen the sweep's horizon, never narrow
    it below the interval: a connection due between two runs would then wait a whole extra cycle.
    """

    interval: float
    horizon_override: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval) and self.interval > 0):
            raise ConfigurationError(f"the refresh schedule interval must be a positive number, got {self.interval!r}")
        override = self.horizon_override
        if override is not None and not (math.isfinite(override) and override >= self.interval):
            raise ConfigurationError(
                f"SWEEP_HORIZON_SECONDS ({override:g}) must be at least the schedule interval ({self.interval:g} s):"
                " connections due between two sweeps would be enqueued a cycle late"
            )

    @property
    def horizon(self) -> float:
        """The sweep enqueues what falls due within this many seconds (before its next run)."""
        return self.interval if self.horizon_override is None else self.horizon_override

    @property
    def slack(self) -> float:
        """How early the engine accepts a scheduled refresh: whatever the sweep enqueued."""
        return self.horizon

    @classmethod
    def from_expression(cls, expression: str, *, horizon_override: float | None = None) -> SchedulePolicy:
        return cls(parse_schedule_expression(expression), horizon_override)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SchedulePolicy:
        """``REFRESH_SCHEDULE`` (the template passes ``RefreshSchedule``), or ``REFRESH_INTERVAL_SECONDS``.

        The second is for schedulers that have no EventBridge expression and run more often than
        once a minute (the local stack); when set, it is the interval and the expression is ignored.
        """
        override = _seconds(env, "SWEEP_HORIZON_SECONDS")
        interval = _seconds(env, "REFRESH_INTERVAL_SECONDS")
        if interval is not None:
            return cls(interval, override)
        expression = env.get("REFRESH_SCHEDULE") or DEFAULT_SCHEDULE_EXPRESSION
        return cls.from_expression(expression, horizon_override=override)


DEFAULT_POLICY = SchedulePolicy.from_expression(DEFAULT_SCHEDULE_EXPRESSION)


def _seconds(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {raw!r}") from None
