"""The local stand-in for the HttpApi: template routes -> real handlers, API Gateway v2 payloads.

Every request is matched against the routes template.yaml declares, IAM routes are checked for a
valid SigV4 signature first (403 JSON otherwise, like API Gateway), and the handler receives a
payload-format-2.0 event and a Lambda-like context. Its answer (statusCode, headers, cookies,
body, isBase64Encoded) becomes the HTTP response.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from infra.localstack.functions import LambdaHandler, load_handler
from infra.localstack.sigv4 import SignatureError, SignedRequest, SigV4Verifier
from infra.localstack.topology import Auth, FunctionSpec, RouteSpec, Topology

API_ID = "local"
STAGE = "$default"
# HttpApi's own payload limit.
MAX_BODY_BYTES = 10 * 1024 * 1024
# Content types API Gateway passes through as text; everything else arrives base64-encoded.
_TEXT_TYPES = re.compile(r"^(text/|application/(json|xml|javascript|[\w.+-]+\+(json|xml))\b)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class BoundRoute:
    spec: RouteSpec
    function: FunctionSpec
    handler: LambdaHandler
    pattern: re.Pattern[str]

    @classmethod
    def of(cls, spec: RouteSpec, function: FunctionSpec, handler: LambdaHandler) -> BoundRoute:
        return cls(spec=spec, function=function, handler=handler, pattern=spec.compile())


def bind_routes(topology: Topology, handlers: dict[str, LambdaHandler] | None = None) -> list[BoundRoute]:
    """Every HttpApi route with its function's handler (imported once per function)."""
    handlers = {} if handlers is None else handlers
    bound = []
    for spec in topology.routes:
        function = topology.functions[spec.function]
        if spec.function not in handlers:
            handlers[spec.function] = load_handler(function.code_dir, function.handler, unique_name=spec.function)
        bound.append(BoundRoute.of(spec, function, handlers[spec.function]))
    return bound


@dataclass(slots=True)
class LambdaContext:
    """The attributes handlers and Powertools read from Lambda's context object."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    deadline: float
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"

    @classmethod
    def for_function(cls, function: FunctionSpec, *, region: str, account_id: str) -> LambdaContext:
        name = f"tokenbroker-local-{function.logical_id}"
        return cls(
            function_name=name,
            memory_limit_in_mb=function.memory_mb,
            invoked_function_arn=f"arn:aws:lambda:{region}:{account_id}:function:{name}",
            aws_request_id=str(uuid.uuid4()),
            deadline=time.monotonic() + function.timeout,
            log_group_name=f"/aws/lambda/{name}",
        )

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class Gateway:
    """A WSGI app: route, authenticate, build the event, invoke, translate the answer."""

    def __init__(
        self,
        routes: Iterable[BoundRoute],
        verifier: SigV4Verifier,
        *,
        log: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Most specific first, as API Gateway chooses.
        self._routes = sorted(routes, key=lambda r: r.spec.specificity, reverse=True)
        self._verifier = verifier
        self._log = log
        self._log_lock = threading.Lock()
        self._clock = clock

    @property
    def routes(self) -> list[BoundRoute]:
        return list(self._routes)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        started = time.monotonic()
        request = Request(environ)
        route_key = f"{request.method} (no route)"
        try:
            route_key, response = self._handle(request)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            response = _json(500, {"message": "Internal Server Error"})
        self._access_log(route_key, response.status_code, started)
        result: Iterable[bytes] = response(environ, start_response)
        return result

    def _handle(self, request: Request) -> tuple[str, Response]:
        raw_path, _, raw_query = _raw_uri(request.environ).partition("?")
        path = unquote(raw_path)
        match = self._match(request.method, path)
        if match is None:
            return f"{request.method} (no route)", _json(404, {"message": "Not Found"})
        route, path_parameters = match
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return route.spec.route_key, _json(413, {"message": "Request Entity Too Large"})
        body = request.get_data(cache=True)
        authorizer: dict[str, Any] | None = None
        if route.spec.auth is Auth.IAM:
            signed = SignedRequest(
                method=request.method,
                raw_path=raw_path,
                raw_query=raw_query,
                headers=list(request.headers.items()),
                body=body,
            )
            try:
                authorizer = self._verifier.verify(signed).to_authorizer()
            except SignatureError as refusal:
                return route.spec.route_key, _json(403, {"error": "forbidden", "message": str(refusal)})
        event = build_event(
            request,
            route=route.spec,
            raw_path=raw_path,
            raw_query=raw_query,
            path_parameters=path_parameters,
            body=body,
            authorizer=authorizer,
            account_id=self._verifier.credentials.account_id,
            now=self._clock(),
        )
        context = LambdaContext.for_function(
            route.function, region=self._verifier.credentials.region, account_id=self._verifier.credentials.account_id
        )
        try:
            answer = route.handler(event, context)
        except Exception:
            # What API Gateway answers when the integration fails; the traceback goes to the console.
            print(f"{route.function.logical_id} raised:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            return route.spec.route_key, _json(500, {"message": "Internal Server Error"})
        return route.spec.route_key, to_response(answer)

    def _match(self, method: str, path: str) -> tuple[BoundRoute, dict[str, str]] | None:
        for route in self._routes:
            if route.spec.method not in (method.upper(), "ANY"):
                continue
            found = route.pattern.fullmatch(path)
            if found is not None:
                return route, found.groupdict()
        return None

    def _access_log(self, route_key: str, status: int, started: float) -> None:
        # The route key, never the raw path or query: those carry connect-session ids and OAuth codes.
        if self._log is None:
            return
        millis = (time.monotonic() - started) * 1000
        with self._log_lock:
            print(f"[gateway] {route_key} -> {status} ({millis:.0f} ms)", file=self._log, flush=True)


def _raw_uri(environ: dict[str, Any]) -> str:
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not raw:
        query = environ.get("QUERY_STRING", "")
        raw = environ.get("PATH_INFO", "/") + (f"?{query}" if query else "")
    # WSGI carries the request line as latin-1 code points of the original bytes.
    return str(raw).encode("latin-1").decode("utf-8", errors="replace")


def build_event(
    request: Request,
    *,
    route: RouteSpec,
    raw_path: str,
    raw_query: str,
    path_parameters: dict[str, str],
    body: bytes,
    authorizer: dict[str, Any] | None,
    account_id: str,
    now: float,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload-format-2.0 event for ``request``."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered == "cookie":
            # HTTP APIs move cookies out of the headers into their own list.
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        headers[lowered] = f"{headers[lowered]},{value}" if lowered in headers else value
    # API Gateway adds these; handlers use them to build absolute URLs.
    headers.setdefault("x-forwarded-for", request.remote_addr or "127.0.0.1")
    headers.setdefault("x-forwarded-port", str(request.environ.get("SERVER_PORT", "")))
    headers.setdefault("x-forwarded-proto", "http")
    query: dict[str, str] = {}
    for pair in raw_query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name, value = unquote(name.replace("+", " ")), unquote(value.replace("+", " "))
        query[name] = f"{query[name]},{value}" if name in query else value
    moment = datetime.fromtimestamp(now, UTC)
    host = headers.get("host", "127.0.0.1")
    request_context: dict[str, Any] = {
        "accountId": account_id,
        "apiId": API_ID,
        "domainName": host,
        "domainPrefix": host.split(".", 1)[0],
        "http": {
            "method": request.method.upper(),
            "path": unquote(raw_path),
            "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
            "sourceIp": request.remote_addr or "127.0.0.1",
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": base64.b32encode(uuid.uuid4().bytes[:10]).decode().rstrip("=").lower(),
        "routeKey": route.route_key,
        "stage": STAGE,
        "time": moment.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(now * 1000),
    }
    if authorizer is not None:
        request_context["authorizer"] = authorizer
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": request_context,
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = {name: unquote(value) for name, value in path_parameters.items()}
    if body:
        if _TEXT_TYPES.match(headers.get("content-type", "")):
            event["body"] = body.decode("utf-8", errors="replace")
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


def to_response(answer: Any) -> Response:
    """Translate a handler's return value the way HttpApi does for payload format 2.0."""
    if not isinstance(answer, dict) or "statusCode" not in answer:
        # Format 2.0 infers a 200 JSON response from anything that is not a response object.
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return Response(text, status=200, content_type="application/json")
    body = answer.get("body") or ""
    data = base64.b64decode(body) if answer.get("isBase64Encoded") else str(body).encode("utf-8")
    response = Response(data, status=int(answer["statusCode"]))
    response.headers.remove("Content-Type")
    for name, values in (answer.get("multiValueHeaders") or {}).items():
        for value in values:
            response.headers.add(name, str(value))
    for name, value in (answer.get("headers") or {}).items():
        response.headers[name] = str(value)
    for cookie in answer.get("cookies") or []:
        response.headers.add("Set-Cookie", str(cookie))
    if "Content-Type" not in response.headers and data:
        response.headers["Content-Type"] = "application/json"
    return response


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
