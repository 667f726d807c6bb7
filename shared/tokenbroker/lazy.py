"""A handler's collaborators: built on first use, replaceable by tests and the local stack."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Lazy[T]:
    """One value per process, built by ``build`` on the first ``get`` (not at import time, so a
    cold start pays only for what the first request needs). ``use`` injects a ready value;
    ``use(None)`` makes the next ``get`` build again. Thread-safe: the local stack serves
    requests on threads."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._build()
            return self._value

    def use(self, value: T | None) -> None:
        with self._lock:
            self._value = value
