"""Create in moto what template.yaml declares: the table, queues (DLQ first), event bus, app secrets.

Properties come from the template through the ``Resolver``, which learns each created resource's
``Ref`` and ``GetAtt`` values so later resources (a queue's redrive policy, the handlers'
environment) can refer to earlier ones, exactly as CloudFormation would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from tokenbroker.stores.tokens import NAME_ROOT

from infra.localstack.template import Resolver, TemplateError, resources_of_type
from infra.template_resources import create_table_from_template

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

TABLE_TYPE = "AWS::DynamoDB::Table"
QUEUE_TYPE = "AWS::SQS::Queue"
BUS_TYPE = "AWS::Events::EventBus"

# CloudFormation property -> SQS attribute, for the attributes that are plain numbers or flags.
_QUEUE_ATTRIBUTES = {
    "DelaySeconds": "DelaySeconds",
    "MaximumMessageSize": "MaximumMessageSize",
    "MessageRetentionPeriod": "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout": "VisibilityTimeout",
    "SqsManagedSseEnabled": "SqsManagedSseEnabled",
    "FifoQueue": "FifoQueue",
    "ContentBasedDeduplication": "ContentBasedDeduplication",
}


@dataclass(frozen=True, slots=True)
class QueueInfo:
    logical_id: str
    name: str
    url: str
    arn: str


@dataclass(slots=True)
class CreatedResources:
    tables: dict[str, str] = field(default_factory=dict)  # logical id -> table name
    queues: dict[str, QueueInfo] = field(default_factory=dict)
    buses: dict[str, str] = field(default_factory=dict)  # logical id -> bus name

    def queue_by_arn(self, arn: str) -> QueueInfo:
        for queue in self.queues.values():
            if queue.arn == arn:
                return queue
        raise KeyError(arn)


@dataclass(frozen=True, slots=True)
class AwsApis:
    dynamodb: DynamoDBClient
    sqs: SQSClient
    events: EventBridgeClient
    secretsmanager: SecretsManagerClient


def create_resources(
    template: Mapping[str, Any], resolver: Resolver, apis: AwsApis, *, template_path: Path
) -> CreatedResources:
    created = CreatedResources()
    prefix = resolver.stack_name
    for logical_id, resource in resources_of_type(template, TABLE_TYPE).items():
        props = resource.get("Properties") or {}
        name = str(resolver.resolve(props["TableName"])) if "TableName" in props else f"{prefix}-{logical_id}"
        create_table_from_template(apis.dynamodb, name, template_path=template_path, logical_id=logical_id)
        created.tables[logical_id] = name
        resolver.refs[logical_id] = name
        arn = f"arn:aws:dynamodb:{resolver.region}:{resolver.account_id}:table/{name}"
        resolver.attributes[(logical_id, "Arn")] = arn
    for logical_id, resource in resources_of_type(template, BUS_TYPE).items():
        props = resolver.resolve(resource.get("Properties") or {})
        name = str(props.get("Name") or f"{prefix}-{logical_id}")
        answer = apis.events.create_event_bus(Name=name)
        created.buses[logical_id] = name
        resolver.refs[logical_id] = name
        resolver.attributes[(logical_id, "Arn")] = answer["EventBusArn"]
        resolver.attributes[(logical_id, "Name")] = name
    _create_queues(template, resolver, apis.sqs, created)
    return created


def _create_queues(template: Mapping[str, Any], resolver: Resolver, sqs: SQSClient, created: CreatedResources) -> None:
    """Queues in dependency order: a queue whose properties refer to a missing one waits a pass."""
    pending = dict(resources_of_type(template, QUEUE_TYPE))
    while pending:
        progressed = False
        last_error: TemplateError | None = None
        for logical_id, resource in list(pending.items()):
            try:
                props = resolver.resolve(resource.get("Properties") or {})
            except TemplateError as error:
                last_error = error
                continue
            created.queues[logical_id] = _create_queue(logical_id, props, resolver, sqs)
            del pending[logical_id]
            progressed = True
        if not progressed:
            raise TemplateError(f"cannot create queues {sorted(pending)}: {last_error}")


def _create_queue(logical_id: str, props: Mapping[str, Any], resolver: Resolver, sqs: SQSClient) -> QueueInfo:
    fifo = str(props.get("FifoQueue", "")).lower() == "true"
    name = str(props.get("QueueName") or f"{resolver.stack_name}-{logical_id}" + (".fifo" if fifo else ""))
    attributes = {sqs_name: _flag(props[cfn]) for cfn, sqs_name in _QUEUE_ATTRIBUTES.items() if cfn in props}
    if "RedrivePolicy" in props:
        attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]  # type: ignore[arg-type]
    arn = f"arn:aws:sqs:{resolver.region}:{resolver.account_id}:{name}"
    resolver.refs[logical_id] = url
    resolver.attributes[(logical_id, "Arn")] = arn
    resolver.attributes[(logical_id, "QueueName")] = name
    resolver.attributes[(logical_id, "QueueUrl")] = url
    return QueueInfo(logical_id=logical_id, name=name, url=url, arn=arn)


def _flag(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def app_secret_name(stage: str, provider: str) -> str:
    return f"{NAME_ROOT}/{stage}/apps/{provider}"


def seed_app_secret(
    secrets: SecretsManagerClient, *, stage: str, provider: str, client_id: str, client_secret: str
) -> str:
    """Create or overwrite ``tokenbroker/<stage>/apps/<provider>``; returns the secret name."""
    name = app_secret_name(stage, provider)
    value = json.dumps({"client_id": client_id, "client_secret": client_secret})
    try:
        secrets.create_secret(Name=name, SecretString=value, Tags=[{"Key": "provider", "Value": provider}])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ResourceExistsException":
            raise
        secrets.put_secret_value(SecretId=name, SecretString=value)
    return name
