"""Vending on moto (in-process) with the Worksection sandbox on 127.0.0.1, one ManualClock for all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from tokenbroker.aws import AwsClients, DynamoTable
from tokenbroker.clock import ManualClock

from infra.sandboxes import WorksectionSandbox
from tests.integration.vending.stack import WS_EMAIL, WS_PASSWORD, Stack, build_stack, sandbox_catalog
from tests.support.handlers import load_function


@pytest.fixture
def worksection(clock: ManualClock) -> Iterator[WorksectionSandbox]:
    with WorksectionSandbox(clock=clock) as sandbox:
        sandbox.add_user(WS_EMAIL, WS_PASSWORD, accounts=("acme",), first_name="Bob", last_name="Builder")
        yield sandbox


@pytest.fixture
def stack(
    aws_clients: AwsClients, table: DynamoTable, clock: ManualClock, worksection: WorksectionSandbox, tmp_path: Path
) -> Stack:
    return build_stack(aws_clients, table, clock, sandbox_catalog(tmp_path, worksection), worksection, wait_seconds=3)


@pytest.fixture
def vend_handler(stack: Stack) -> Iterator[ModuleType]:
    handler = load_function("vend")
    handler.use_services(handler.Services(vending=stack.vending, connect=stack.connect))
    yield handler
    handler.use_services(None)
