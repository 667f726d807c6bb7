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
"""

from __future__ import annotations

import random
from collections.abc import Callable

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

    The slack is what lets the sweep enqueue a little ahead (its query horizon). It is clamped to
    half the refresh-ahead lead so that a token obtained just now is never due: a duplicated
    message after a successful refresh then finds nothing to do.
    """
    lead = refresh_ahead(expires_at - obtained_at)
    slack = min(max(0.0, slack), lead / 2)
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
