"""moto in server mode on loopback: the AWS APIs of the local stack (DynamoDB, SQS, Secrets, Events).

The same app as moto's ``ThreadedMotoServer``, but on a socket we bind ourselves so that a busy
port is reported clearly instead of leaving a thread that never starts.
"""

from __future__ import annotations

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

from infra.localstack.net import LoopbackServer, bind_loopback


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
        app = DomainDispatcherApplication(create_backend_app)
        # design.md: a threaded moto keeps conditional writes atomic in practice; threaded=False
        # is the fallback should a contention test ever see two winners.
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
