"""Drives functions/callback/app.py the way API Gateway does: payload 2.0 events in, answers out.

Every answer is kept (``Harness.answers``) so that a test can scan all pages, redirects and log
lines of a flow for a secret at the end.
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from tokenbroker.clock import ManualClock
from tokenbroker.connect import ConnectService
from tokenbroker.events import MemorySink
from tokenbroker.stores import ConnectionStore, OneTimeStore, TokenStore

from infra.sandboxes import WorklySandbox, WorksectionSandbox, submit_consent

PUBLIC_HOST = "connect.example.test"
PUBLIC_BASE_URL = f"https://{PUBLIC_HOST}"
RETURN_BASE = "https://app.example.com/integrations/done"


@dataclass(frozen=True, slots=True)
class LambdaContext:
    function_name: str = "CallbackFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:CallbackFunction"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: str

    @property
    def location(self) -> str:
        return self.headers.get("location", "")

    @property
    def location_query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.location).query).items()}


ROUTE_KEYS = {
    ("GET", "connect"): ("GET /connect/{session}", "session"),
    ("POST", "connect"): ("POST /connect/{session}", "session"),
    ("GET", "callback"): ("GET /callback/{provider}", "provider"),
}


def api_event(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: str | None = None,
    domain: str = PUBLIC_HOST,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for ``url`` (absolute or a path)."""
    parts = urlsplit(url)
    path, query = parts.path, parts.query
    segments = path.strip("/").split("/")
    route_key, parameter = ROUTE_KEYS.get((method, segments[0]), ("$default", ""))
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": {
            "host": domain,
            "user-agent": "Mozilla/5.0 (pytest)",
            "x-forwarded-proto": "https",
            **{k.lower(): v for k, v in (headers or {}).items()},
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "domainName": domain,
            "domainPrefix": domain.split(".", maxsplit=1)[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "Mozilla/5.0 (pytest)",
            },
            "requestId": "req-1",
            "routeKey": route_key,
            "stage": "$default",
            "time": "22/Nov/2026:18:00:00 +0000",
            "timeEpoch": 1_800_000_000_000,
        },
        "isBase64Encoded": False,
    }
    if query:
        # API Gateway joins repeated parameters with commas here; rawQueryString keeps them apart.
        event["queryStringParameters"] = {k: ",".join(v) for k, v in parse_qs(query, keep_blank_values=True).items()}
    if parameter and len(segments) > 1:
        event["pathParameters"] = {parameter: segments[1]}
    if body is not None:
        # Form posts arrive base64-encoded, as API Gateway sends them.
        event["body"] = base64.b64encode(body.encode()).decode()
        event["isBase64Encoded"] = True
    return event


@dataclass
class Harness:
    handler: ModuleType
    service: ConnectService
    clock: ManualClock
    tokens: TokenStore
    connections: ConnectionStore
    onetime: OneTimeStore
    events: MemorySink
    workly: WorklySandbox
    worksection: WorksectionSandbox
    log: io.StringIO
    browser: requests.Session = field(default_factory=requests.Session)
    answers: list[Answer] = field(default_factory=list)
    # Cookie jars of the end users' browsers on the public routes, by name; requests go out with the
    # current one's cookies and Set-Cookie answers land in it.
    jars: dict[str, dict[str, str]] = field(default_factory=lambda: {"default": {}})
    current_browser: str = "default"
    opened: set[tuple[str, str]] = field(default_factory=set)  # (browser, path) pairs it has opened

    def use_browser(self, name: str) -> None:
        """Switch to another end user's browser (a jar of its own, empty at first)."""
        self.current_browser = name
        self.jars.setdefault(name, {})

    @property
    def jar(self) -> dict[str, str]:
        return self.jars[self.current_browser]

    def invoke(self, event: dict[str, Any]) -> Answer:
        if self.jar and "cookies" not in event:
            event["cookies"] = [f"{name}={value}" for name, value in self.jar.items()]
        raw = self.handler.lambda_handler(event, LambdaContext())
        for cookie in raw.get("cookies") or []:
            name, _, value = str(cookie).split(";", 1)[0].partition("=")
            self.jar[name.strip()] = value.strip()
        body = raw.get("body") or ""
        if raw.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        answer = Answer(
            status=int(raw["statusCode"]),
            headers={k.lower(): str(v) for k, v in (raw.get("headers") or {}).items()},
            body=body,
        )
        self.answers.append(answer)
        return answer

    def get(self, url: str, *, domain: str = PUBLIC_HOST) -> Answer:
        self.opened.add((self.current_browser, urlsplit(url).path))
        return self.invoke(api_event("GET", url, domain=domain))

    def post_form(
        self, url: str, fields: dict[str, str], *, headers: dict[str, str] | None = None, open_first: bool = True
    ) -> Answer:
        """Post the login form, as the current browser. ``open_first``: a browser that has not opened
        this link yet opens it first, as anyone who sees the form did."""
        if open_first and (self.current_browser, urlsplit(url).path) not in self.opened:
            self.get(url)
        merged = {"content-type": "application/x-www-form-urlencoded", "origin": "null", **(headers or {})}
        return self.invoke(api_event("POST", url, headers=merged, body=urlencode(fields)))

    def link(self, provider: str, connection_id: str, **options: Any) -> str:
        """A connect link's path, as a backend would get it from POST /connect-sessions."""
        url = self.service.create_session(provider, connection_id, **options).connect_url
        assert url.startswith(PUBLIC_BASE_URL + "/connect/")
        return urlsplit(url).path

    def consent(
        self, authorize_url: str, *, email: str, password: str, account: str | None = None, approve: bool = True
    ) -> str:
        """Sign in on the Worksection sandbox's real HTML form; returns its redirect (the callback URL)."""
        return submit_consent(
            self.browser, authorize_url, email=email, password=password, account=account, approve=approve
        )

    def log_lines(self) -> list[str]:
        return [line for line in self.log.getvalue().splitlines() if line]


def capture_logs(logger: Any) -> tuple[io.StringIO, logging.Handler]:
    """A handler with the production (redacting) formatter: exactly what CloudWatch would get."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    return stream, handler
