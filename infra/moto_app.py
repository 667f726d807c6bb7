"""moto's WSGI app as every local server of this project serves it (tests, local stack, bench).

Requests to DynamoDB and Secrets Manager are served one at a time. moto's backends hold no
locks: two conditional UpdateItems racing on one item were both accepted (round 36 of 80 of the
lease contention test against moto's ThreadedMotoServer). The real services serialise writes to
one item or secret, so serialising their requests restores the semantics under test, while
other services (SQS long polls) stay concurrent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

ATOMIC_TARGET_PREFIXES = ("DynamoDB_", "secretsmanager.")

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


class AtomicServices:
    """WSGI middleware: one request at a time for the JSON-protocol services named by prefix."""

    def __init__(self, app: Any, prefixes: tuple[str, ...]) -> None:
        self._app = app
        self._prefixes = prefixes
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if self._prefixes and target.startswith(self._prefixes):
            with self._lock:
                return list(self._app(environ, start_response))  # the whole answer, inside the lock
        result: Iterable[bytes] = self._app(environ, start_response)
        return result


def refuse_writes_to_deleted_secrets() -> None:
    """Make moto's Secrets Manager refuse PutSecretValue on a secret scheduled for deletion, as AWS
    does ("marked for deletion", InvalidRequestException). moto accepts the write and leaves the
    secret deleted, which hides the restore-then-write path a re-connect after a disconnect needs
    (found by the model-based test on moto). Idempotent; patches the class once per process."""
    from moto.secretsmanager.exceptions import InvalidRequestException  # noqa: PLC0415
    from moto.secretsmanager.models import SecretsManagerBackend  # noqa: PLC0415

    original = SecretsManagerBackend.put_secret_value
    if getattr(original, "refuses_deleted", False):
        return

    def put_secret_value(self: Any, secret_id: str, *args: Any, **kwargs: Any) -> Any:
        secret = self.secrets.get(secret_id) if self._is_valid_identifier(secret_id) else None
        if secret is not None and getattr(secret, "is_deleted", lambda: False)():
            raise InvalidRequestException(
                "You can't perform this operation on the secret because it was marked for deletion."
            )
        return original(self, secret_id, *args, **kwargs)

    put_secret_value.refuses_deleted = True  # type: ignore[attr-defined]  # a marker on a function object
    SecretsManagerBackend.put_secret_value = put_secret_value  # type: ignore[method-assign]  # the patch itself


def moto_wsgi_app(atomic_prefixes: tuple[str, ...] = ATOMIC_TARGET_PREFIXES) -> AtomicServices:
    refuse_writes_to_deleted_secrets()
    return AtomicServices(DomainDispatcherApplication(create_backend_app), atomic_prefixes)
