"""Connection ids become part of secret names and IAM ARNs: validated before anything else."""

from __future__ import annotations

import io

import pytest
from tokenbroker import cli
from tokenbroker.api.statuses import http_status
from tokenbroker.errors import (
    InvalidInput,
)
from tokenbroker.keys import ConnectionKey, validate_connection_id


@pytest.mark.parametrize("value", ["a", "team-42", "A.b_c-9", "...", ".a", "a..", "..a", "x" * 128])
def test_valid_connection_ids(value: str) -> None:
    assert validate_connection_id(value) == value
    assert ConnectionKey("worksection", value).connection_id == value


@pytest.mark.parametrize("value", [".", ".."])
def test_dot_segments_are_not_connection_ids(value: str) -> None:
    # tokenbroker/<stage>/worksection/.. would name another secret, and .../tokens/worksection/..
    # another route ARN, although the characters are all allowed.
    with pytest.raises(InvalidInput) as raised:
        validate_connection_id(value)
    assert http_status(raised.value) == 400
    assert raised.value.field == "connection_id"
    assert "'.' or '..'" in raised.value.message
    with pytest.raises(InvalidInput):
        ConnectionKey("worksection", value)


@pytest.mark.parametrize("value", ["", "a/b", "a b", "x" * 129, "é", None, 5])
def test_other_bad_connection_ids(value: object) -> None:
    with pytest.raises(InvalidInput) as raised:
        validate_connection_id(value)
    assert "[A-Za-z0-9._-]{1,128}" in raised.value.message


def test_the_cli_refuses_a_dot_connection_id_before_any_request() -> None:
    out, err = io.StringIO(), io.StringIO()
    # Nothing listens on port 9: an attempted request would say "unreachable" instead.
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}
    code = cli.main(
        ["--api-url", "http://127.0.0.1:9", "token", "worksection", ".."], environ=env, stdout=out, stderr=err
    )
    assert code == 1
    assert "'.' or '..'" in err.getvalue() and "unreachable" not in err.getvalue()
