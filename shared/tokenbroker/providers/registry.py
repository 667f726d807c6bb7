"""Resolves a provider name to a ready ``Provider``: catalog entry + app credentials + shared HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from tokenbroker.clock import Clock
from tokenbroker.http import HttpClient
from tokenbroker.providers.base import AppCredentials, Provider
from tokenbroker.providers.catalog import Catalog

ProviderResolver = Callable[[str], Provider]


class CredentialsSource(Protocol):
    def get(self, provider: str) -> AppCredentials: ...


class ProviderRegistry:
    """Builds each provider once per credentials value; a rotated app secret yields a new one."""

    def __init__(
        self,
        catalog: Catalog,
        credentials: CredentialsSource,
        *,
        http: HttpClient | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._catalog = catalog
        self._credentials = credentials
        self._http = http
        self._clock = clock
        self._built: dict[str, tuple[AppCredentials, Provider]] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> Provider:
        from tokenbroker.providers import build_provider  # noqa: PLC0415 - avoids an import cycle

        entry = self._catalog.get(name)  # UnknownProvider before any AWS call
        credentials = self._credentials.get(name)
        with self._lock:
            cached = self._built.get(name)
            if cached is not None and cached[0] == credentials:
                return cached[1]
            provider = build_provider(entry, credentials, http=self._http, clock=self._clock)
            self._built[name] = (credentials, provider)
            return provider
