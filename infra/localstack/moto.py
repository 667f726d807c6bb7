"""moto in server mode on loopback: the AWS APIs of the local stack (DynamoDB, SQS, Secrets, Events).

The same app as moto's ``ThreadedMotoServer``, but on a socket we bind ourselves so that a busy
port is reported clearly instead of leaving a thread that never starts.
"""

from __future__ import annotations

from moto.moto_server.werkzeug_app import MotoRequestHandler

from infra.localstack.net import LoopbackServer, bind_loopback
from infra.moto_app import moto_wsgi_app


class _QuietMotoRequestHandler(MotoRequestHandler):
    """moto's request handling without one access-log line per AWS call."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class MotoServer:
    def __init__(self, port: int = 0, *, threaded: bool = True) -> None:
        self._port = port
        self._threaded = threaded
        self._server: LoopbackServer | None = None

    def start(self) -> MotoServer:
        sock = bind_loopback(self._port, what="moto port", flag="--moto-port")
        # Threaded, but DynamoDB and Secrets Manager one request at a time: moto's backends hold no
        # locks, and two racing refreshers must never both win a lease (infra/moto_app.py).
        app = moto_wsgi_app()
        self._server = LoopbackServer(
            app, sock, name="moto", threaded=self._threaded, request_handler=_QuietMotoRequestHandler
        )
        self._server.start()
        return self

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("moto server is not running")
        return self._server.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
