"""Records of the stores: the secret JSON is deterministic and secrets stay out of every repr."""

from __future__ import annotations

import json

import pytest
from tokenbroker.errors import (
    ProviderError,
    ProviderErrorKind,
)
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import (
    MAX_ERROR_MESSAGE_LENGTH,
    Connection,
    ConnectionStatus,
    LastError,
    Lease,
    PasswordLogin,
    StoredToken,
)
from tokenbroker.tokens import TokenSet

TOKEN = TokenSet(
    access_token="AT-secret",
    refresh_token="RT-secret",
    token_type="Bearer",
    expires_at=1_800_003_600,
    obtained_at=1_800_000_000,
    scopes=("b", "a"),
    extra={"account_url": "https://acme.worksection.com"},
)


def test_stored_token_round_trips_through_json() -> None:
    stored = StoredToken(
        TOKEN, generation=5, status=ConnectionStatus.NEEDS_REAUTH, metadata={"u": "1"}, login=PasswordLogin("u", "pw")
    )
    assert StoredToken.from_json(stored.to_json()) == stored


def test_stored_token_json_is_deterministic_whatever_the_insertion_order() -> None:
    one = StoredToken(TOKEN, generation=1, metadata={"a": "1", "b": "2"})
    two = StoredToken(TOKEN, generation=1, metadata={"b": "2", "a": "1"})
    assert one.to_json() == two.to_json()
    assert list(json.loads(one.to_json())) == sorted(json.loads(one.to_json()))


def test_stored_token_without_login_has_no_login_field() -> None:
    data = json.loads(StoredToken(TOKEN, generation=1).to_json())
    assert "login" not in data
    assert data["status"] == "active"
    assert StoredToken.from_json(json.dumps(data)).login is None


def test_from_json_refuses_a_non_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        StoredToken.from_json("[1, 2]")


def test_reprs_hide_tokens_and_passwords() -> None:
    stored = StoredToken(TOKEN, generation=1, login=PasswordLogin("user@x.test", "hunter2"))
    text = repr(stored)
    assert "AT-secret" not in text
    assert "RT-secret" not in text
    assert "hunter2" not in text
    assert "user@x.test" in text


def test_last_error_is_truncated_and_built_from_safe_error_fields() -> None:
    error = ProviderError(ProviderErrorKind.TRANSIENT, "x" * 2000, provider="workly", status=503)
    last = LastError.from_exception(error, at=12.5)
    assert last.code == "provider_unavailable"
    assert len(last.message) == MAX_ERROR_MESSAGE_LENGTH
    assert last.at == 12.5


def test_connection_lease_helpers() -> None:
    connection = Connection(
        key=ConnectionKey("workly", "c"),
        status=ConnectionStatus.ACTIVE,
        generation=1,
        expires_at=None,
        refresh_expires_at=None,
        next_refresh_at=None,
        lease=Lease("owner", until=100.0),
        attempt=None,
        failures=0,
        last_error=None,
        metadata={},
        scopes=(),
        created_at=0.0,
        updated_at=0.0,
    )
    assert connection.is_active
    assert connection.lease_held(100.0)
    assert not connection.lease_held(100.001)
