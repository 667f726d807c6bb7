"""Fixtures shared by every test: fake AWS credentials, moto (in-process and server), a clock.

No test can reach real AWS: the environment is faked at import time, before any client exists.
moto's in-process mock (``mocked_aws``) serves most tests; ``moto_server`` is a moto server on
127.0.0.1 for tests that need real HTTP and real concurrency. Both share moto's
process-wide backends and ``mock_aws`` resets them, so a server test creates its own table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from moto import mock_aws
from tokenbroker.aws import AwsClients, DynamoTable
from tokenbroker.clock import ManualClock

from infra.moto_app import refuse_writes_to_deleted_secrets
from tests.support.aws import MotoServer, clients_for, new_table, running, use_fake_aws_environment

pytest_plugins = ["tests.logscan_plugin"]  # fails the run when a secret reaches a log line

use_fake_aws_environment()


@pytest.fixture
def mocked_aws() -> Iterator[None]:
    """moto in-process for the duration of one test (fresh, empty account), as faithful to AWS as
    the shared moto app (writes to a secret scheduled for deletion are refused)."""
    refuse_writes_to_deleted_secrets()
    with mock_aws():
        yield


@pytest.fixture
def aws_clients(mocked_aws: None) -> AwsClients:
    return clients_for()


@pytest.fixture
def table(aws_clients: AwsClients) -> DynamoTable:
    """The template's table, created from template.yaml inside the in-process mock."""
    return new_table(aws_clients)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A moto server on 127.0.0.1 (ephemeral port) for the session; ``.endpoint_url``.

    Threaded like moto's ThreadedMotoServer, except that DynamoDB and Secrets Manager requests
    are served one at a time: plain moto let two racing conditional writes both succeed.
    """
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per call otherwise
    with running(MotoServer()) as server:
        yield server


@pytest.fixture
def server_clients(moto_server: MotoServer) -> AwsClients:
    """Clients aimed at ``moto_server`` (create your own table: see the module docstring)."""
    return clients_for(moto_server.endpoint_url)
