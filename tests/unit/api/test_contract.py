"""tokenbroker.api.contract: every request parser accepts what the API documents and refuses the
rest with a 400 naming the field; the answer readers take the broker's answers and refuse others."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tokenbroker.api import contract
from tokenbroker.api.contract import ConnectRequest, MalformedAnswer
from tokenbroker.errors import InvalidInput
from tokenbroker.keys import ConnectionKey

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def refused(call: Any, *args: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args)
    return caught.value


# --- shapes -------------------------------------------------------------------------------------


def test_body_fields_come_from_the_shapes_including_not_required_keys() -> None:
    assert contract.fields_of(contract.RefreshRequest) == {"rejected_token_sha256"}
    assert contract.fields_of(contract.ConfirmRequest) == {"end_user_id"}
    assert contract.fields_of(contract.ConnectSessionRequest) == {
        "provider",
        "connection_id",
        "return_to",
        "scopes",
        "metadata",
        "end_user_id",
        "confirm",
    }
    assert contract.ConnectSessionRequest.__required_keys__ == {"provider", "connection_id"}


def test_the_token_answer_never_has_a_refresh_token() -> None:
    assert "refresh_token" not in contract.fields_of(contract.TokenAnswer)


def test_error_answer_carries_retry_after_only_when_given() -> None:
    assert contract.error_answer("bad_request", "no") == {"error": "bad_request", "message": "no"}
    assert contract.error_answer("refresh_in_progress", "wait", 2)["retry_after"] == 2


# --- body_object and known_fields ---------------------------------------------------------------

ALLOWED = frozenset({"a", "b"})


@pytest.mark.parametrize("raw", [None, "", "  \n"])
def test_an_empty_body_is_an_empty_object(raw: str | None) -> None:
    assert contract.body_object(raw, ALLOWED) == {}


def test_a_body_with_known_fields_is_parsed() -> None:
    assert contract.body_object('{"a": 1}', ALLOWED) == {"a": 1}


@pytest.mark.parametrize("raw", ["{", "nope", "[" * 100_000])
def test_a_body_that_is_not_json_is_refused(raw: str) -> None:
    error = refused(contract.body_object, raw, ALLOWED)
    assert (error.field, error.message) == ("body", "the body must be JSON")


@pytest.mark.parametrize("raw", ["[]", '"a"', "1", "null"])
def test_a_body_that_is_not_an_object_is_refused(raw: str) -> None:
    assert refused(contract.body_object, raw, ALLOWED).message == "the body must be a JSON object"


def test_unknown_fields_are_refused_by_name_never_by_value() -> None:
    error = refused(contract.body_object, json.dumps({"a": 1, "zz": "secret-token-value", "c": 2}), ALLOWED)
    assert error.message == "unknown field(s): c, zz"
    assert "secret-token-value" not in error.message


# --- connection key, provider -------------------------------------------------------------------


def test_parse_key() -> None:
    assert contract.parse_key("worksection", "acme-1") == ConnectionKey("worksection", "acme-1")


@pytest.mark.parametrize(
    ("provider", "connection_id", "field"),
    [
        ("Worksection", "acme-1", "provider"),
        (None, "acme-1", "provider"),
        ("apps", "acme-1", "provider"),
        ("worksection", "a/b", "connection_id"),
        ("worksection", "..", "connection_id"),
        ("worksection", None, "connection_id"),
        ("worksection", "x" * 129, "connection_id"),
    ],
)
def test_parse_key_refuses(provider: object, connection_id: object, field: str) -> None:
    assert refused(contract.parse_key, provider, connection_id).field == field


def test_parse_provider() -> None:
    assert contract.parse_provider("workly") == "workly"
    assert refused(contract.parse_provider, None).message == "provider is required"
    assert refused(contract.parse_provider, "Not A Name").field == "provider"
    assert refused(contract.parse_provider, 7).field == "provider"


# --- min_ttl, limit, cursor ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(None, 60), (0, 0), ("300", 300), (86_400, 86_400)])
def test_parse_min_ttl(value: object, expected: int) -> None:
    assert contract.parse_min_ttl(value) == expected


@pytest.mark.parametrize("value", [-1, 86_401, "1e3", "-5", " 5", "٣", True, 1.5, [], ""])
def test_parse_min_ttl_refuses(value: object) -> None:
    assert refused(contract.parse_min_ttl, value).field == "min_ttl"


@pytest.mark.parametrize(("value", "expected"), [(None, 50), (1, 1), ("100", 100), (7, 7)])
def test_parse_limit(value: object, expected: int) -> None:
    assert contract.parse_limit(value) == expected


@pytest.mark.parametrize("value", [0, 101, "0", "abc", False, 2.0, "", {}])
def test_parse_limit_refuses(value: object) -> None:
    assert refused(contract.parse_limit, value).field == "limit"


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("abc", "abc"), ("c" * 2048, "c" * 2048)])
def test_parse_cursor(value: object, expected: str | None) -> None:
    assert contract.parse_cursor(value) == expected


@pytest.mark.parametrize("value", ["c" * 2049, 5, ["a"]])
def test_parse_cursor_refuses(value: object) -> None:
    assert refused(contract.parse_cursor, value).field == "cursor"


# --- rejected_token_sha256, end_user_id, session_id ---------------------------------------------


def test_parse_rejected() -> None:
    assert contract.parse_rejected(None) is None
    assert contract.parse_rejected(SHA) == SHA


@pytest.mark.parametrize("value", [SHA.upper(), SHA[:-1], SHA + "0", "z" * 64, 5, "access-token-0001"])
def test_parse_rejected_refuses(value: object) -> None:
    error = refused(contract.parse_rejected, value)
    assert error.field == "rejected_token_sha256"
    assert not isinstance(value, str) or value not in error.message  # never echoes what was sent


def test_parse_end_user_id() -> None:
    assert contract.parse_end_user_id("user-ann") == "user-ann"
    assert contract.parse_end_user_id("u" * 256) == "u" * 256


@pytest.mark.parametrize(
    ("value", "message"), [(None, "end_user_id is required"), ("", None), ("u" * 257, None), (7, None)]
)
def test_parse_end_user_id_refuses(value: object, message: str | None) -> None:
    error = refused(contract.parse_end_user_id, value)
    assert error.field == "end_user_id"
    assert message is None or error.message == message


def test_parse_session_id() -> None:
    assert contract.parse_session_id("s3ss10n") == "s3ss10n"
    assert refused(contract.parse_session_id, None).field == "session_id"
    assert refused(contract.parse_session_id, 12).field == "session_id"


# --- the connect-session request ----------------------------------------------------------------

CONNECT = {"provider": "workly", "connection_id": "w-1"}


def test_connect_request_minimal_and_full() -> None:
    assert ConnectRequest.parse(CONNECT) == ConnectRequest("workly", "w-1", None, None, None, None, False)
    full = ConnectRequest.parse(
        {
            **CONNECT,
            "return_to": "https://app.example.com/done",
            "scopes": ["a"],
            "metadata": {"team": "x"},
            "end_user_id": "user-ann",
            "confirm": True,
        }
    )
    assert full == ConnectRequest(
        "workly", "w-1", "https://app.example.com/done", ["a"], {"team": "x"}, "user-ann", True
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"provider": None}, "provider"),
        ({"provider": "NOPE"}, "provider"),
        ({"connection_id": "a b"}, "connection_id"),
        ({"return_to": ""}, "return_to"),
        ({"return_to": "x" * 2049}, "return_to"),
        ({"return_to": 5}, "return_to"),
        ({"scopes": "a b"}, "scopes"),
        ({"metadata": ["x"]}, "metadata"),
        ({"confirm": "yes"}, "confirm"),
        ({"end_user_id": "u" * 257}, "end_user_id"),
    ],
)
def test_connect_request_refuses(change: dict[str, Any], field: str) -> None:
    assert refused(ConnectRequest.parse, {**CONNECT, **change}).field == field


# --- answer readers (the SDK's side) ------------------------------------------------------------

TOKEN = {
    "access_token": "access-token-0001",
    "token_type": "Bearer",
    "expires_at": 1_800_003_600,
    "expires_in": 3600,
    "scopes": ["projects_read"],
    "generation": 3,
    "metadata": {"account_url": "https://acme.worksection.com"},
}


def test_read_token_answer_takes_the_broker_answer_as_is() -> None:
    assert contract.read_token_answer(TOKEN) == TOKEN


def test_read_token_answer_defaults_what_an_older_broker_left_out() -> None:
    answer = contract.read_token_answer({"access_token": "t", "expires_at": "5", "expires_in": 4})
    assert answer == {
        "access_token": "t",
        "token_type": "Bearer",
        "expires_at": 5,
        "expires_in": 4,
        "scopes": [],
        "generation": 0,
        "metadata": {},
    }


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "token",
        {k: v for k, v in TOKEN.items() if k != "access_token"},
        {k: v for k, v in TOKEN.items() if k != "expires_at"},
        {**TOKEN, "expires_in": "soon"},
        {**TOKEN, "metadata": ["x"]},
    ],
)
def test_read_token_answer_refuses(data: object) -> None:
    with pytest.raises(MalformedAnswer):
        contract.read_token_answer(data)


CONNECTION = {"provider": "worksection", "connection_id": "acme-1", "status": "active"}


def test_read_connection_answer() -> None:
    answer = contract.read_connection_answer({**CONNECTION, "generation": 3, "scopes": ["a"], "failures": 1})
    assert (answer["provider"], answer["generation"], answer["scopes"], answer["failures"]) == (
        "worksection",
        3,
        ["a"],
        1,
    )
    assert answer["last_error"] is None and answer["metadata"] == {}


@pytest.mark.parametrize("data", [None, {"provider": "worksection"}, {**CONNECTION, "generation": "x"}])
def test_read_connection_answer_refuses(data: object) -> None:
    with pytest.raises(MalformedAnswer):
        contract.read_connection_answer(data)


def test_read_connect_session_answer() -> None:
    link = {"connect_url": "https://x/connect/s", "expires_at": 5, "session_id": "s"}
    assert contract.read_connect_session_answer(link) == link
    assert contract.read_connect_session_answer({**link, "session_id": None})["session_id"] == ""


@pytest.mark.parametrize("data", [None, {"connect_url": "https://x"}, {"connect_url": "u", "expires_at": "never"}])
def test_read_connect_session_answer_refuses(data: object) -> None:
    with pytest.raises(MalformedAnswer):
        contract.read_connect_session_answer(data)
