"""Pure parts of the stores: request tokens, shards, cursors, number encoding, expressions."""

from __future__ import annotations

import base64
import json
from collections import Counter

import pytest
from tokenbroker.errors import InvalidInput
from tokenbroker.keys import ConnectionKey
from tokenbroker.stores._dynamo import Expression, decode_cursor, encode_cursor, get_n, n
from tokenbroker.stores.connections import due_shard
from tokenbroker.stores.tokens import TokenStore

KEY = ConnectionKey("worksection", "acme")


def token_store(stage: str = "dev") -> TokenStore:
    return TokenStore(object(), stage=stage)  # type: ignore[arg-type]  # no call is made


def test_client_request_token_is_deterministic_and_valid_for_secrets_manager() -> None:
    store = token_store()
    token = store.client_request_token(KEY, 7)
    assert token == token_store().client_request_token(KEY, 7)
    assert 32 <= len(token) <= 64


def test_client_request_token_differs_by_generation_stage_and_key() -> None:
    store = token_store()
    tokens = {
        store.client_request_token(KEY, 7),
        store.client_request_token(KEY, 8),
        token_store("prod").client_request_token(KEY, 7),
        store.client_request_token(ConnectionKey("worksection", "other"), 7),
    }
    assert len(tokens) == 4


def test_every_write_of_one_generation_competes_for_one_version_whatever_its_status() -> None:
    """A needs_reauth mark and the re-connect it races write the same next generation: one wins."""
    assert token_store().client_request_token(KEY, 7) == token_store().client_request_token(KEY, 7)


def test_secret_names_follow_the_design() -> None:
    assert token_store().secret_name(KEY) == "tokenbroker/dev/worksection/acme"


@pytest.mark.parametrize("stage", ["", "a/b", "x" * 33, "dev prod"])
def test_bad_stages_are_refused(stage: str) -> None:
    with pytest.raises(InvalidInput):
        token_store(stage)


def test_due_shard_is_stable_and_spreads_keys() -> None:
    assert due_shard(KEY, 16) == due_shard(ConnectionKey("worksection", "acme"), 16)
    counts = Counter(due_shard(ConnectionKey("workly", f"c{i}"), 16) for i in range(1600))
    assert set(counts) == {f"due#{i}" for i in range(16)}
    assert max(counts.values()) < 2 * min(counts.values())


def test_numbers_keep_integers_and_milliseconds() -> None:
    assert n(5) == {"N": "5"}
    assert n(5.0) == {"N": "5"}
    assert n(1_800_000_000.12345) == {"N": "1800000000.123"}
    assert n(1e20) == {"N": "100000000000000000000"}
    assert get_n({"x": n(12.5)}, "x") == 12.5
    assert get_n({}, "x") is None


def test_cursor_round_trip_and_forgeries() -> None:
    cursor = encode_cursor({"p": "workly", "c": "abc"})
    assert "abc" not in cursor
    assert decode_cursor(cursor) == {"p": "workly", "c": "abc"}
    forged = base64.urlsafe_b64encode(json.dumps({"p": 1}).encode()).decode()
    for bad in ("%%%", "bm90IGpzb24", forged, base64.urlsafe_b64encode(b"[1]").decode()):
        with pytest.raises(InvalidInput):
            decode_cursor(bad)


def test_expression_aliases_every_name_and_value() -> None:
    update = Expression().set("status", {"S": "active"}).remove("ttl").add("generation", n(1))
    assert update.update_expression() == "SET #status = :v0 REMOVE #ttl ADD #generation :v1"
    assert update.names == {"#status": "status", "#ttl": "ttl", "#generation": "generation"}
    assert update.values == {":v0": {"S": "active"}, ":v1": {"N": "1"}}
