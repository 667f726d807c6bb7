"""Loopback servers: bind first (so a busy port is a clear error), then serve on a thread."""

from __future__ import annotations

import errno
import socket
import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

LOOPBACK = "127.0.0.1"


class PortInUse(Exception):
    def __init__(self, port: int, what: str = "port", flag: str = "--port") -> None:
        super().__init__(f"{what} {port} is in use; pass {flag}")
        self.port = port


def bind_loopback(port: int, *, what: str = "port", flag: str = "--port") -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` (0 = any free port), or ``PortInUse``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Lets a restart reuse a port still in TIME_WAIT; a live listener still makes bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise PortInUse(port, what, flag) from None
        raise
    return sock


class QuietRequestHandler(WSGIRequestHandler):
    """No werkzeug access log: query strings can carry OAuth codes. The gateway logs its own line."""

    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class LoopbackServer:
    """A threaded werkzeug server for ``app`` on a socket from ``bind_loopback``."""

    def __init__(
        self,
        app: Any,
        sock: socket.socket,
        *,
        name: str,
        threaded: bool = True,
        request_handler: type[WSGIRequestHandler] = QuietRequestHandler,
    ) -> None:
        self._server: BaseWSGIServer = make_server(
            LOOPBACK, 0, app, threaded=threaded, request_handler=request_handler, fd=sock.fileno()
        )
        # make_server duplicated the descriptor; ours is no longer needed.
        sock.close()
        self._server.daemon_threads = True  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=name, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
