"""Outbound HTTP for provider calls: one ``requests`` session, explicit timeouts, safe retries only.

The one distinction the refresh engine needs from the transport is whether a request may have
reached the server. A rotating refresh grant that was sent but whose answer was lost may already
have killed the old refresh token, so it must not be re-sent blindly. Hence:

* urllib3 retries connection failures only (nothing was sent), never a read failure of a POST;
* every transport failure is reported as ``TransportError`` with ``sent`` telling the two apart.

Responses come back as a plain ``HttpResponse`` (status, lower-cased headers, bounded body) so
that classifying them is a pure function, testable without a network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from tokenbroker import USER_AGENT

DEFAULT_CONNECT_TIMEOUT = 3.05
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_MAX_BODY_BYTES = 1 << 20
# Methods whose read failures may be retried: they change nothing on the server.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An answer as received. ``repr`` omits the body: it may hold tokens."""

    status: int
    headers: Mapping[str, str]  # keys lower-cased
    body: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";", 1)[0].strip().lower()

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None when it is anything else (HTML, array, garbage)."""
        try:
            value = json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        return value if isinstance(value, dict) else None


class TransportError(Exception):
    """No HTTP answer. ``sent`` is False only when the request certainly never left (connect failed).

    The message names the host and the failure class, never the URL's query or the body.
    """

    def __init__(self, message: str, *, sent: bool, timeout: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.sent = sent
        self.timeout = timeout


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or "?"


def _causes(error: BaseException) -> list[BaseException]:
    """The error, what it wraps (requests puts urllib3's error in args[0]) and its __cause__ chain."""
    seen: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending and len(seen) < 16:
        current = pending.pop()
        if any(current is item for item in seen):
            continue
        seen.append(current)
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            pending.append(reason)
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        if current.__cause__ is not None:
            pending.append(current.__cause__)
        if current.__context__ is not None:
            pending.append(current.__context__)
    return seen


def transport_error_from(error: requests.RequestException, url: str) -> TransportError:
    """Map a requests failure to ``TransportError``, deciding conservatively whether it was sent.

    Nothing was sent only when the connection could not be made: connect timeout, refused, DNS,
    TLS handshake. Anything else (read timeout, reset or EOF after sending, a broken body) may
    have been processed by the server.
    """
    host = _host_of(url)
    name = type(error).__name__
    if isinstance(error, requests.ConnectTimeout):
        return TransportError(f"connect timeout to {host}", sent=False, timeout=True)
    if isinstance(error, requests.ReadTimeout):
        return TransportError(f"read timeout from {host} after the request was sent", sent=True, timeout=True)
    causes = _causes(error)
    if isinstance(error, requests.exceptions.SSLError) or any(
        isinstance(c, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError) for c in causes
    ):
        # NewConnectionError covers refused and DNS failures; both happen before a byte is sent.
        return TransportError(f"cannot connect to {host} ({name})", sent=False)
    if any(isinstance(c, urllib3.exceptions.ReadTimeoutError | TimeoutError) for c in causes):
        return TransportError(f"read timeout from {host} after the request was sent", sent=True, timeout=True)
    return TransportError(f"connection to {host} failed after the request was sent ({name})", sent=True)


class HttpClient:
    """One pooled session with (connect, read) timeouts and retries only where they are safe."""

    def __init__(
        self,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        connect_retries: int = 2,
        idempotent_read_retries: int = 1,
        backoff_factor: float = 0.2,
        user_agent: str = USER_AGENT,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        pool_maxsize: int = 16,
    ) -> None:
        self.timeout = (connect_timeout, read_timeout)
        self.max_body_bytes = max_body_bytes
        self.retry = Retry(
            total=connect_retries + idempotent_read_retries,
            # Connection failures: nothing was sent, so even a POST may be retried.
            connect=connect_retries,
            # Read failures (timeouts, resets after sending) only for IDEMPOTENT_METHODS: urllib3
            # re-raises at once for any other method, so a token POST is never sent twice.
            read=idempotent_read_retries,
            allowed_methods=IDEMPOTENT_METHODS,
            other=0,
            status=0,
            redirect=0,
            status_forcelist=(),
            raise_on_status=False,
            raise_on_redirect=False,
            respect_retry_after_header=False,
            backoff_factor=backoff_factor,
        )
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": user_agent, "Accept": "application/json"})
        # Proxies and .netrc from the environment stay available (requests' default), but a token
        # request never follows redirects: a POST turned into a GET elsewhere is never right.
        adapter = HTTPAdapter(max_retries=self.retry, pool_connections=4, pool_maxsize=pool_maxsize)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def post_form(
        self,
        url: str,
        data: Mapping[str, str],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """POST ``application/x-www-form-urlencoded``."""
        return self.request("POST", url, data=data, headers=headers)

    def get(
        self,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        return self.request("GET", url, params=params, headers=headers)

    def request(
        self,
        method: str,
        url: str,
        *,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        try:
            response = self.session.request(
                method,
                url,
                data=dict(data) if data is not None else None,
                params=dict(params) if params is not None else None,
                headers=dict(headers) if headers else None,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as error:
            raise transport_error_from(error, url) from None
        try:
            body = self._read_bounded(response)
        except requests.RequestException as error:
            # The status line arrived, so the server did process the request: the outcome is lost.
            raise TransportError(f"answer from {_host_of(url)} broke off ({type(error).__name__})", sent=True) from None
        finally:
            response.close()
        headers_lower = {key.lower(): value for key, value in response.headers.items()}
        return HttpResponse(status=response.status_code, headers=headers_lower, body=body)

    def _read_bounded(self, response: requests.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=65536):
            remaining = self.max_body_bytes - size
            if remaining <= 0:
                break
            chunks.append(chunk[:remaining])
            size += min(len(chunk), remaining)
        return b"".join(chunks)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
