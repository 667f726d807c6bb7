"""IAM in the transformed template: every statement names this stack's resources, nothing wider.

Allowed targets, by service:
  logs            the function's own log group (LoggingConfig), never the account's groups
  xray            "*": PutTraceSegments/PutTelemetryRecords have no resource-level permissions,
                  AWS requires "*" for them (this is the only wildcard)
  dynamodb        the Table or one of its declared indexes
  secretsmanager  arn:...:secret:tokenbroker/${Stage}/* (the stack's prefix)
  events          the stack's EventBus
  sqs             the stack's queues
  lambda          the stack's functions (scheduler role)
  kms             the KmsKeyId parameter (a key ARN the operator chose)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.template.sam import as_list, resources_of, statements, transformed

SECRET_PREFIX = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:tokenbroker/${Stage}/"
XRAY_WRITE = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
SECRET_READS = {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}
FUNCTION = "AWS::Lambda::Function"
ROLE = "AWS::IAM::Role"


@dataclass(frozen=True, slots=True)
class Target:
    kind: str  # resource | index | secrets | parameter | any
    name: str  # logical id, "<table>/<index>", secret path pattern, parameter name, "*"


def target_of(resource: Any, template: dict[str, Any]) -> Target:
    """What a statement's Resource entry points at; anything not of this stack fails the test."""
    resources, parameters = template["Resources"], template.get("Parameters", {})
    if resource == "*":
        return Target("any", "*")
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        name, attribute = resource["Fn::GetAtt"]
        assert name in resources and attribute == "Arn", resource
        return Target("resource", name)
    if isinstance(resource, dict) and "Ref" in resource:
        if resource["Ref"] in resources:
            return Target("resource", resource["Ref"])
        assert resource["Ref"] in parameters, resource
        return Target("parameter", resource["Ref"])
    if isinstance(resource, dict) and isinstance(resource.get("Fn::Sub"), str):
        text = resource["Fn::Sub"]
        if text.startswith(SECRET_PREFIX):
            return Target("secrets", text.removeprefix(SECRET_PREFIX))
        for name in resources:
            if text.startswith(f"${{{name}.Arn}}/index/"):
                return Target("index", f"{name}/{text.removeprefix(f'${{{name}.Arn}}/index/')}")
    raise AssertionError(f"not a resource of this stack: {resource!r}")


def function_roles(template: dict[str, Any]) -> dict[str, str]:
    """Function logical id -> logical id of its role."""
    roles = {}
    for name, function in resources_of(template, FUNCTION).items():
        role = function["Properties"]["Role"]
        assert isinstance(role, dict) and "Fn::GetAtt" in role, f"{name} must use a role of this stack: {role!r}"
        roles[name] = role["Fn::GetAtt"][0]
    return roles


def role_statements(role: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for policy in role["Properties"].get("Policies", []):
        yield from statements(policy["PolicyDocument"])


def allowed(role: dict[str, Any], action: str) -> list[Target]:
    template = transformed()
    return [
        target_of(resource, template)
        for statement in role_statements(role)
        if statement["Effect"] == "Allow" and action in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    ]


def denied(role: dict[str, Any], action: str) -> list[Target]:
    template = transformed()
    return [
        target_of(resource, template)
        for statement in role_statements(role)
        if statement["Effect"] == "Deny" and action in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    ]


def test_every_function_has_its_own_role_without_managed_policies() -> None:
    template = transformed()
    roles = function_roles(template)
    assert len(roles) == 4
    assert len(set(roles.values())) == len(roles), "roles are not shared between functions"
    for role_name in resources_of(template, ROLE):
        properties = template["Resources"][role_name]["Properties"]
        # AWSLambdaBasicExecutionRole and AWSLambdaSQSQueueExecutionRole grant every log group and queue.
        assert not properties.get("ManagedPolicyArns"), f"{role_name} has managed policies"
        assert not properties.get("PermissionsBoundary")


@pytest.mark.parametrize("role_name", sorted(resources_of(transformed(), ROLE)))
def test_every_statement_names_only_this_stacks_resources(role_name: str) -> None:
    template = transformed()
    role = template["Resources"][role_name]
    roles = function_roles(template)
    own_function = next((f for f, r in roles.items() if r == role_name), None)
    own_log_group = None
    if own_function is not None:
        own_log_group = template["Resources"][own_function]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    tables = resources_of(template, "AWS::DynamoDB::Table")
    indexes = {
        f"{t}/{i['IndexName']}" for t, table in tables.items() for i in table["Properties"]["GlobalSecondaryIndexes"]
    }

    for statement in role_statements(role):
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), statement
        actions = as_list(statement["Action"])
        targets = [target_of(resource, template) for resource in as_list(statement["Resource"])]
        for action in actions:
            service, _, operation = action.partition(":")
            assert operation and "*" not in action, f"{role_name}: wildcard action {action}"
            for target in targets:
                kinds = {
                    "logs": target == Target("resource", str(own_log_group)),
                    "xray": target.kind == "any" and action in XRAY_WRITE,
                    "dynamodb": (target.kind == "resource" and target.name in tables)
                    or (target.kind == "index" and target.name in indexes),
                    "secretsmanager": target.kind == "secrets" and target.name in ("*", "apps/*"),
                    "events": target.kind == "resource"
                    and template["Resources"][target.name]["Type"] == "AWS::Events::EventBus",
                    "sqs": target.kind == "resource"
                    and template["Resources"][target.name]["Type"] == "AWS::SQS::Queue",
                    "lambda": target.kind == "resource" and template["Resources"][target.name]["Type"] == FUNCTION,
                    "kms": target == Target("parameter", "KmsKeyId"),
                }
                assert kinds.get(service, False), f"{role_name}: {action} on {target} is wider than this stack"


def test_the_only_wildcard_resource_is_xray_write() -> None:
    template = transformed()
    for role_name, role in resources_of(template, ROLE).items():
        for statement in role_statements(role):
            if "*" in as_list(statement["Resource"]):
                assert set(as_list(statement["Action"])) <= XRAY_WRITE, (role_name, statement)


def test_no_function_can_write_the_provider_app_credentials() -> None:
    """tokenbroker/<stage>/apps/* is the operator's: every write a role may do on the prefix is denied there."""
    template = transformed()
    for role_name in function_roles(template).values():
        role = template["Resources"][role_name]
        writes = {
            action
            for statement in role_statements(role)
            if statement["Effect"] == "Allow"
            for action in as_list(statement["Action"])
            if action.startswith("secretsmanager:") and action not in SECRET_READS
        }
        for action in writes:
            assert Target("secrets", "apps/*") in denied(role, action), f"{role_name} may {action} app credentials"


def test_secret_lifecycle_actions_belong_to_one_function_each() -> None:
    template = transformed()
    roles = {function: template["Resources"][role] for function, role in function_roles(template).items()}

    def holders(action: str) -> set[str]:
        return {function for function, role in roles.items() if allowed(role, action)}

    assert holders("secretsmanager:CreateSecret") == {"CallbackFunction"}  # the first token of a connection
    assert holders("secretsmanager:RestoreSecret") == {"CallbackFunction"}  # re-connect after a disconnect
    # DELETE /connections/...; the sweep removes a connection whose only grant expired unconfirmed.
    assert holders("secretsmanager:DeleteSecret") == {"VendFunction", "RefreshSweepFunction"}
    assert holders("secretsmanager:GetSecretValue") == {"CallbackFunction", "VendFunction", "RefreshWorkerFunction"}
    # The pending label of a confirm-mode grant: taken off on a lost race (callback), on confirmation
    # or mismatch (vend) and on expiry (sweep). The worker, which refreshes, never touches it.
    assert holders("secretsmanager:UpdateSecretVersionStage") == {
        "CallbackFunction",
        "VendFunction",
        "RefreshSweepFunction",
    }


def test_the_sweep_queries_the_due_index_enqueues_and_discards_expired_pending_grants() -> None:
    template = transformed()
    sweep = template["Resources"][function_roles(template)["RefreshSweepFunction"]]
    actions = {a for s in role_statements(sweep) for a in as_list(s["Action"]) if not a.startswith(("logs:", "xray:"))}
    assert actions == {
        "dynamodb:Query",
        "sqs:SendMessage",
        # discarding: claim the session (conditional delete), tombstone a never-confirmed connection,
        # take the pending label off and schedule the secret's deletion. Never a read of a token.
        "dynamodb:DeleteItem",
        "dynamodb:UpdateItem",
        "secretsmanager:UpdateSecretVersionStage",
        "secretsmanager:DeleteSecret",
    }
    assert allowed(sweep, "dynamodb:Query") == [Target("index", "Table/due")]
    assert allowed(sweep, "sqs:SendMessage") == [Target("resource", "RefreshQueue")]
    assert allowed(sweep, "dynamodb:DeleteItem") == [Target("resource", "Table")]
    assert not allowed(sweep, "secretsmanager:GetSecretValue")
    assert not allowed(sweep, "kms:Decrypt")


def test_the_worker_consumes_only_its_queue() -> None:
    template = transformed()
    worker = template["Resources"][function_roles(template)["RefreshWorkerFunction"]]
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        assert allowed(worker, action) == [Target("resource", "RefreshQueue")]
    [mapping] = resources_of(template, "AWS::Lambda::EventSourceMapping").values()
    assert mapping["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["RefreshQueue", "Arn"]}


def test_a_customer_key_is_granted_only_when_one_is_configured() -> None:
    template = transformed()
    for role_name in function_roles(template).values():
        for policy in template["Resources"][role_name]["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                uses_kms = any(str(a).startswith("kms:") for a in as_list(statement.get("Action", [])))
                assert not uses_kms, f"{role_name}: kms granted unconditionally"
        kms = [s for s in role_statements(template["Resources"][role_name]) if "kms:Decrypt" in as_list(s["Action"])]
        if kms:
            conditional = [
                s
                for p in template["Resources"][role_name]["Properties"]["Policies"]
                for s in p["PolicyDocument"]["Statement"]
                if "Fn::If" in s
            ]
            assert conditional and all(s["Fn::If"][0] == "HasKmsKey" for s in conditional)
