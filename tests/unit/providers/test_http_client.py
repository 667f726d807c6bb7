"""HttpClient against a loopback server: User-Agent, timeouts, never a second POST, sent vs not sent."""

from __future__ import annotations

import time

import pytest
import requests
import urllib3.exceptions
from tokenbroker import USER_AGENT
from tokenbroker.http import HttpClient, HttpResponse, TransportError, transport_error_from

from tests.unit.providers.scripted import Drop, Hang, Reply, ScriptedServer, closed_port


def test_user_agent_form_body_and_plain_http(server: ScriptedServer, http: HttpClient) -> None:
    server.script(Reply(200, {"ok": True}))
    response = http.post_form(server.url + "/oauth/token", {"grant_type": "password", "username": "a b@c.d"})
    assert response.status == 200
    assert response.json_object() == {"ok": True}
    seen = server.seen[0]
    assert seen.method == "POST" and seen.path == "/oauth/token"
    assert seen.headers["user-agent"] == USER_AGENT
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.form == {"grant_type": "password", "username": "a b@c.d"}


def test_a_post_whose_answer_was_lost_is_never_sent_again(server: ScriptedServer, http: HttpClient) -> None:
    server.script(Drop(), Reply(200, {"should": "not be reached"}))
    with pytest.raises(TransportError) as caught:
        http.post_form(server.url + "/oauth2/refresh", {"refresh_token": "r"})
    assert caught.value.sent is True
    assert len(server.seen) == 1


def test_a_get_whose_answer_was_lost_is_retried(server: ScriptedServer, http: HttpClient) -> None:
    server.script(Drop(), Reply(200, {"sub": "1"}))
    response = http.get(server.url + "/userinfo")
    assert response.json_object() == {"sub": "1"}
    assert len(server.seen) == 2


def test_read_timeout_after_sending_is_reported_as_sent(server: ScriptedServer, http: HttpClient) -> None:
    server.script(Hang())
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        http.post_form(server.url + "/oauth/token", {"grant_type": "refresh_token"})
    assert time.monotonic() - started < 3
    assert caught.value.sent is True and caught.value.timeout is True
    assert len(server.seen) == 1
    assert "refresh_token" not in str(caught.value)


def test_connection_refused_is_reported_as_not_sent(http: HttpClient) -> None:
    with pytest.raises(TransportError) as caught:
        http.post_form(f"http://127.0.0.1:{closed_port()}/token?secret=abc", {"a": "b"})
    assert caught.value.sent is False
    assert "secret" not in str(caught.value)  # the host only, never the query


def test_redirects_are_not_followed(server: ScriptedServer, http: HttpClient) -> None:
    server.script(Reply(302, b"", {"Location": "/elsewhere"}))
    response = http.post_form(server.url + "/token", {})
    assert response.status == 302
    assert len(server.seen) == 1


def test_bodies_are_bounded(server: ScriptedServer) -> None:
    server.script(Reply(200, b"x" * 10_000))
    with HttpClient(max_body_bytes=1000, read_timeout=1) as client:
        response = client.get(server.url + "/big")
    assert response.body == b"x" * 1000


def test_retry_policy_is_safe() -> None:
    retry = HttpClient().retry
    assert "POST" not in retry.allowed_methods  # type: ignore[operator]
    assert retry.connect == 2
    assert retry.status == 0 and retry.other == 0 and retry.redirect == 0
    assert retry.respect_retry_after_header is False


def test_response_helpers_and_repr() -> None:
    response = HttpResponse(200, {"content-type": "application/json; charset=utf-8"}, b'{"access_token": "tok"}')
    assert response.content_type == "application/json"
    assert response.header("Content-Type") == "application/json; charset=utf-8"
    assert "tok" not in repr(response)
    for body in (b"[1]", b"\xff\xfe", b"", b"null", b'"text"', b"[" * 100_000):
        assert HttpResponse(200, {}, body).json_object() is None


@pytest.mark.parametrize(
    ("error", "sent"),
    [
        (requests.ConnectTimeout("connect timed out"), False),
        (requests.ReadTimeout("read timed out"), True),
        (
            requests.ConnectionError(
                urllib3.exceptions.MaxRetryError(None, "/", urllib3.exceptions.NewConnectionError(None, "refused"))  # type: ignore[arg-type]
            ),
            False,
        ),
        (
            requests.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())),
            True,
        ),
        (requests.exceptions.SSLError("handshake failure"), False),
        (requests.exceptions.ChunkedEncodingError("broken"), True),
        (requests.ConnectionError("something else"), True),
    ],
)
def test_transport_error_mapping(error: requests.RequestException, sent: bool) -> None:
    mapped = transport_error_from(error, "https://user:pw@api.example.test:8443/oauth/token?code=xyz")
    assert mapped.sent is sent
    assert "api.example.test:8443" in mapped.message
    assert "xyz" not in mapped.message and "pw" not in mapped.message
