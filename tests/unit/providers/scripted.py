"""A scripted HTTP server on 127.0.0.1 for the provider tests: each request takes the next step."""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from tokenbroker.http import HttpResponse

HANG_LIMIT_SECONDS = 5.0


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes | str | Mapping[str, Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hang:
    """Read the request, then answer nothing (until the test ends): a read timeout."""


@dataclass(frozen=True)
class Drop:
    """Read the request, then close the connection without a status line."""


Step = Reply | Hang | Drop


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


class ScriptedServer:
    def __init__(self) -> None:
        self.steps: deque[Step] = deque()
        self.seen: list[Seen] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.seen.append(Seen(self.command, self.path, headers, body))
                step = server.steps.popleft() if server.steps else Reply(599, b"no step scripted")
                if isinstance(step, Hang):
                    server.release.wait(HANG_LIMIT_SECONDS)
                    self.close_connection = True
                    return
                if isinstance(step, Drop):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                payload = step.body
                if isinstance(payload, Mapping):
                    payload = json.dumps(payload)
                data = payload.encode() if isinstance(payload, str) else payload
                self.send_response(step.status)
                content_type = "application/json" if isinstance(step.body, Mapping) else "text/plain"
                if "content-type" not in {k.lower() for k in step.headers}:
                    self.send_header("Content-Type", content_type)
                for name, value in step.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, *steps: Step) -> None:
        self.steps.extend(steps)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def closed_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def answer(
    status: int = 200, body: bytes | str | Mapping[str, Any] = b"", headers: Mapping[str, str] | None = None
) -> HttpResponse:
    """An ``HttpResponse`` as the transport would build it (JSON bodies get a JSON content type)."""
    if isinstance(body, Mapping):
        data = json.dumps(body).encode()
        content_type = "application/json"
    else:
        data = body.encode() if isinstance(body, str) else body
        content_type = "text/html; charset=utf-8"
    lowered = {"content-type": content_type, **{k.lower(): v for k, v in (headers or {}).items()}}
    return HttpResponse(status=status, headers=lowered, body=data)
