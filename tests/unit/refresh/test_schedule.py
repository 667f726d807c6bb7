"""Refresh-ahead and backoff rules (pure functions, no clock, no AWS)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tokenbroker import schedule
from tokenbroker.models import PasswordLogin
from tokenbroker.repository import Schedule, initial_schedule
from tokenbroker.tokens import TokenSet

NOW = 1_800_000_000.0
DAY = 86_400.0


def test_worksection_token_is_refreshed_ten_percent_ahead() -> None:
    # 24 h access token, 30 day refresh token: 10 % of 24 h = 2.4 h beats 5 min.
    at = schedule.next_refresh_at(NOW + DAY, NOW, NOW + 30 * DAY, NOW)
    assert at == NOW + DAY - 0.1 * DAY


def test_short_token_is_refreshed_five_minutes_ahead() -> None:
    at = schedule.next_refresh_at(NOW + 2400, NOW, None, NOW)
    assert at == NOW + 2400 - 300


def test_refresh_token_expiry_pulls_the_refresh_earlier() -> None:
    # Access token 30 days, refresh token 32 days: the refresh token's margin (3.2 days) gives
    # day 28.8, later than the access token's day 27, so refresh-ahead decides.
    at = schedule.next_refresh_at(NOW + 30 * DAY, NOW, NOW + 32 * DAY, NOW)
    assert at == NOW + 27 * DAY
    # Refresh token 29 days: margin 2.9 days -> day 26.1 wins over day 27.
    at = schedule.next_refresh_at(NOW + 30 * DAY, NOW, NOW + 29 * DAY, NOW)
    assert at == NOW + 29 * DAY - 2.9 * DAY


def test_never_earlier_than_now() -> None:
    assert schedule.next_refresh_at(NOW - 10, NOW - 3600, None, NOW) == NOW
    assert schedule.next_refresh_at(NOW + 100, NOW - 3600, NOW + 200, NOW) == NOW


def test_tiny_lifetimes_are_not_always_due() -> None:
    # A 5-minute token would be due at once with a 5-minute lead; the lead is capped at half.
    at = schedule.next_refresh_at(NOW + 300, NOW, None, NOW)
    assert at == NOW + 150
    assert not schedule.is_due(NOW + 300, NOW, None, NOW, slack=300)
    # A 4-hour refresh token is not "due at once" because of a 1-day margin either.
    at = schedule.next_refresh_at(NOW + 2400, NOW, NOW + 4 * 3600, NOW)
    assert at == NOW + 2400 - 300


@given(
    lifetime=st.floats(min_value=1, max_value=400 * DAY),
    refresh_lifetime=st.one_of(st.none(), st.floats(min_value=1, max_value=400 * DAY)),
    age=st.floats(min_value=0, max_value=800 * DAY),
)
def test_next_refresh_at_bounds(lifetime: float, refresh_lifetime: float | None, age: float) -> None:
    obtained = NOW - age
    expires = obtained + lifetime
    refresh_expires = None if refresh_lifetime is None else obtained + refresh_lifetime
    at = schedule.next_refresh_at(expires, obtained, refresh_expires, NOW)
    assert at >= NOW
    assert at <= max(NOW, expires)
    if refresh_expires is not None:
        assert at <= max(NOW, refresh_expires)


@given(
    lifetime=st.floats(min_value=1, max_value=400 * DAY),
    refresh_lifetime=st.one_of(st.none(), st.floats(min_value=1, max_value=400 * DAY)),
    slack=st.floats(min_value=0, max_value=DAY),
)
def test_a_token_obtained_now_is_never_due(lifetime: float, refresh_lifetime: float | None, slack: float) -> None:
    refresh_expires = None if refresh_lifetime is None else NOW + max(refresh_lifetime, 4 * lifetime)
    assert not schedule.is_due(NOW + lifetime, NOW, refresh_expires, NOW, slack=slack)


def test_due_with_slack() -> None:
    expires = NOW + DAY
    due_at = expires - 0.1 * DAY
    assert not schedule.is_due(expires, NOW, None, due_at - 301, slack=300)
    assert schedule.is_due(expires, NOW, None, due_at - 299, slack=300)
    assert schedule.is_due(expires, NOW, None, due_at + 1)


def test_backoff_grows_exponentially_and_is_capped() -> None:
    top = lambda: 1.0  # noqa: E731 - the upper edge of the jitter
    assert schedule.backoff_delay(1, rng=top) == 30
    assert schedule.backoff_delay(2, rng=top) == 60
    assert schedule.backoff_delay(5, rng=top) == 480
    assert schedule.backoff_delay(8, rng=top) == 3600
    assert schedule.backoff_delay(10_000, rng=top) == 3600
    assert schedule.backoff_delay(3, rng=lambda: 0.5) == 60


def test_backoff_honours_retry_after_as_a_floor() -> None:
    at = schedule.backoff_until(
        now=NOW, failures=1, expires_at=NOW + DAY, refresh_expires_at=None, retry_after=120, rng=lambda: 0.0
    )
    assert at == NOW + 120
    # Larger jitter wins over a smaller Retry-After.
    at = schedule.backoff_until(
        now=NOW, failures=5, expires_at=NOW + DAY, refresh_expires_at=None, retry_after=120, rng=lambda: 1.0
    )
    assert at == NOW + 480
    # A bogus Retry-After is clamped to the cap.
    at = schedule.backoff_until(
        now=NOW, failures=1, expires_at=NOW + DAY, refresh_expires_at=None, retry_after=10 * DAY, rng=lambda: 0.0
    )
    assert at == NOW + 3600


def test_backoff_stays_before_the_access_token_deadline() -> None:
    # 10 minutes left, 8th failure (1 h jitter ceiling): retry at most halfway to expiry - 60 s.
    at = schedule.backoff_until(
        now=NOW, failures=8, expires_at=NOW + 600, refresh_expires_at=NOW + DAY, rng=lambda: 1.0
    )
    assert at == NOW + 270
    # Right at the deadline: never tighter than the minimum retry delay.
    at = schedule.backoff_until(now=NOW, failures=8, expires_at=NOW + 65, refresh_expires_at=None, rng=lambda: 1.0)
    assert at == NOW + schedule.MIN_RETRY_DELAY


def test_after_access_expiry_the_refresh_token_is_the_deadline() -> None:
    at = schedule.backoff_until(
        now=NOW, failures=8, expires_at=NOW - 10, refresh_expires_at=NOW + 1000, rng=lambda: 1.0
    )
    assert at == NOW + (1000 - 60) / 2
    # Nothing left to protect: plain capped backoff.
    at = schedule.backoff_until(now=NOW, failures=8, expires_at=NOW - 10, refresh_expires_at=None, rng=lambda: 1.0)
    assert at == NOW + 3600


def test_retry_after_wins_over_the_deadline() -> None:
    at = schedule.backoff_until(
        now=NOW, failures=1, expires_at=NOW + 200, refresh_expires_at=None, retry_after=900, rng=lambda: 1.0
    )
    assert at == NOW + 900


@given(
    failures=st.integers(min_value=1, max_value=100),
    jitter=st.floats(min_value=0, max_value=1),
    left=st.floats(min_value=-DAY, max_value=60 * DAY),
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=10 * DAY)),
)
def test_backoff_bounds(failures: int, jitter: float, left: float, retry_after: float | None) -> None:
    at = schedule.backoff_until(
        now=NOW,
        failures=failures,
        expires_at=NOW + left,
        refresh_expires_at=None,
        retry_after=retry_after,
        rng=lambda: jitter,
    )
    assert NOW <= at <= NOW + schedule.BACKOFF_CAP
    if retry_after:
        assert at >= NOW + min(retry_after, schedule.BACKOFF_CAP)


def test_problem_pause_is_long() -> None:
    assert schedule.pause_until(now=NOW) == NOW + 3600
    assert schedule.pause_until(now=NOW, retry_after=7200) == NOW + 7200


# --- the schedule a connect flow starts a grant with (repository.initial_schedule) ---------------


def _grant(*, refresh_token: str | None) -> TokenSet:
    return TokenSet("a", "Bearer", expires_at=int(NOW + DAY), obtained_at=int(NOW), refresh_token=refresh_token)


def test_a_new_grant_is_due_refresh_ahead_and_its_refresh_token_expiry_is_estimated() -> None:
    initial = initial_schedule(_grant(refresh_token="r"), refresh_token_ttl=30 * DAY, login=None, now=NOW)
    assert initial == Schedule(NOW + DAY, NOW + 30 * DAY, schedule.next_refresh_at(NOW + DAY, NOW, NOW + 30 * DAY, NOW))
    assert initial.next_refresh_at == NOW + DAY - 0.1 * DAY


def test_a_new_grant_without_a_known_refresh_token_lifetime_has_no_estimate() -> None:
    initial = initial_schedule(_grant(refresh_token="r"), refresh_token_ttl=None, login=None, now=NOW)
    assert initial.refresh_expires_at is None
    assert initial.next_refresh_at == NOW + DAY - 0.1 * DAY


def test_a_new_grant_with_nothing_to_refresh_with_is_never_due() -> None:
    initial = initial_schedule(_grant(refresh_token=None), refresh_token_ttl=30 * DAY, login=None, now=NOW)
    assert initial == Schedule(NOW + DAY, None, None)
    # A stored login re-authenticates instead: the grant is scheduled like any other.
    login = PasswordLogin("ann@example.com", "correct-horse-battery")
    relogin = initial_schedule(_grant(refresh_token=None), refresh_token_ttl=30 * DAY, login=login, now=NOW)
    assert relogin == Schedule(NOW + DAY, None, NOW + DAY - 0.1 * DAY)
