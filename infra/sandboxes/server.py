"""Common plumbing of the provider sandboxes.

A sandbox is a WSGI app served by werkzeug's threaded server on 127.0.0.1 in a background
thread. Every provider request goes through the same path: count it, read the body, apply
latency, then an armed fault either instead of the handler or on top of its answer. The
``/_sandbox/...`` control API (never counted, never faulted) lets another process (the local
stack, a browser test) drive the same knobs as Python code:

    GET  /_sandbox/calls                  {"calls": {endpoint: n}, "outcomes": {grant: n}, "refreshes": n}
    GET  /_sandbox/faults                 armed faults and latencies
    POST /_sandbox/faults                 a Fault as JSON (or a list), or {"latency": s, "endpoint": name?}
    DELETE /_sandbox/faults               disarm everything
    POST /_sandbox/reset                  faults, latency, counters; {"state": true} also tokens and codes
    POST /_sandbox/users                  {"email", "password", ...add_user details}
    GET|POST /_sandbox/knobs              read / set knobs, e.g. {"league_version": 9}
    POST /_sandbox/clients                {"client_id", "client_secret"}
    POST /_sandbox/expire-access-tokens   {"email"?} -> {"expired": n}
    POST /_sandbox/revoke-refresh-tokens  {"email"?} -> {"revoked": n}
    GET  /_sandbox/password-resets        (Workly) the recorded reset requests
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

from tokenbroker.clock import Clock, SystemClock
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from infra.sandboxes.faults import Fault, FaultKind, Faults

Handler = Callable[[Request], Response]
JsonBody = Mapping[str, Any] | list[Any]

LOOPBACK = "127.0.0.1"


def json_response(body: JsonBody, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False),
        status=status,
        headers=dict(headers or {}),
        content_type="application/json; charset=utf-8",
    )


def html_page(title: str, body_html: str, status: int = 200, *, lang: str = "en") -> Response:
    """A minimal, accessible page. ``title`` is escaped here; ``body_html`` must be escaped already."""
    page = (
        f'<!doctype html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n</head>\n<body>\n<main>\n"
        f"<h1>{html.escape(title)}</h1>\n{body_html}\n</main>\n</body>\n</html>\n"
    )
    return Response(page, status=status, content_type="text/html; charset=utf-8")


def html_error(status: int, title: str | None = None) -> Response:
    """What a proxy or load balancer answers: HTML, not JSON."""
    phrase = title or {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}.get(
        status, "Error"
    )
    return html_page(f"{status} {phrase}", "<p>nginx</p>", status)


class CallCounter:
    """Thread-safe counts by name (requests per endpoint, successful grants per type)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()

    def __repr__(self) -> str:
        return f"CallCounter({self.snapshot()})"


@dataclass(slots=True)
class SandboxKnobs:
    """Behaviour switches that tests flip at run time (from Python or POST /_sandbox/knobs)."""

    access_ttl: float
    refresh_ttl: float

    def update(self, values: Mapping[str, Any]) -> None:
        names = {f.name: f for f in dataclasses.fields(self)}
        for name, value in values.items():
            if name not in names:
                raise ValueError(f"unknown knob {name!r}; known: {sorted(names)}")
            current = getattr(self, name)
            if value is not None and current is not None and not _compatible(current, value):
                raise ValueError(f"knob {name!r} expects {type(current).__name__}")
            if value is None and "None" not in str(names[name].type):
                raise ValueError(f"knob {name!r} cannot be null")
            # JSON has no tuples; sequence knobs are tuples so that they stay hashable and frozen.
            setattr(self, name, tuple(value) if isinstance(value, list) else value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _compatible(current: object, value: object) -> bool:
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, int | float) and isinstance(value, int | float):
        return isinstance(current, float) or isinstance(value, int)
    if isinstance(current, tuple):
        return isinstance(value, list | tuple)
    return isinstance(value, type(current))


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str  # what ``calls`` counts and what a fault's ``endpoint`` matches
    rule: str
    methods: tuple[str, ...]
    handler: Handler


class _QuietHandler(WSGIRequestHandler):
    # Tests would drown in access logs; the standalone runner turns them on with ``verbose``.
    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if getattr(self.server.app, "verbose", False):
            super().log_request(code, size)


class SandboxServer(ABC):
    """Lifecycle, dispatch, faults, counters and the control API shared by both providers."""

    provider: ClassVar[str]
    knobs: SandboxKnobs

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        port: int = 0,
        clock: Clock | None = None,
        verbose: bool = False,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.faults = Faults()
        self.calls = CallCounter()  # requests per endpoint, faulted or not
        self.outcomes = CallCounter()  # grants performed, by grant type
        self.verbose = verbose
        self.clients: dict[str, str] = {client_id: client_secret}
        self.client_id = client_id
        self.client_secret = client_secret
        self._requested_port = port
        self._lock = threading.RLock()  # guards the provider state of subclasses
        self._stopping = threading.Event()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._endpoints = {e.name: e for e in self.endpoints()}
        rules = [Rule(e.rule, endpoint=e.name, methods=list(e.methods)) for e in self._endpoints.values()]
        rules += [
            Rule(f"/_sandbox/{path}", endpoint=f"_sandbox:{path}", methods=list(methods))
            for path, methods in self._control_routes().items()
        ]
        self._url_map = Map(rules, strict_slashes=False)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{self.provider} sandbox already started")
        self._stopping.clear()
        server = make_server(LOOPBACK, self._requested_port, self, threaded=True, request_handler=_QuietHandler)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"{self.provider}-sandbox",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes requests that hang or sleep in latency
        _shutdown_now(server)
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.provider} sandbox is not running")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        return f"http://{LOOPBACK}:{self.port}"

    # --- what subclasses provide ---------------------------------------------------------------

    @abstractmethod
    def endpoints(self) -> list[Endpoint]: ...

    @abstractmethod
    def add_user(self, email: str, password: str, **details: Any) -> None: ...

    @abstractmethod
    def expire_access_tokens(self, email: str | None = None) -> int:
        """Make every issued access token (of ``email``) expired now; returns how many."""

    @abstractmethod
    def revoke_refresh_tokens(self, email: str | None = None) -> int:
        """Kill every live refresh token (of ``email``); returns how many."""

    @abstractmethod
    def rate_limited_response(self, retry_after: float | None) -> Response: ...

    @abstractmethod
    def server_error_body(self) -> JsonBody:
        """The provider's own "something broke" body (served with HTTP 200 by ERROR_200)."""

    @abstractmethod
    def clear_state(self) -> None:
        """Forget issued tokens and codes (users and clients stay)."""

    def before_request(self, endpoint: str, request: Request) -> Response | None:
        """Provider-wide switches such as maintenance; ``None`` lets the handler run."""
        return None

    def extra_control(self, action: str, request: Request) -> Response | None:
        """Provider-specific control routes under /_sandbox/ (see ``_control_routes``)."""
        return None

    def extra_control_routes(self) -> dict[str, tuple[str, ...]]:
        return {}

    # --- common helpers ------------------------------------------------------------------------

    @property
    def refreshes(self) -> int:
        """Refresh grants actually performed (rotation happened), even if the answer was lost."""
        return self.outcomes["refresh_token"]

    def add_client(self, client_id: str, client_secret: str) -> None:
        with self._lock:
            self.clients[client_id] = client_secret

    def remove_client(self, client_id: str) -> None:
        with self._lock:
            self.clients.pop(client_id, None)

    def client_is_valid(self, client_id: str | None, client_secret: str | None) -> bool:
        with self._lock:
            return client_id is not None and self.clients.get(client_id) == client_secret

    def reset(self, *, state: bool = False) -> None:
        """Clear faults, latency and counters; with ``state`` also issued tokens and codes."""
        self.faults.clear()
        self.calls.clear()
        self.outcomes.clear()
        if state:
            with self._lock:
                self.clear_state()

    def pause(self, seconds: float) -> None:
        """Sleep real time, but wake at once when the sandbox stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    # --- WSGI ----------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        response = self._dispatch(request)
        result: Iterable[bytes] = response(environ, start_response)
        return result

    def _dispatch(self, request: Request) -> Response:
        adapter = self._url_map.bind_to_environ(request.environ)
        try:
            name, _args = adapter.match()
        except NotFound:
            return html_page("404 Not Found", "<p>No such page.</p>", 404)
        except MethodNotAllowed:
            return html_page("405 Method Not Allowed", "<p>Method not allowed.</p>", 405)
        except HTTPException as exc:  # e.g. a slash redirect
            return exc.get_response()
        if name.startswith("_sandbox:"):
            return self._control(name.removeprefix("_sandbox:"), request)
        return self._serve(self._endpoints[name], request)

    def _serve(self, endpoint: Endpoint, request: Request) -> Response:
        self.calls.add(endpoint.name)
        request.get_data()  # a real server has read the whole request before it stalls
        self.pause(self.faults.latency_for(endpoint.name))
        fault = self.faults.take(endpoint.name)
        if fault is not None and not fault.applies_after:
            return self._misbehave(fault, request, None)
        response = self.before_request(endpoint.name, request) or endpoint.handler(request)
        if fault is not None:
            return self._misbehave(fault, request, response)
        return response

    def _misbehave(  # noqa: PLR0911 (one return per fault kind)
        self, fault: Fault, request: Request, answer: Response | None
    ) -> Response:
        """Apply ``fault``; ``answer`` is the real response when the grant was performed first."""
        match fault.kind:
            case FaultKind.STATUS:
                response = (
                    Response(fault.body, status=fault.status, content_type="text/html; charset=utf-8")
                    if fault.body is not None
                    else html_error(fault.status)
                )
                if fault.retry_after is not None:
                    response.headers["Retry-After"] = _seconds(fault.retry_after)
                return response
            case FaultKind.RATE_LIMIT:
                response = self.rate_limited_response(fault.retry_after)
                if fault.body is not None:
                    response.set_data(fault.body)
                return response
            case FaultKind.ERROR_200:
                if fault.body is not None:
                    return Response(fault.body, status=200, content_type="application/json")
                return json_response(self.server_error_body(), 200)
            case FaultKind.MALFORMED_JSON:
                text = answer.get_data(as_text=True) if answer is not None else '{"access_token": "0123'
                return Response(text[: max(1, len(text) // 2)], status=200, content_type="application/json")
            case FaultKind.OMIT_FIELDS:
                assert answer is not None
                return _without_fields(answer, fault.fields)
            case FaultKind.HANG:
                self.pause(fault.seconds)
                return answer if answer is not None else html_error(504, "Gateway Time-out")
            case FaultKind.DROP:
                _drop_connection(request)
                return Response(b"", status=200)  # never delivered: the socket is shut down

    # --- control API ---------------------------------------------------------------------------

    def _control_routes(self) -> dict[str, tuple[str, ...]]:
        return {
            "calls": ("GET",),
            "faults": ("GET", "POST", "DELETE"),
            "reset": ("POST",),
            "users": ("POST",),
            "knobs": ("GET", "POST"),
            "clients": ("POST",),
            "expire-access-tokens": ("POST",),
            "revoke-refresh-tokens": ("POST",),
            **self.extra_control_routes(),
        }

    def _control(self, action: str, request: Request) -> Response:
        try:
            return self._control_action(action, request)
        except (ValueError, TypeError, KeyError) as exc:
            return json_response({"error": "bad_request", "message": str(exc)}, 400)

    def _control_action(self, action: str, request: Request) -> Response:
        body: Any = request.get_json(silent=True) if request.method in ("POST", "DELETE") else None
        body = body if body is not None else {}
        handler = self._control_handlers().get((action, request.method)) or self._control_handlers().get((action, "*"))
        if handler is not None:
            return handler(body)
        extra = self.extra_control(action, request)
        if extra is None:
            raise ValueError(f"unknown control action {action}")
        return extra

    def _control_handlers(self) -> dict[tuple[str, str], Callable[[Any], Response]]:
        return {
            ("calls", "*"): lambda _: json_response(
                {"calls": self.calls.snapshot(), "outcomes": self.outcomes.snapshot(), "refreshes": self.refreshes}
            ),
            ("faults", "POST"): self._arm_faults,
            ("faults", "DELETE"): self._clear_faults,
            ("faults", "GET"): lambda _: self._faults_view(),
            ("reset", "*"): self._reset_from_json,
            ("users", "*"): self._add_user_from_json,
            ("knobs", "POST"): self._set_knobs,
            ("knobs", "GET"): lambda _: json_response(self.knobs.to_dict()),
            ("clients", "*"): self._add_client_from_json,
            ("expire-access-tokens", "*"): lambda body: json_response(
                {"expired": self.expire_access_tokens(body.get("email"))}
            ),
            ("revoke-refresh-tokens", "*"): lambda body: json_response(
                {"revoked": self.revoke_refresh_tokens(body.get("email"))}
            ),
        }

    def _arm_faults(self, body: Any) -> Response:
        for spec in body if isinstance(body, list) else [body]:
            if "latency" in spec:
                self.faults.set_latency(float(spec["latency"]), endpoint=spec.get("endpoint"))
            else:
                self.faults.add(Fault.from_dict(spec))
        return self._faults_view()

    def _clear_faults(self, _body: Any) -> Response:
        self.faults.clear()
        return self._faults_view()

    def _reset_from_json(self, body: Any) -> Response:
        self.reset(state=bool(body.get("state", False)))
        return _ok()

    def _add_client_from_json(self, body: Any) -> Response:
        self.add_client(str(body["client_id"]), str(body["client_secret"]))
        return _ok(201)

    def _add_user_from_json(self, body: Any) -> Response:
        details = {k: v for k, v in body.items() if k not in ("email", "password")}
        self.add_user(str(body["email"]), str(body["password"]), **details)
        return _ok(201)

    def _set_knobs(self, body: Any) -> Response:
        with self._lock:
            self.knobs.update(body)
        return json_response(self.knobs.to_dict())

    def _faults_view(self) -> Response:
        return json_response(
            {
                "pending": [{**f.to_dict(), "remaining": n} for f, n in self.faults.pending()],
                "latency": [{"endpoint": e, "seconds": s} for e, s in self.faults.latencies().items()],
            }
        )


def _shutdown_now(server: BaseWSGIServer) -> None:
    """``server.shutdown()`` waits for the accept loop's next poll; a loopback connection wakes it
    at once, so stopping takes milliseconds without a busy poll interval."""
    stopper = threading.Thread(target=server.shutdown, daemon=True)
    stopper.start()
    deadline = time.monotonic() + 5
    while stopper.is_alive() and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection((LOOPBACK, server.server_port), timeout=0.5).close()
        stopper.join(0.01)


def _ok(status: int = 200) -> Response:
    return json_response({"ok": True}, status)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _without_fields(answer: Response, fields: Iterable[str]) -> Response:
    """Trim a successful JSON answer; errors pass through as they are."""
    if not 200 <= answer.status_code < 300:
        return answer
    try:
        data = json.loads(answer.get_data(as_text=True))
    except ValueError:
        return answer
    if isinstance(data, dict):
        for name in fields:
            data.pop(name, None)
    return json_response(data, answer.status_code, {k: v for k, v in answer.headers if k == "Retry-After"})


def _drop_connection(request: Request) -> None:
    """Close the TCP connection under werkzeug without writing a byte of response."""
    sock = request.environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed by the client
            sock.shutdown(socket.SHUT_RDWR)
