"""A tiny API Gateway on 127.0.0.1: checks SigV4 with botocore, then runs the vend handler.

The signature is verified by infra/localstack/sigv4.py (botocore's ``SigV4Auth`` recomputing the
signature over the request as received); unsigned or badly signed requests get API Gateway's 403.
A verified request becomes a payload-2.0 event with ``requestContext.authorizer.iam``.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from types import ModuleType, TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from infra.localstack.sigv4 import LocalCredentials, SignatureError, SignedRequest, SigV4Verifier
from tests.unit.vending.apigw import LambdaContext, iam_event

CREDENTIALS = LocalCredentials(access_key_id="AKIAVENDTESTLOCAL001", secret_access_key="vend-test-secret-key-0001")


class SigningGateway:
    def __init__(self, handler: ModuleType, credentials: LocalCredentials = CREDENTIALS) -> None:
        self._handler = handler
        self._verifier = SigV4Verifier(credentials)
        self.routes: Counter[str] = Counter()  # "GET /tokens/{provider}/{connection_id}" -> requests
        self.refused = 0
        self._lock = threading.Lock()
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        raw_path = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.path).split("?", 1)[0]
        raw_query = request.query_string.decode()
        body = request.get_data()
        signed = SignedRequest(
            method=request.method,
            raw_path=raw_path,
            raw_query=raw_query,
            headers=list(request.headers.items()),
            body=body,
        )
        try:
            caller = self._verifier.verify(signed)
        except SignatureError as error:
            with self._lock:
                self.refused += 1
            refusal = Response(json.dumps({"message": str(error)}), 403, content_type="application/json")
            return refusal(environ, start_response)
        event = iam_event(
            request.method,
            raw_path,
            query=dict(parse_qsl(raw_query, keep_blank_values=True)),
            body=body.decode() if body else None,
            authorizer=caller.to_authorizer(),
            headers={k: v for k, v in request.headers.items()},
        )
        with self._lock:
            self.routes[event["routeKey"]] += 1
        answer = self._handler.lambda_handler(event, LambdaContext())
        response = Response(answer.get("body") or "", int(answer["statusCode"]))
        for name, value in (answer.get("headers") or {}).items():
            response.headers[name] = str(value)
        return response(environ, start_response)
