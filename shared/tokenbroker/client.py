"""Consumer SDK: get a valid access token from tokenbroker with the caller's own AWS credentials.

    client = TokenBrokerClient("https://abc123.execute-api.eu-west-1.amazonaws.com")
    token = client.get_token("worksection", "acme-1")           # cached until shortly before expiry
    api = token.metadata["account_url"]
    requests.get(f"{api}/api/oauth2", params={"action": "get_projects"},
                 auth=BrokerAuth(client, "worksection", "acme-1"))  # one compare-and-refresh retry on 401

Requests are signed with SigV4 (service ``execute-api``) by botocore's ``SigV4Auth``; access to a
provider or a connection is plain IAM on the route ARN. Errors come back as the exceptions of
``tokenbroker.errors`` (``NeedsReauthorization``, ``RefreshInProgress`` with ``retry_after``, ...).

This module imports neither Powertools nor the AWS-side of the library: consumers pay only for
boto3/botocore and requests.
"""

from __future__ import annotations

import json
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast
from urllib.parse import urlencode, urlsplit

import boto3
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from requests.auth import AuthBase

from tokenbroker import USER_AGENT
from tokenbroker.api.contract import (
    MalformedAnswer,
    read_connect_session_answer,
    read_connection_answer,
    read_token_answer,
)
from tokenbroker.errors import (
    ConnectionNotFound,
    ConnectSessionExpired,
    ConnectSessionNotCompleted,
    EndUserMismatch,
    InvalidInput,
    NeedsReauthorization,
    PendingConfirmation,
    ProviderError,
    ProviderErrorKind,
    RefreshInProgress,
    TokenBrokerError,
    UnknownProvider,
    UnsupportedOperation,
)
from tokenbroker.keys import validate_connection_id, validate_provider_name
from tokenbroker.redaction import remember_secret
from tokenbroker.tokens import sha256_hex

SERVICE = "execute-api"
DEFAULT_MIN_TTL = 60
MAX_MIN_TTL = 86_400
# A cached token is dropped this long before it would fall below min_ttl: covers the request that
# is about to use it. Expiry is tracked on the local monotonic clock from the answer's expires_in,
# so clock skew between this host and AWS does not matter.
DEFAULT_CACHE_MARGIN = 30.0
MAX_CACHE_MARGIN = 300.0
# The broker may wait up to its vend_wait_seconds (8 s) for another refresh, plus the refresh itself.
DEFAULT_TIMEOUT = (3.05, 30.0)
DEFAULT_RETRY_AFTER = 1.0
# A connect session id as the broker mints them; checked before it becomes part of a URL path.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,128}")


# --- errors the broker itself can add to the taxonomy --------------------------------------------


class AccessDenied(TokenBrokerError):
    """403: the request was not signed, or IAM does not allow this caller to invoke the route."""

    code = "forbidden"


class BrokerError(TokenBrokerError):
    """An answer this SDK has no better exception for (unexpected status or body, network failure)."""

    code = "broker_error"

    def __init__(self, message: str, *, status: int | None = None, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


# --- answers -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A vended token. ``repr`` hides the token; there is never a refresh token."""

    access_token: str = field(repr=False)
    token_type: str
    expires_at: int
    expires_in: int
    scopes: tuple[str, ...]
    generation: int
    metadata: Mapping[str, str]

    def __post_init__(self) -> None:
        remember_secret(self.access_token)

    @property
    def sha256(self) -> str:
        return sha256_hex(self.access_token)

    @property
    def authorization(self) -> str:
        """The Authorization header value."""
        scheme = "Bearer" if self.token_type.lower() == "bearer" else self.token_type
        return f"{scheme} {self.access_token}"

    @classmethod
    def from_json(cls, data: object) -> AccessToken:
        try:
            answer = read_token_answer(data)
        except MalformedAnswer:
            raise BrokerError("the broker answered without a usable token") from None
        return cls(
            access_token=answer["access_token"],
            token_type=answer["token_type"],
            expires_at=answer["expires_at"],
            expires_in=answer["expires_in"],
            scopes=tuple(answer["scopes"]),
            generation=answer["generation"],
            metadata=answer["metadata"],
        )


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """Status and metadata of a connection (``raw`` keeps every field the broker sent)."""

    provider: str
    connection_id: str
    status: str
    generation: int
    expires_at: float | None
    refresh_in_progress: bool
    failures: int
    last_error: Mapping[str, Any] | None
    metadata: Mapping[str, str]
    scopes: tuple[str, ...]
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: object) -> ConnectionInfo:
        try:
            answer = read_connection_answer(data)
        except MalformedAnswer as error:
            raise BrokerError(str(error)) from None
        return cls(
            provider=answer["provider"],
            connection_id=answer["connection_id"],
            status=answer["status"],
            generation=answer["generation"],
            expires_at=answer["expires_at"],
            refresh_in_progress=answer["refresh_in_progress"],
            failures=answer["failures"],
            last_error=answer["last_error"],
            metadata=answer["metadata"],
            scopes=tuple(answer["scopes"]),
            raw=dict(cast(Mapping[str, Any], data)),
        )


@dataclass(frozen=True, slots=True)
class ConnectLink:
    connect_url: str = field(repr=False)  # a bearer link until one flow completes: do not log it
    expires_at: int
    # Confirm mode: what POST /connect-sessions/{session_id}/confirm names (also in connect_url).
    session_id: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class _Cached:
    token: AccessToken
    deadline: float  # local monotonic time at which expires_in reaches zero


# --- the client ----------------------------------------------------------------------------------


class TokenBrokerClient:
    def __init__(
        self,
        api_url: str,
        *,
        session: boto3.Session | None = None,
        region: str | None = None,
        http: requests.Session | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        cache_margin: float = DEFAULT_CACHE_MARGIN,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(api_url)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            raise InvalidInput("api_url must be an http(s) URL without query or fragment", field="api_url")
        self._api_url = api_url.rstrip("/")
        self._session = session or boto3.Session()
        # An execute-api host names its region, and a signature for any other region is refused.
        resolved = region or _region_from_host(parts.hostname or "") or self._session.region_name
        if not resolved:
            raise InvalidInput("cannot tell the API's region: pass region=", field="region")
        self._region: str = resolved
        self._http = http or requests.Session()
        self._timeout = timeout
        self._margin = min(max(0.0, cache_margin), MAX_CACHE_MARGIN)
        self._monotonic = monotonic
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    @property
    def region(self) -> str:
        return self._region

    # --- tokens ------------------------------------------------------------------------------------

    def get_token(self, provider: str, connection_id: str, *, min_ttl: int = DEFAULT_MIN_TTL) -> AccessToken:
        """A token with at least ``min_ttl`` seconds left, from the cache or the broker.

        One request per key at a time within this process: concurrent callers of one connection
        wait for the request in flight and share its answer.
        """
        key = _key(provider, connection_id)
        if not 0 <= min_ttl <= MAX_MIN_TTL:
            raise InvalidInput(f"min_ttl must be 0 to {MAX_MIN_TTL}", field="min_ttl")
        cached = self._fresh(key, min_ttl)
        if cached is not None:
            return cached
        with self._key_lock(key):
            cached = self._fresh(key, min_ttl)
            if cached is not None:
                return cached
            # Ask for the margin too, so the answer stays usable from the cache for a while.
            ask = min(MAX_MIN_TTL, min_ttl + int(self._margin))
            started = self._monotonic()
            data = self._call("GET", f"/tokens/{key[0]}/{key[1]}", query={"min_ttl": str(ask)})
            return self._remember(key, AccessToken.from_json(data), started)

    def refresh_rejected(
        self, provider: str, connection_id: str, rejected_token: str | AccessToken | None
    ) -> AccessToken:
        """Compare-and-refresh after the third-party API rejected ``rejected_token`` (e.g. a 401).

        Only its SHA-256 is sent. If this process already holds a newer token, that one is returned
        without a request; otherwise the broker refreshes only if the rejected token is still current.
        ``None`` forces a refresh of the current generation.
        """
        key = _key(provider, connection_id)
        rejected = rejected_token.access_token if isinstance(rejected_token, AccessToken) else rejected_token
        rejected_hash = sha256_hex(rejected) if rejected is not None else None
        with self._key_lock(key):
            with self._lock:
                cached = self._cache.get(key)
            if (
                rejected_hash is not None
                and cached is not None
                and cached.token.sha256 != rejected_hash
                and cached.deadline > self._monotonic()
            ):
                return cached.token
            body = {"rejected_token_sha256": rejected_hash} if rejected_hash is not None else {}
            started = self._monotonic()
            data = self._call("POST", f"/tokens/{key[0]}/{key[1]}/refresh", body=body)
            return self._remember(key, AccessToken.from_json(data), started)

    def invalidate(self, provider: str, connection_id: str) -> None:
        with self._lock:
            self._cache.pop(_key(provider, connection_id), None)

    # --- connections -------------------------------------------------------------------------------

    def connection(self, provider: str, connection_id: str) -> ConnectionInfo:
        key = _key(provider, connection_id)
        return ConnectionInfo.from_json(self._call("GET", f"/connections/{key[0]}/{key[1]}"))

    def connections(self, provider: str, *, page_size: int = 50) -> Iterator[ConnectionInfo]:
        """Every connection of ``provider``, page by page (lazily)."""
        provider = validate_provider_name(provider)
        cursor: str | None = None
        while True:
            query = {"provider": provider, "limit": str(page_size)}
            if cursor:
                query["cursor"] = cursor
            page = self._call("GET", "/connections", query=query)
            for item in page.get("connections") or ():
                yield ConnectionInfo.from_json(item)
            cursor = page.get("cursor")
            if not cursor:
                return

    def delete_connection(self, provider: str, connection_id: str) -> None:
        key = _key(provider, connection_id)
        self._call("DELETE", f"/connections/{key[0]}/{key[1]}")
        self.invalidate(*key)

    def create_connect_session(
        self,
        provider: str,
        connection_id: str,
        *,
        return_to: str | None = None,
        scopes: Sequence[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        end_user_id: str | None = None,
        confirm: bool = False,
    ) -> ConnectLink:
        """A connect link for the end user. ``confirm=True`` (with your ``end_user_id`` for them) keeps
        the grant pending until you call ``confirm_connect_session`` for the same end user."""
        key = _key(provider, connection_id)
        body: dict[str, Any] = {"provider": key[0], "connection_id": key[1]}
        if return_to is not None:
            body["return_to"] = return_to
        if scopes is not None:
            body["scopes"] = list(scopes)
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if end_user_id is not None:
            body["end_user_id"] = end_user_id
        if confirm:
            body["confirm"] = True
        try:
            link = read_connect_session_answer(self._call("POST", "/connect-sessions", body=body))
        except MalformedAnswer as error:
            raise BrokerError(str(error)) from None
        return ConnectLink(link["connect_url"], link["expires_at"], link["session_id"])

    def confirm_connect_session(self, session_id: str, end_user_id: str) -> ConnectionInfo:
        """Confirm mode: the end user signed in to your application completed ``session_id``.

        Raises ``TokenBrokerClientError`` with code ``end_user_mismatch`` (403: the pending grant was
        discarded), ``connect_session_not_found`` (404), ``connect_session_not_completed`` (409) or
        ``connect_session_expired`` (410).
        """
        if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
            raise InvalidInput("session_id must be the session_id of a connect link", field="session_id")
        data = self._call("POST", f"/connect-sessions/{session_id}/confirm", body={"end_user_id": end_user_id})
        return ConnectionInfo.from_json(data)

    # --- plumbing ----------------------------------------------------------------------------------

    def _fresh(self, key: tuple[str, str], min_ttl: int) -> AccessToken | None:
        with self._lock:
            cached = self._cache.get(key)
        if cached is None or cached.deadline - self._monotonic() < min_ttl + self._margin:
            return None
        return cached.token

    def _remember(self, key: tuple[str, str], token: AccessToken, started: float) -> AccessToken:
        # Measured from when the request started: the token is at least that old.
        entry = _Cached(token, started + token.expires_in)
        with self._lock:
            current = self._cache.get(key)
            # Never replace a newer generation with an older answer that arrived late.
            if current is None or token.generation >= current.token.generation:
                self._cache[key] = entry
        return token

    def _key_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        response = self.send(method, path, query=query, body=body)
        if response.status_code == 204:
            return {}
        data = _json_of(response)
        if response.status_code >= 400:
            raise _error_of(response.status_code, data, response.headers.get("Retry-After"))
        if not isinstance(data, dict):
            raise BrokerError("the broker answered with an unexpected body", status=response.status_code)
        return data

    def send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> requests.Response:
        """One SigV4-signed request to the broker's API (no error mapping)."""
        url = self._api_url + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if data is not None:
            headers["Content-Type"] = "application/json"
        signed = AWSRequest(method=method, url=url, data=data, headers=headers)
        credentials = self._session.get_credentials()
        if credentials is None:
            raise AccessDenied("no AWS credentials found to sign the request with")
        SigV4Auth(credentials.get_frozen_credentials(), SERVICE, self._region).add_auth(signed)
        signed_ready = signed.prepare()
        # Sent as signed: Session.send, unlike Session.request, merges no session-level headers or
        # auth that could change a signed header. Proxies and CA settings still come from the environment.
        outgoing = requests.Request(method, signed_ready.url, headers=dict(signed_ready.headers.items()), data=data)
        prepared = outgoing.prepare()
        settings = self._http.merge_environment_settings(prepared.url, {}, None, None, None)
        try:
            return self._http.send(prepared, timeout=self._timeout, **settings)
        except requests.RequestException as error:
            raise BrokerError(f"tokenbroker is unreachable: {type(error).__name__}") from None


class TokenSource(Protocol):
    """What ``BrokerAuth`` needs: ``TokenBrokerClient`` (or a test double)."""

    def get_token(self, provider: str, connection_id: str, *, min_ttl: int = ...) -> AccessToken: ...

    def refresh_rejected(
        self, provider: str, connection_id: str, rejected_token: str | AccessToken | None
    ) -> AccessToken: ...


class BrokerAuth(AuthBase):
    """``requests`` auth: a Bearer token from tokenbroker, one compare-and-refresh retry on 401.

    On a 401 from the third-party API the rejected token's hash goes to the broker, which refreshes
    only if that token is still current (so a rotation seen by many consumers is one refresh), and
    the request is sent once more with the newer token. A second 401 is returned as is. Bodies that
    cannot be replayed (generators, unseekable streams) are not retried.
    """

    def __init__(
        self, client: TokenSource, provider: str, connection_id: str, *, min_ttl: int = DEFAULT_MIN_TTL
    ) -> None:
        self._client = client
        self._provider = provider
        self._connection_id = connection_id
        self._min_ttl = min_ttl
        # The retries this auth sent, so that a retry's own 401 is returned rather than retried again.
        self._retries: weakref.WeakSet[requests.PreparedRequest] = weakref.WeakSet()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self._client.get_token(self._provider, self._connection_id, min_ttl=self._min_ttl)
        request.headers["Authorization"] = token.authorization
        body_position = _body_position(request.body)

        def retry_once_on_401(response: requests.Response, **send_options: Any) -> requests.Response:
            return self._retry(response, token, body_position, send_options)

        # types-requests leaves register_hook unannotated (no-untyped-call); it is requests' documented
        # way to add a hook, so the call stays rather than poking request.hooks directly.
        request.register_hook("response", retry_once_on_401)  # type: ignore[no-untyped-call]
        return request

    def _retry(
        self,
        response: requests.Response,
        used: AccessToken,
        body_position: int | None,
        send_options: dict[str, Any],
    ) -> requests.Response:
        request = response.request
        if response.status_code != 401 or request in self._retries:
            return response
        if not _replayable(request.body, body_position):
            return response
        newer = self._client.refresh_rejected(self._provider, self._connection_id, used)
        if newer.access_token == used.access_token:
            return response
        # Free the connection before reusing it, as requests' own digest auth does.
        response.content  # noqa: B018 - reads the body so that the connection can be released
        response.close()
        retry = request.copy()
        self._retries.add(retry)
        retry.headers["Authorization"] = newer.authorization
        rewind = getattr(retry.body, "seek", None)
        if body_position is not None and rewind is not None:  # a file body (still a file: see _replayable)
            rewind(body_position)
        if response.cookies:
            jar = getattr(retry, "_cookies", None)
            if jar is not None:
                jar.update(response.cookies)
                retry.prepare_cookies(jar)
        connection = response.connection
        second: requests.Response = connection.send(retry, **send_options)
        second.history.append(response)
        second.request = retry
        return second


# --- helpers -------------------------------------------------------------------------------------


def _key(provider: str, connection_id: str) -> tuple[str, str]:
    # Validated before a URL is built from them: they become path segments.
    return validate_provider_name(provider), validate_connection_id(connection_id)


def _region_from_host(host: str) -> str | None:
    # <api-id>.execute-api.<region>.amazonaws.com
    parts = host.split(".")
    if len(parts) >= 5 and parts[1] == "execute-api":
        return parts[2]
    return None


def _json_of(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


_ErrorFactory = Callable[[str, float | None], TokenBrokerError]
_ERRORS_BY_CODE: dict[str, _ErrorFactory] = {
    "needs_reauth": lambda message, _: NeedsReauthorization(message),
    "refresh_in_progress": lambda message, retry_after: RefreshInProgress(
        message, retry_after=retry_after or DEFAULT_RETRY_AFTER
    ),
    "unknown_provider": lambda message, _: UnknownProvider(message),
    "not_found": lambda message, _: ConnectionNotFound(message),
    "unsupported": lambda message, _: UnsupportedOperation(message),
    "bad_request": lambda message, _: InvalidInput(message),
    "pending_confirmation": lambda message, _: PendingConfirmation(message),
    "end_user_mismatch": lambda message, _: EndUserMismatch(message),
    "connect_session_expired": lambda message, _: ConnectSessionExpired(message),
    "connect_session_not_completed": lambda message, _: ConnectSessionNotCompleted(message),
}
# API Gateway's own answers carry no "error" code, only "message".
_ERRORS_BY_STATUS: dict[int, _ErrorFactory] = {
    400: lambda message, _: InvalidInput(message),
    403: lambda message, _: AccessDenied(message),
    409: lambda message, _: NeedsReauthorization(message),
}


def _error_of(status: int, data: Any, retry_after_header: str | None) -> TokenBrokerError:
    body = data if isinstance(data, dict) else {}
    code = str(body.get("error") or "")
    message = str(body.get("message") or body.get("Message") or f"HTTP {status}")[:500]
    retry_after = _seconds(body.get("retry_after")) or _seconds(retry_after_header)
    make = _ERRORS_BY_CODE.get(code)
    provider_kind = ProviderErrorKind.of_code(code)
    if make is None and provider_kind is not None:  # the provider failed behind the broker
        return ProviderError(provider_kind, message, provider="tokenbroker", retry_after=retry_after)
    make = make or _ERRORS_BY_STATUS.get(status)
    if make is None:
        return BrokerError(message, status=status, error_code=code or None)
    return make(message, retry_after)


def _seconds(value: object) -> float | None:
    if not isinstance(value, str | int | float):  # a header, a JSON number, or absent
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def _body_position(body: object) -> int | None:
    """Where a file-like body starts, so that a retry can rewind it."""
    tell = getattr(body, "tell", None)
    if body is None or isinstance(body, bytes | str) or tell is None:
        return None
    try:
        return int(tell())
    except OSError:
        return None


def _replayable(body: object, position: int | None) -> bool:
    # Bytes replay as they are (a mock transport may also have read a file body into bytes).
    if body is None or isinstance(body, bytes | str):
        return True
    return position is not None and callable(getattr(body, "seek", None))
