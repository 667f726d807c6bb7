"""The consumer SDK without AWS: BrokerAuth against a loopback API, error mapping, URL and cache rules.

(tests/integration/vending/test_client.py runs the SDK against the real handler behind SigV4.)
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
import requests
from tokenbroker.client import (
    AccessDenied,
    AccessToken,
    BrokerAuth,
    BrokerError,
    TokenBrokerClient,
    _error_of,
)
from tokenbroker.errors import (
    ConnectionNotFound,
    InvalidInput,
    NeedsReauthorization,
    ProviderError,
    ProviderErrorKind,
    RefreshInProgress,
    UnknownProvider,
)

from tests.unit.vending.fake_api import FakeApi


def token(value: str, generation: int = 1) -> AccessToken:
    return AccessToken(
        access_token=value,
        token_type="bearer",
        expires_at=1_800_003_600,
        expires_in=3600,
        scopes=(),
        generation=generation,
        metadata={},
    )


@dataclass
class ScriptedSource:
    """Vends ``current``; a compare-and-refresh of ``current`` moves to ``next_token``."""

    current: AccessToken
    next_token: AccessToken
    rejected: list[str | None] = field(default_factory=list)

    def get_token(self, provider: str, connection_id: str, *, min_ttl: int = 60) -> AccessToken:
        return self.current

    def refresh_rejected(
        self, provider: str, connection_id: str, rejected_token: str | AccessToken | None
    ) -> AccessToken:
        value = rejected_token.access_token if isinstance(rejected_token, AccessToken) else rejected_token
        self.rejected.append(value)
        if value == self.current.access_token:
            self.current = self.next_token
        return self.current


def test_a_rejected_file_body_is_rewound_and_sent_again() -> None:
    source = ScriptedSource(token("old-token-000001"), token("new-token-000002", 2))
    with FakeApi(accepts=lambda t: t == "new-token-000002") as api:
        body = io.BytesIO(b"prefix-to-skip;the-real-body")
        body.seek(len(b"prefix-to-skip;"))
        response = requests.post(api.url, data=body, auth=BrokerAuth(source, "worksection", "a-1"), timeout=5)
    assert response.status_code == 200
    assert [s.body for s in api.seen] == [b"the-real-body", b"the-real-body"]
    assert [s.authorization for s in api.seen] == ["Bearer old-token-000001", "Bearer new-token-000002"]
    assert source.rejected == ["old-token-000001"]


def test_no_retry_when_the_broker_has_nothing_newer() -> None:
    stuck = token("same-token-00001")
    source = ScriptedSource(stuck, stuck)
    with FakeApi(accepts=lambda t: False) as api:
        response = requests.get(api.url, auth=BrokerAuth(source, "worksection", "a-1"), timeout=5)
    assert response.status_code == 401
    assert len(api.seen) == 1
    assert source.rejected == ["same-token-00001"]


def test_a_success_never_calls_the_broker_again() -> None:
    source = ScriptedSource(token("good-token-00001"), token("unused-token-002"))
    with FakeApi(accepts=lambda t: True) as api:
        for _ in range(3):
            assert requests.get(api.url, auth=BrokerAuth(source, "worksection", "a-1"), timeout=5).ok
    assert source.rejected == []


def test_a_session_with_broker_auth_retries_each_request_at_most_once() -> None:
    source = ScriptedSource(token("old-token-000001"), token("new-token-000002", 2))
    accepted = {"new-token-000002"}
    with FakeApi(accepts=lambda t: t in accepted) as api, requests.Session() as session:
        session.auth = BrokerAuth(source, "worksection", "a-1")
        assert session.get(api.url, timeout=5).status_code == 200
        accepted.clear()  # now everything is rejected, even the next refreshed token
        source.next_token = token("third-token-0003", 3)
        assert session.get(api.url, timeout=5).status_code == 401
    assert len(api.seen) == 4  # 401 + retry, then 401 + one retry (not more)
    assert api.seen[-1].authorization == "Bearer third-token-0003"


# --- error mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"error": "bad_request", "message": "min_ttl"}, InvalidInput),
        (403, {"message": "User is not authorized to access this resource"}, AccessDenied),
        (404, {"error": "not_found", "message": "no connection"}, ConnectionNotFound),
        (404, {"error": "unknown_provider", "message": "?"}, UnknownProvider),
        (409, {"error": "needs_reauth", "message": "connect again"}, NeedsReauthorization),
        (503, {"error": "refresh_in_progress", "message": "wait"}, RefreshInProgress),
        (503, {"error": "provider_unavailable", "message": "down"}, ProviderErrorKind.TRANSIENT),
        (502, {"error": "provider_configuration", "message": "bad client"}, ProviderErrorKind.CONFIGURATION),
        (502, {"error": "provider_account", "message": "unpaid"}, ProviderErrorKind.ACCOUNT),
        (502, {"error": "provider_error", "message": "refused"}, ProviderErrorKind.REFUSED),
        (500, {"error": "internal_error", "message": "internal error"}, BrokerError),
        (429, {"message": "Too Many Requests"}, BrokerError),
        (502, None, BrokerError),
    ],
)
def test_broker_answers_map_to_the_error_taxonomy(
    status: int, body: Any, expected: type[Exception] | ProviderErrorKind
) -> None:
    error = _error_of(status, body, None)
    if isinstance(expected, ProviderErrorKind):
        assert isinstance(error, ProviderError) and error.kind is expected
    else:
        assert type(error) is expected


def test_retry_after_comes_from_the_body_or_the_header() -> None:
    from_body = _error_of(503, {"error": "refresh_in_progress", "message": "", "retry_after": 4}, None)
    from_header = _error_of(503, {"error": "refresh_in_progress", "message": ""}, "7")
    missing = _error_of(503, {"error": "refresh_in_progress", "message": ""}, None)
    assert isinstance(from_body, RefreshInProgress) and from_body.retry_after == 4
    assert isinstance(from_header, RefreshInProgress) and from_header.retry_after == 7
    assert isinstance(missing, RefreshInProgress) and missing.retry_after >= 1


# --- construction and input checks ---------------------------------------------------------------


def session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret-example")


def test_the_region_is_read_from_an_execute_api_host() -> None:
    client = TokenBrokerClient("https://abc123.execute-api.eu-west-1.amazonaws.com", session=session())
    assert client.region == "eu-west-1"


@pytest.mark.parametrize("url", ["ftp://x.example", "https://x.example/?a=1", "not a url", "https://x.example/#f"])
def test_a_bad_api_url_is_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        TokenBrokerClient(url, session=session(), region="us-east-1")


def test_ids_are_validated_before_any_request() -> None:
    calls: list[str] = []

    class NoNetwork(requests.Session):
        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            calls.append(str(request.url))
            raise AssertionError("no request expected")

    client = TokenBrokerClient("https://api.example", session=session(), region="us-east-1", http=NoNetwork())
    for provider, connection_id in [("worksection", "../../admin"), ("Worksection", "a"), ("worksection", "a b")]:
        with pytest.raises(InvalidInput):
            client.get_token(provider, connection_id)
    assert calls == []


def test_the_cache_is_shared_by_threads_but_never_outlives_min_ttl() -> None:
    now = [0.0]
    answers = [token("first-token-0001"), token("second-token-002", 2)]
    requested: list[str] = []
    signatures: list[str] = []
    lock = threading.Lock()

    class Broker(requests.Session):
        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            with lock:
                requested.append(str(request.url))
                signatures.append(request.headers.get("Authorization", ""))
                vended = answers[min(len(requested) - 1, 1)]
            response = requests.Response()
            response.status_code = 200
            response._content = (
                f'{{"access_token": "{vended.access_token}", "token_type": "Bearer", "expires_at": 1, '
                f'"expires_in": 600, "scopes": [], "generation": {vended.generation}, "metadata": {{}}}}'
            ).encode()
            return response

    client = TokenBrokerClient(
        "https://api.example", session=session(), region="us-east-1", http=Broker(), monotonic=lambda: now[0]
    )
    assert client.get_token("worksection", "a-1").access_token == "first-token-0001"
    assert requested[0].endswith("/tokens/worksection/a-1?min_ttl=90")
    now[0] = 600 - 90  # exactly min_ttl + margin left: still good
    assert client.get_token("worksection", "a-1").access_token == "first-token-0001"
    now[0] += 1
    assert client.get_token("worksection", "a-1").access_token == "second-token-002"
    assert len(requested) == 2
    assert all(s.startswith("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/") for s in signatures)
    assert all("/us-east-1/execute-api/aws4_request" in s for s in signatures)
