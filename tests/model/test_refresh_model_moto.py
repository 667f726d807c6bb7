"""The refresh model against the AWS backend (ConnectionStore + TokenStore on in-process moto),
fewer examples: the same rules and invariants prove the two backends keep the same protocol."""

from __future__ import annotations

import itertools
import os

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from tokenbroker.aws import AwsClients
from tokenbroker.clock import ManualClock
from tokenbroker.repository import ConnectionRepository
from tokenbroker.stores import ConnectionStore, TokenStore

from tests.model.refresh_model import RefreshMachine
from tests.support.aws import new_table

EXAMPLES = int(os.environ.get("MODEL_MOTO_EXAMPLES", "40"))


def test_refresh_model_on_moto(aws_clients: AwsClients) -> None:
    examples = itertools.count()

    class OnMoto(RefreshMachine):
        @staticmethod
        def make_repository(clock: ManualClock) -> ConnectionRepository:
            # A table and a secret prefix of its own per example: nothing leaks between examples.
            n = next(examples)
            return ConnectionRepository(
                items=ConnectionStore(new_table(aws_clients, f"model-{n}"), clock=clock),
                secrets=TokenStore(aws_clients.secretsmanager, stage=f"model{n}"),
                clock=clock,
            )

    run_state_machine_as_test(
        OnMoto,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
