"""Fixtures of the refresh tests: a Rig on in-process moto, sandboxes on 127.0.0.1, one ManualClock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tokenbroker.aws import AwsClients, DynamoTable
from tokenbroker.clock import ManualClock

from infra.sandboxes import WorklySandbox, WorksectionSandbox
from infra.sandboxes.catalog import sandbox_provider
from tests.integration.refresh.harness import WORKLY_EMAIL, WORKLY_PASSWORD, WS_EMAIL, WS_PASSWORD, Rig


@pytest.fixture
def rig(aws_clients: AwsClients, table: DynamoTable, clock: ManualClock) -> Rig:
    return Rig.create(aws_clients, table, clock)


@pytest.fixture
def workly(clock: ManualClock) -> Iterator[WorklySandbox]:
    with WorklySandbox(clock=clock) as sandbox:
        sandbox.add_user(WORKLY_EMAIL, WORKLY_PASSWORD, full_name="Ann Example")
        yield sandbox


@pytest.fixture
def worksection(clock: ManualClock) -> Iterator[WorksectionSandbox]:
    with WorksectionSandbox(clock=clock) as sandbox:
        sandbox.add_user(WS_EMAIL, WS_PASSWORD, accounts=("acme",))
        yield sandbox


@pytest.fixture
def sandboxed(rig: Rig, workly: WorklySandbox, worksection: WorksectionSandbox) -> Rig:
    """The rig with both providers pointed at their sandboxes."""
    rig.providers["workly"] = sandbox_provider(rig.catalog, workly, rig.clock, read_timeout=0.5)
    rig.providers["worksection"] = sandbox_provider(rig.catalog, worksection, rig.clock, read_timeout=0.5)
    return rig
