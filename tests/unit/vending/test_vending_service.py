"""VendingService decisions against in-memory collaborators (the AWS-backed paths are integration tests)."""

from __future__ import annotations

import hashlib

import pytest
from tokenbroker.api.statuses import http_status
from tokenbroker.clock import ManualClock
from tokenbroker.errors import (
    ConnectionNotFound,
    InvalidInput,
    NeedsReauthorization,
    ProviderError,
    ProviderErrorKind,
    RefreshInProgress,
    UnknownProvider,
)
from tokenbroker.events import EventType, MemorySink
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import ConnectionStatus, StoredToken
from tokenbroker.repository import ConnectionRepository
from tokenbroker.vending import VendingService, needs_refresh, validate_min_ttl

from tests.support.errors import raises_kind
from tests.unit.vending.fakes import (
    KEY,
    NOW,
    FakeCatalog,
    FakeConnections,
    FakeRefresher,
    FakeTokens,
    Result,
    connection,
    newer,
    stored,
)


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def service(
    tokens: FakeTokens,
    refresher: FakeRefresher | None = None,
    *,
    connections: FakeConnections | None = None,
    wait_seconds: float = 2.0,
    events: MemorySink | None = None,
    catalog: FakeCatalog | None = None,
) -> tuple[VendingService, ManualClock]:
    clock = ManualClock(NOW)
    vending = VendingService(
        repository=ConnectionRepository(items=connections or FakeConnections(), secrets=tokens, clock=clock),
        refresher=refresher or FakeRefresher(Result("refreshed")),
        clock=clock,
        wait_seconds=wait_seconds,
        events=events,
        catalog=catalog,
    )
    return vending, clock


# --- vend --------------------------------------------------------------------------------------


def test_a_fresh_token_is_answered_from_one_read_without_a_refresh() -> None:
    tokens = FakeTokens(stored(expires_in=3600))
    refresher = FakeRefresher(Result("refreshed"))
    vending, _ = service(tokens, refresher)

    vended = vending.vend(KEY, min_ttl=60)

    assert tokens.gets == 1
    assert refresher.calls == []
    assert vended.access_token == "access-token-0001"
    assert vended.expires_in == 3600
    assert vended.generation == 3
    assert vended.token_type == "Bearer"
    body = vended.to_json()
    assert set(body) == {"access_token", "token_type", "expires_at", "expires_in", "scopes", "generation", "metadata"}
    assert body["metadata"] == {"account_url": "https://acme.worksection.com", "user_email": "ann@example.com"}
    assert "refresh-token-0001" not in repr(body) and "id-token-secret-0001" not in repr(body)
    assert "access-token-0001" not in repr(vended)


def test_an_expiring_token_is_refreshed_through_the_engine_with_a_min_ttl_predicate() -> None:
    old = stored(expires_in=30)
    new = newer(old, "access-token-0002")
    refresher = FakeRefresher(Result("refreshed", generation=4, stored=new))
    vending, clock = service(FakeTokens(old), refresher)

    vended = vending.vend(KEY, min_ttl=60)

    assert refresher.calls == [(KEY, "vend")]
    assert vended.access_token == "access-token-0002" and vended.generation == 4
    predicate = refresher.predicates[0]
    assert predicate(old) is True  # 30 s left < 60
    assert predicate(new) is False
    clock.advance(10)
    assert predicate(stored(expires_in=65)) is True  # the predicate reads the clock when evaluated


def test_not_needed_answers_the_token_the_engine_re_read() -> None:
    old = stored(expires_in=10)
    fresh = newer(old, "access-token-0002")
    vending, _ = service(FakeTokens(old), FakeRefresher(Result("not_needed", stored=fresh)))
    assert vending.vend(KEY, 60).access_token == "access-token-0002"


def test_not_needed_without_a_token_re_reads_the_secret() -> None:
    old = stored(expires_in=10)
    tokens = FakeTokens(old, newer(old, "access-token-0002"))
    vending, _ = service(tokens, FakeRefresher(Result("not_needed")))
    assert vending.vend(KEY, 60).access_token == "access-token-0002"
    assert tokens.gets == 2


@pytest.mark.parametrize("value", [-1, 86_401, "abc", "1.5", "", " 5", True, 2.0, None, "٣"])
def test_min_ttl_outside_0_to_86400_or_not_an_integer_is_bad_input(value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_min_ttl(value)
    assert caught.value.field == "min_ttl" and http_status(caught.value) == 400


@pytest.mark.parametrize(("value", "expected"), [(0, 0), ("0", 0), ("86400", 86_400), (60, 60)])
def test_min_ttl_accepts_integers_and_digit_strings(value: object, expected: int) -> None:
    assert validate_min_ttl(value) == expected


def test_min_ttl_beyond_the_token_lifetime_does_not_refresh_a_nearly_new_token() -> None:
    # Worksection tokens live 86400 s; a vend asking for 86400 must not rotate on every call.
    just_obtained = stored(expires_in=86_390, lifetime=86_400)
    assert needs_refresh(just_obtained, 86_400, NOW) is False
    aged = stored(expires_in=70_000, lifetime=86_400)
    assert needs_refresh(aged, 86_400, NOW) is True
    # Below the lifetime, min_ttl is honoured exactly.
    assert needs_refresh(stored(expires_in=50, lifetime=100), 60, NOW) is True
    assert needs_refresh(stored(expires_in=60, lifetime=100), 60, NOW) is False


def test_an_expired_token_is_always_refreshed() -> None:
    assert needs_refresh(stored(expires_in=-5, lifetime=2), 0, NOW) is True
    assert needs_refresh(stored(expires_in=-5, lifetime=2), 60, NOW) is True


@pytest.mark.parametrize("status", [ConnectionStatus.NEEDS_REAUTH, ConnectionStatus.DISABLED])
def test_a_connection_that_needs_reauth_answers_409_without_a_refresh(status: ConnectionStatus) -> None:
    refresher = FakeRefresher(Result("refreshed"))
    vending, _ = service(FakeTokens(stored(expires_in=5, status=status)), refresher)
    with pytest.raises(NeedsReauthorization) as caught:
        vending.vend(KEY, 60)
    assert http_status(caught.value) == 409
    assert "POST /connect-sessions" in caught.value.message
    assert refresher.calls == []


def test_a_refresh_ending_in_needs_reauth_answers_409() -> None:
    vending, _ = service(FakeTokens(stored(expires_in=5)), FakeRefresher(Result("needs_reauth")))
    with pytest.raises(NeedsReauthorization):
        vending.vend(KEY, 60)


def test_a_transient_refresh_failure_answers_503_with_retry_after() -> None:
    error = ProviderError(ProviderErrorKind.TRANSIENT, "timeout", provider="worksection", retry_after=17)
    vending, _ = service(FakeTokens(stored(expires_in=5)), FakeRefresher(Result("transient_failure", error=error)))
    with raises_kind(ProviderErrorKind.TRANSIENT) as caught:
        vending.vend(KEY, 60)
    assert http_status(caught.value) == 503 and caught.value.code == "provider_unavailable"
    assert caught.value.retry_after == 17


def test_a_transient_failure_without_a_hint_still_has_a_retry_after() -> None:
    vending, _ = service(FakeTokens(stored(expires_in=5)), FakeRefresher(Result("transient_failure")))
    with raises_kind(ProviderErrorKind.TRANSIENT) as caught:
        vending.vend(KEY, 60)
    assert caught.value.retry_after is not None and caught.value.retry_after > 0


def test_a_configuration_failure_keeps_its_own_error() -> None:
    error = ProviderError(
        ProviderErrorKind.CONFIGURATION, "invalid client", provider="worksection", provider_code="invalid_client"
    )
    vending, _ = service(FakeTokens(stored(expires_in=5)), FakeRefresher(Result("configuration_failure", error=error)))
    with raises_kind(ProviderErrorKind.CONFIGURATION):
        vending.vend(KEY, 60)


def test_an_unknown_connection_is_404() -> None:
    vending, _ = service(FakeTokens())
    with pytest.raises(ConnectionNotFound) as caught:
        vending.vend(KEY, 60)
    assert http_status(caught.value) == 404


def test_an_unknown_provider_is_404_before_any_aws_call() -> None:
    tokens = FakeTokens(stored())
    vending, _ = service(tokens, catalog=FakeCatalog("workly"))
    with pytest.raises(UnknownProvider) as caught:
        vending.vend(KEY, 60)
    assert http_status(caught.value) == 404
    assert tokens.gets == 0


# --- waiting for another worker's refresh --------------------------------------------------------


def test_contention_waits_for_the_winners_generation_instead_of_refreshing_again() -> None:
    old = stored(expires_in=5)
    new = newer(old, "access-token-0002")
    tokens = FakeTokens(old, old, old, new)
    refresher = FakeRefresher(Result("contended"))
    vending, clock = service(tokens, refresher, wait_seconds=5)

    vended = vending.vend(KEY, 60)

    assert vended.access_token == "access-token-0002"
    assert len(refresher.calls) == 1
    assert tokens.gets == 4
    assert clock.now() - NOW < 1  # a few short polls, not the whole budget


def test_contention_that_outlasts_the_wait_answers_refresh_in_progress() -> None:
    old = stored(expires_in=5)
    tokens = FakeTokens(old)
    vending, clock = service(tokens, FakeRefresher(Result("contended", retry_after=3)), wait_seconds=2)

    with pytest.raises(RefreshInProgress) as caught:
        vending.vend(KEY, 60)

    assert http_status(caught.value) == 503
    assert caught.value.retry_after == 3
    assert clock.now() - NOW == pytest.approx(2)
    assert 2 < tokens.gets < 20  # bounded polling


def test_a_newer_generation_that_is_still_stale_is_not_accepted() -> None:
    old = stored(expires_in=5)
    still_stale = newer(old, "access-token-0002", expires_in=10)
    tokens = FakeTokens(old, still_stale)
    vending, _ = service(tokens, FakeRefresher(Result("contended")), wait_seconds=1)
    with pytest.raises(RefreshInProgress):
        vending.vend(KEY, 60)


def test_needs_reauth_written_while_waiting_ends_the_wait_with_409() -> None:
    old = stored(expires_in=5)
    dead = StoredToken(token=old.token, generation=4, status=ConnectionStatus.NEEDS_REAUTH)
    vending, _ = service(FakeTokens(old, dead), FakeRefresher(Result("contended")), wait_seconds=5)
    with pytest.raises(NeedsReauthorization):
        vending.vend(KEY, 60)


def test_zero_wait_answers_refresh_in_progress_at_once() -> None:
    tokens = FakeTokens(stored(expires_in=5))
    vending, _ = service(tokens, FakeRefresher(Result("contended")), wait_seconds=0)
    with pytest.raises(RefreshInProgress):
        vending.vend(KEY, 60)
    assert tokens.gets == 1


# --- compare-and-refresh -------------------------------------------------------------------------


def test_a_stale_rejected_hash_returns_the_current_token_without_refreshing() -> None:
    current = stored("access-token-0002", generation=5)
    refresher = FakeRefresher(Result("refreshed"))
    tokens = FakeTokens(current)
    vending, _ = service(tokens, refresher)

    vended = vending.refresh_rejected(KEY, sha("access-token-0001"))

    assert vended.access_token == "access-token-0002"
    assert refresher.calls == []
    assert tokens.gets == 1


def test_the_current_rejected_hash_refreshes_once_with_a_compare_predicate() -> None:
    current = stored("access-token-0001")
    new = newer(current, "access-token-0002")
    refresher = FakeRefresher(Result("refreshed", stored=new))
    vending, _ = service(FakeTokens(current), refresher)

    vended = vending.refresh_rejected(KEY, sha("access-token-0001"))

    assert vended.access_token == "access-token-0002"
    assert refresher.calls == [(KEY, "vend")]
    predicate = refresher.predicates[0]
    assert predicate(current) is True
    assert predicate(new) is False


def test_without_a_hash_the_seen_generation_is_refreshed() -> None:
    current = stored("access-token-0001", generation=7)
    new = newer(current, "access-token-0002")
    refresher = FakeRefresher(Result("refreshed", stored=new))
    vending, _ = service(FakeTokens(current), refresher)

    assert vending.refresh_rejected(KEY).access_token == "access-token-0002"
    predicate = refresher.predicates[0]
    assert predicate(current) is True
    assert predicate(new) is False  # someone else already refreshed: single-flight


def test_compare_and_refresh_under_contention_waits_for_any_newer_generation() -> None:
    current = stored("access-token-0001")
    new = newer(current, "access-token-0002")
    vending, _ = service(FakeTokens(current, current, new), FakeRefresher(Result("contended")))
    assert vending.refresh_rejected(KEY, sha("access-token-0001")).access_token == "access-token-0002"


@pytest.mark.parametrize("value", ["abc", "A" * 64, "g" * 64, sha("x") + "0", "access-token-0001"])
def test_a_malformed_hash_is_bad_input(value: str) -> None:
    vending, _ = service(FakeTokens(stored()))
    with pytest.raises(InvalidInput) as caught:
        vending.refresh_rejected(KEY, value)
    assert caught.value.field == "rejected_token_sha256"
    assert "access-token-0001" not in caught.value.message


# --- connections ---------------------------------------------------------------------------------


def test_get_connection_shows_status_and_metadata_never_tokens() -> None:
    vending, _ = service(FakeTokens(stored()), connections=FakeConnections(connection(lease_until=NOW + 30)))
    view = vending.get_connection(KEY).to_json()
    assert view["status"] == "active" and view["generation"] == 3
    assert view["refresh_in_progress"] is True
    assert view["metadata"] == {"user_email": "ann@example.com"}
    assert "access_token" not in view and "refresh_token" not in view


def test_an_expired_lease_is_not_a_refresh_in_progress() -> None:
    vending, _ = service(FakeTokens(), connections=FakeConnections(connection(lease_until=NOW - 1)))
    assert vending.get_connection(KEY).refresh_in_progress is False


def test_get_connection_of_an_unknown_connection_is_404() -> None:
    vending, _ = service(FakeTokens())
    with pytest.raises(ConnectionNotFound):
        vending.get_connection(KEY)


def test_list_connections_pages_through_the_store() -> None:
    items = [connection(ConnectionKey("worksection", f"c{i}")) for i in range(3)]
    store = FakeConnections(*items, connection(ConnectionKey("workly", "w1")))
    vending, _ = service(FakeTokens(), connections=store)

    page = vending.list_connections("worksection", limit=2, cursor="abc")

    assert [c.connection_id for c in page.connections] == ["c0", "c1"]
    assert page.cursor == "next-page"
    assert store.list_calls == [("worksection", 2, "abc")]
    assert page.to_json()["cursor"] == "next-page"


def test_list_connections_rejects_a_bad_provider_name() -> None:
    vending, _ = service(FakeTokens())
    with pytest.raises(InvalidInput):
        vending.list_connections("Bad Name!")


def test_delete_removes_secret_and_item_and_publishes_an_event() -> None:
    tokens = FakeTokens(stored())
    store = FakeConnections(connection())
    events = MemorySink()
    vending, _ = service(tokens, connections=store, events=events)

    vending.delete_connection(KEY)

    assert tokens.deleted == [KEY]
    assert store.get(KEY) is None
    (event,) = events.of_type(EventType.CONNECTION_DELETED)
    assert (event.provider, event.connection_id, event.generation) == ("worksection", "acme-1", 3)


def test_deleting_an_unknown_connection_is_404_and_publishes_nothing() -> None:
    events = MemorySink()
    vending, _ = service(FakeTokens(), events=events)
    with pytest.raises(ConnectionNotFound):
        vending.delete_connection(KEY)
    assert events.events == []
