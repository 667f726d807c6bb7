"""AWS faults injected into botocore, answered with the status and error body AWS would send.

Two places, two meanings:

* ``processed=False`` (default): ``before-call`` answers instead of AWS. The request never left:
  nothing was written. botocore raises the modeled error as for a real answer; there is no SDK
  retry on this path, which is what the suite's one-attempt clients (``max_attempts=1``) do anyway.
* ``processed=True``: ``before-send`` answers after the service (moto, which also hooks
  ``before-send`` and always runs) already did the work: "the write landed, the answer was a 500".
  This goes through botocore's parser and its standard retries like a real answer.

Arm a fault right before the call under test (the store wrappers in the tests do that), so it
lands on the one read or write that is meant to fail.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders

# (HTTP status, error code) per kind, per protocol (JSON 1.0 DynamoDB, JSON 1.1 Secrets Manager).
KINDS = {
    "throttling": (400, "ThrottlingException"),
    "provisioned_throughput": (400, "ProvisionedThroughputExceededException"),
    "internal_error": (500, "InternalServerError"),
    "internal_service_error": (500, "InternalServiceError"),
    "service_unavailable": (503, "ServiceUnavailable"),
}


class _Body:
    """The ``raw`` of an AWSResponse: botocore only ever calls ``stream()``."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


@dataclass
class _Armed:
    operation: str  # "UpdateItem", "PutSecretValue", ...
    kind: str
    remaining: int
    processed: bool


@dataclass(frozen=True, slots=True)
class _HttpStatus:
    """What ``before-call`` must return as the HTTP half of a short-circuited answer."""

    status_code: int
    headers: dict[str, str]


class AwsFaults:
    """Arm faults per operation name; counts what it injected."""

    def __init__(self, *clients: Any) -> None:
        self._armed: list[_Armed] = []
        self._lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()  # every HTTP attempt per operation, faulted or not
        for client in clients:
            events = client.meta.events
            events.register_first("before-call", self._before_call, unique_id=f"aws-faults-call-{id(self)}")
            events.register_first("before-send", self._before_send, unique_id=f"aws-faults-send-{id(self)}")

    def arm(self, operation: str, kind: str = "throttling", *, times: int = 1, processed: bool = False) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind}; known: {sorted(KINDS)}")
        with self._lock:
            self._armed.append(_Armed(operation, kind, times, processed))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def _take(self, operation: str, processed: bool) -> str | None:
        with self._lock:
            for armed in self._armed:
                if armed.operation == operation and armed.processed == processed:
                    armed.remaining -= 1
                    if armed.remaining <= 0:
                        self._armed.remove(armed)
                    self.injected[operation] += 1
                    return armed.kind
        return None

    def _before_call(self, model: Any = None, **_: Any) -> tuple[_HttpStatus, dict[str, Any]] | None:
        if model is None:
            return None
        kind = self._take(str(model.name), processed=False)
        if kind is None:
            return None
        status, code = KINDS[kind]
        parsed = {
            "Error": {"Code": code, "Message": f"injected {code}"},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "injected-fault", "HTTPHeaders": {}},
        }
        return _HttpStatus(status, {}), parsed

    def _before_send(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        raw_target = request.headers.get("X-Amz-Target", b"")
        target = raw_target.decode() if isinstance(raw_target, bytes) else str(raw_target or "")
        operation = target.rsplit(".", 1)[-1]
        with self._lock:
            self.sent[operation] += 1
        kind = self._take(operation, processed=True)
        if kind is None:
            return None  # let moto (or AWS) answer
        status, code = KINDS[kind]
        protocol = "1.0" if target.startswith("DynamoDB") else "1.1"
        error_type = f"com.amazonaws.dynamodb.v20120810#{code}" if protocol == "1.0" else code
        body = json.dumps({"__type": error_type, "message": f"injected {code}"}).encode()
        headers = HTTPHeaders()
        headers["Content-Type"] = f"application/x-amz-json-{protocol}"
        headers["x-amzn-RequestId"] = "injected-fault"
        return AWSResponse(request.url, status, headers, _Body(body))
