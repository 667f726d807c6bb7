"""A third-party API on 127.0.0.1 that accepts the tokens a test says yes to, recording what it saw."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response


@dataclass
class Seen:
    authorization: str
    body: bytes


@dataclass
class FakeApi:
    """A third-party API on 127.0.0.1 that accepts the tokens ``accepts`` says yes to."""

    accepts: Callable[[str], bool]
    seen: list[Seen] = field(default_factory=list)
    _server: BaseWSGIServer | None = None

    def __enter__(self) -> Self:
        def app(environ: dict[str, Any], start_response: Any) -> Any:
            request = Request(environ)
            authorization = request.headers.get("Authorization", "")
            self.seen.append(Seen(authorization, request.get_data()))
            token = authorization.removeprefix("Bearer ")
            ok = self.accepts(token)
            answer = Response(
                '{"status": "ok"}' if ok else '{"message": "Access token is expired"}', 200 if ok else 401
            )
            return answer(environ, start_response)

        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/api"
