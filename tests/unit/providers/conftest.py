"""Fixtures for the provider tests: a scripted loopback server, a fast HTTP client, a manual clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tokenbroker.clock import ManualClock
from tokenbroker.http import HttpClient
from tokenbroker.providers import AppCredentials, Catalog

from tests.unit.providers.scripted import ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    scripted.start()
    try:
        yield scripted
    finally:
        scripted.stop()


@pytest.fixture
def http() -> Iterator[HttpClient]:
    with HttpClient(connect_timeout=1.0, read_timeout=0.5, connect_retries=1, backoff_factor=0) as client:
        yield client


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_800_000_000.0)


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.load(environ={})


@pytest.fixture
def credentials() -> AppCredentials:
    return AppCredentials("client-id-1", "client-secret-value-1")
