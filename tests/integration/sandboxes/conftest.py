"""Fixtures of the sandbox tests: fresh sandboxes per test on 127.0.0.1 and a manual clock.

Logins are fixtures (not importable constants) so that test modules never import conftest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
from tokenbroker.clock import ManualClock

from infra.sandboxes import WorklySandbox, WorksectionSandbox

ACCESS_TTL = 3600.0
REFRESH_TTL = 7200.0


@dataclass(frozen=True)
class Login:
    email: str
    password: str = field(repr=False)
    accounts: tuple[str, ...] = ()


WORKLY_LOGIN = Login("ann@example.com", "correct-horse-battery")
WS_LOGIN = Login("bob@example.com", "bob-password-1", ("acme",))
WS_MULTI_LOGIN = Login("carol@example.com", "carol-password-1", ("alpha", "beta"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def workly_login() -> Login:
    return WORKLY_LOGIN


@pytest.fixture
def ws_login() -> Login:
    return WS_LOGIN


@pytest.fixture
def ws_multi_login() -> Login:
    return WS_MULTI_LOGIN


@pytest.fixture
def workly(clock: ManualClock) -> Iterator[WorklySandbox]:
    with WorklySandbox(clock=clock, access_ttl=ACCESS_TTL, refresh_ttl=REFRESH_TTL) as sandbox:
        sandbox.add_user(WORKLY_LOGIN.email, WORKLY_LOGIN.password, full_name="Ann Example")
        yield sandbox


@pytest.fixture
def worksection(clock: ManualClock) -> Iterator[WorksectionSandbox]:
    with WorksectionSandbox(clock=clock, access_ttl=ACCESS_TTL, refresh_ttl=REFRESH_TTL) as sandbox:
        sandbox.add_user(WS_LOGIN.email, WS_LOGIN.password, accounts=WS_LOGIN.accounts, first_name="Bob")
        sandbox.add_user(WS_MULTI_LOGIN.email, WS_MULTI_LOGIN.password, accounts=WS_MULTI_LOGIN.accounts)
        yield sandbox


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
