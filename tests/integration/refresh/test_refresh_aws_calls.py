"""AWS calls per refresh, counted through botocore's before-call hook (not estimated).

Budget (design.md): a scheduled refresh costs at most 4 AWS calls plus the provider call.
"""

from __future__ import annotations

from tokenbroker.aws import AwsCallCounter, AwsClients
from tokenbroker.errors import (
    ProviderError,
    ProviderErrorKind,
)
from tokenbroker.keys import ConnectionKey
from tokenbroker.refresh import RefreshOutcome

from infra.sandboxes import WorksectionSandbox
from infra.sandboxes.catalog import token_from_answer
from tests.integration.refresh.harness import WS_EMAIL, Rig, ScriptedProvider

KEY = ConnectionKey("worksection", "counted")


def test_scheduled_refresh_costs_four_aws_calls(
    sandboxed: Rig, aws_clients: AwsClients, worksection: WorksectionSandbox
) -> None:
    rig = sandboxed
    rig.seed(KEY, token_from_answer(worksection.issue_tokens(WS_EMAIL), rig.clock.now()))
    rig.advance_to_due(KEY)
    engine = rig.engine()
    with AwsCallCounter(aws_clients) as counter:
        assert engine.refresh(KEY).outcome is RefreshOutcome.REFRESHED
    assert counter.by_service == {
        "dynamodb.UpdateItem": 2,  # acquire (+ attempt), commit (+ release)
        "secretsmanager.GetSecretValue": 1,  # re-read under the lease
        "secretsmanager.PutSecretValue": 1,  # persist first
    }
    assert counter.total == 4
    assert worksection.calls["refresh"] == 1  # plus the one provider call


def test_other_paths(rig: Rig, aws_clients: AwsClients) -> None:
    provider = ScriptedProvider("worksection", rig.clock)
    rig.providers["worksection"] = provider
    rig.seed(KEY, provider.issue())
    engine = rig.engine()
    with AwsCallCounter(aws_clients) as counter:  # duplicate message, not due: acquire + release
        assert engine.refresh(KEY).outcome is RefreshOutcome.NOT_NEEDED
    assert counter.by_service == {"dynamodb.UpdateItem": 2}

    with AwsCallCounter(aws_clients) as counter:  # a vend's predicate: the secret is read
        assert engine.refresh(KEY, reason="vend", should_refresh=lambda s: False).outcome is RefreshOutcome.NOT_NEEDED
    assert counter.by_service == {"dynamodb.UpdateItem": 2, "secretsmanager.GetSecretValue": 1}

    rig.advance_to_due(KEY)
    provider.failures.append(ProviderError(ProviderErrorKind.TRANSIENT, "down", provider="worksection", status=503))
    with AwsCallCounter(aws_clients) as counter:  # transient: acquire, read, record_failure
        assert engine.refresh(KEY).outcome is RefreshOutcome.TRANSIENT_FAILURE
    assert counter.by_service == {"dynamodb.UpdateItem": 2, "secretsmanager.GetSecretValue": 1}


def test_dead_grant_costs(rig: Rig, aws_clients: AwsClients) -> None:
    provider = ScriptedProvider("worksection", rig.clock)
    rig.providers["worksection"] = provider
    rig.seed(KEY, provider.issue())
    rig.advance_to_due(KEY)
    provider.failures.append(ProviderError(ProviderErrorKind.REAUTHORIZATION_REQUIRED, "dead", provider="worksection"))
    with AwsCallCounter(aws_clients) as counter:
        assert rig.engine().refresh(KEY).outcome is RefreshOutcome.NEEDS_REAUTH
    # acquire, read, re-read after the dead grant, secret marked, item marked
    assert counter.by_service == {
        "dynamodb.UpdateItem": 2,
        "secretsmanager.GetSecretValue": 2,
        "secretsmanager.PutSecretValue": 1,
    }
