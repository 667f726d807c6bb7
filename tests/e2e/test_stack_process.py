"""`python -m infra.localstack` as a process, with a small template and fake handlers.

Pins the stack's own duties independently of the real handlers: resources and handler
environment from the template, the schedule feeding the queue, the poller feeding the worker
with partial-batch failures and redrive, a clean stop on SIGTERM, a clear error on a busy port.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from infra.localstack.net import bind_loopback
from tests.e2e.signing import signed_headers
from tests.e2e.stackproc import REPO, StackProcess, running_stack, stack_environment, stop

pytestmark = [pytest.mark.e2e]

TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: dev}
  AllowedReturnUrls: {Type: CommaDelimitedList, Default: ""}
  PublicBaseUrl: {Type: String, Default: ""}
  WorkerMaxConcurrency: {Type: Number, Default: 3}
Globals:
  Function:
    Runtime: python3.12
    Timeout: 10
    Environment:
      Variables:
        STAGE: !Ref Stage
        TABLE_NAME: !Ref Table
        EVENT_BUS_NAME: !Ref EventBus
        ALLOWED_RETURN_URLS: !Join [",", !Ref AllowedReturnUrls]
        PUBLIC_BASE_URL: !Ref PublicBaseUrl
        FROM_TEMPLATE: !Sub "${Stage}-${AWS::Region}"
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
        - {AttributeName: sk, AttributeType: S}
        - {AttributeName: due_shard, AttributeType: S}
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
        - {AttributeName: sk, KeyType: RANGE}
      GlobalSecondaryIndexes:
        - IndexName: due
          KeySchema: [{AttributeName: due_shard, KeyType: HASH}]
          Projection: {ProjectionType: KEYS_ONLY}
      TimeToLiveSpecification: {AttributeName: ttl, Enabled: true}
  HttpApi:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth: {EnableIamAuthorizer: true, DefaultAuthorizer: AWS_IAM}
  ApiFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fake/api/
      Handler: app.lambda_handler
      Events:
        Env:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: /env, Method: GET}
        Public:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: /public, Method: GET, Auth: {Authorizer: NONE}}
  SweepFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fake/refresh/
      Handler: app.sweep_handler
      Environment:
        Variables:
          REFRESH_QUEUE_URL: !Ref RefreshQueue
      Events:
        Schedule:
          Type: ScheduleV2
          Properties: {ScheduleExpression: rate(5 minutes)}
  WorkerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fake/refresh/
      Handler: app.worker_handler
      Events:
        Due:
          Type: SQS
          Properties:
            Queue: !GetAtt RefreshQueue.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig: {MaximumConcurrency: !Ref WorkerMaxConcurrency}
  RefreshQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 1
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt RefreshDLQ.Arn
        maxReceiveCount: 2
  RefreshDLQ:
    Type: AWS::SQS::Queue
    Properties:
      MessageRetentionPeriod: 1209600
  EventBus:
    Type: AWS::Events::EventBus
    Properties:
      Name: !Sub tokenbroker-${Stage}
"""

API = """
import json, os

NAMES = ("STAGE", "TABLE_NAME", "EVENT_BUS_NAME", "ALLOWED_RETURN_URLS", "PUBLIC_BASE_URL", "FROM_TEMPLATE",
         "REFRESH_QUEUE_URL", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "TOKENBROKER_PROVIDERS_FILE")

def lambda_handler(event, context):
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"},
            "body": json.dumps({name: os.environ.get(name) for name in NAMES})}
"""

REFRESH = """
import json, os, threading
import boto3

_lock = threading.Lock()
_ticks = [0]

def sweep_handler(event, context):
    with _lock:
        _ticks[0] += 1
        tick = _ticks[0]
    boto3.client("sqs").send_message(QueueUrl=os.environ["REFRESH_QUEUE_URL"], MessageBody=f"tick-{tick}")
    return {"source": event["source"]}

def worker_handler(event, context):
    failures = []
    with _lock, open(os.environ["FAKE_WORKER_LOG"], "a") as log:
        for record in event["Records"]:
            assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"].endswith("RefreshQueue")
            log.write(record["body"] + "\\n")
            if record["body"] == "poison":
                failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stack-site")
    (root / "template.yaml").write_text(TEMPLATE)
    for name, code in (("api", API), ("refresh", REFRESH)):
        (root / "fake" / name).mkdir(parents=True)
        (root / "fake" / name / "app.py").write_text(code)
    return root


@pytest.fixture(scope="module")
def stack(site: Path) -> Iterator[StackProcess]:
    args = [
        "--template",
        str(site / "template.yaml"),
        "--no-sandboxes",
        "--sweep-interval",
        "1",
        "--allowed-return-urls",
        "https://app.example.com/done,http://127.0.0.1:9999",
    ]
    env = stack_environment({"FAKE_WORKER_LOG": str(site / "worker.log")})
    with running_stack(args, site, env=env) as running:
        yield running


def aws(stack: StackProcess, service: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=stack.info["moto_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_the_handlers_get_the_environment_the_template_declares(stack: StackProcess) -> None:
    url = f"{stack.api_url}/env"
    env = requests.get(url, headers=signed_headers("GET", url), timeout=5).json()
    assert env["STAGE"] == "local"
    assert env["TABLE_NAME"] == stack.info["table_name"] == "tokenbroker-local-Table"
    assert env["EVENT_BUS_NAME"] == "tokenbroker-local"
    assert env["FROM_TEMPLATE"] == "local-us-east-1"
    assert env["ALLOWED_RETURN_URLS"] == "https://app.example.com/done,http://127.0.0.1:9999"
    assert env["PUBLIC_BASE_URL"] == stack.api_url
    assert env["REFRESH_QUEUE_URL"].endswith("/tokenbroker-local-RefreshQueue")
    assert env["AWS_ENDPOINT_URL"] == stack.info["moto_url"]
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["TOKENBROKER_PROVIDERS_FILE"] is None  # --no-sandboxes and no --providers
    assert requests.get(url, timeout=5).status_code == 403
    assert requests.get(f"{stack.api_url}/public", timeout=5).status_code == 200


def test_resources_are_created_from_the_template(stack: StackProcess) -> None:
    dynamodb = aws(stack, "dynamodb")
    table = dynamodb.describe_table(TableName="tokenbroker-local-Table")["Table"]
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == ["due"]
    ttl = dynamodb.describe_time_to_live(TableName="tokenbroker-local-Table")
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "ttl"
    sqs = aws(stack, "sqs")
    queue_url = sqs.get_queue_url(QueueName="tokenbroker-local-RefreshQueue")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":tokenbroker-local-RefreshDLQ")
    assert int(redrive["maxReceiveCount"]) == 2
    assert attributes["VisibilityTimeout"] == "1"
    buses = aws(stack, "events").list_event_buses()["EventBuses"]
    assert "tokenbroker-local" in [bus["Name"] for bus in buses]


def worker_log(site: Path) -> list[str]:
    path = site / "worker.log"
    return path.read_text().split() if path.exists() else []


def test_the_schedule_feeds_the_queue_and_the_poller_feeds_the_worker(stack: StackProcess, site: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len([b for b in worker_log(site) if b.startswith("tick-")]) < 2:
        time.sleep(0.2)
    ticks = [body for body in worker_log(site) if body.startswith("tick-")]
    assert len(ticks) >= 2, stack.output()
    # Delivered once each: successful records are deleted, not redelivered.
    time.sleep(2.5)
    ticks = [body for body in worker_log(site) if body.startswith("tick-")]
    assert len(ticks) == len(set(ticks)), ticks


def test_failed_records_are_redelivered_then_dead_lettered(stack: StackProcess, site: Path) -> None:
    sqs = aws(stack, "sqs")
    queue_url = sqs.get_queue_url(QueueName="tokenbroker-local-RefreshQueue")["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName="tokenbroker-local-RefreshDLQ")["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody="poison")
    dead: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not dead:
        answer = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1)
        dead = [m["Body"] for m in answer.get("Messages", [])]
    assert dead == ["poison"], stack.output()
    assert worker_log(site).count("poison") == 2  # maxReceiveCount deliveries, then the DLQ


def test_a_second_stack_on_the_same_port_says_so_and_exits_1(stack: StackProcess) -> None:
    port = stack.api_url.rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "infra.localstack", "--port", port, "--no-sandboxes"],
        cwd=REPO,
        env=stack_environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert f"port {port} is in use; pass --port" in done.stderr


def test_sigterm_stops_everything_within_seconds(site: Path, tmp_path: Path) -> None:
    args = ["--template", str(site / "template.yaml"), "--no-sandboxes", "--sweep-interval", "1"]
    env = stack_environment({"FAKE_WORKER_LOG": str(tmp_path / "worker.log")})
    with running_stack(args, tmp_path, env=env) as running:
        api_port = int(running.api_url.rsplit(":", 1)[1])
        moto_port = int(running.info["moto_url"].rsplit(":", 1)[1])
        started = time.monotonic()
        code = stop(running.process, timeout=10)
        assert code == 0, running.output()
        assert time.monotonic() - started < 5
    # Both ports are free again.
    for port in (api_port, moto_port):
        bind_loopback(port).close()


PROVIDERS = """
providers:
  acme:
    auth_mode: authorization_code
    authorize_url: https://auth.acme.test/authorize
    token_url: https://auth.acme.test/token
    client_id: acme-local-id
    client_secret: acme-local-secret
"""


def test_a_providers_file_extends_the_catalog_and_seeds_app_credentials(site: Path, tmp_path: Path) -> None:
    providers = tmp_path / "providers.yaml"
    providers.write_text(PROVIDERS)
    args = ["--template", str(site / "template.yaml"), "--no-sandboxes", "--providers", str(providers)]
    env = stack_environment({"FAKE_WORKER_LOG": str(tmp_path / "worker.log")})
    with running_stack(args, tmp_path, env=env) as running:
        assert "acme" in running.info["providers"]
        url = f"{running.api_url}/env"
        catalog_file = Path(
            requests.get(url, headers=signed_headers("GET", url), timeout=5).json()["TOKENBROKER_PROVIDERS_FILE"]
        )
        # The handlers' catalog has the entry; its secret lives in Secrets Manager, not in the file.
        assert "auth.acme.test" in catalog_file.read_text()
        assert "acme-local-secret" not in catalog_file.read_text()
        secret = aws(running, "secretsmanager").get_secret_value(SecretId="tokenbroker/local/apps/acme")
        assert json.loads(secret["SecretString"]) == {
            "client_id": "acme-local-id",
            "client_secret": "acme-local-secret",
        }
        assert "acme-local-secret" not in running.output()


def test_an_invalid_providers_file_stops_the_start_with_a_clear_message(site: Path, tmp_path: Path) -> None:
    providers = tmp_path / "providers.yaml"
    providers.write_text("providers:\n  acme:\n    auth_mode: telepathy\n    client_secret: do-not-print-me\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.localstack",
            "--port",
            "0",
            "--no-sandboxes",
            "--providers",
            str(providers),
            "--template",
            str(site / "template.yaml"),
        ],
        cwd=REPO,
        env=stack_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot start the local stack" in done.stderr
    assert "providers" in done.stderr
    assert "do-not-print-me" not in done.stdout + done.stderr
