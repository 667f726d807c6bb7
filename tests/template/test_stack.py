"""The stack design.md describes, as CloudFormation will create it (transformed template)."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from typing import Any

from tests.template.sam import ROOT, load, resources_of, transformed

FUNCTION = "AWS::Lambda::Function"


def resource(name: str) -> dict[str, Any]:
    properties: dict[str, Any] = transformed()["Resources"][name]["Properties"]
    return properties


def functions() -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in resources_of(transformed(), FUNCTION).items()}


def test_the_layer_is_built_by_sam_for_python312_on_arm64() -> None:
    layer = load()["Resources"]["SharedLayer"]
    assert layer["Metadata"] == {"BuildMethod": "python3.12", "BuildArchitecture": "arm64"}
    assert layer["Properties"]["ContentUri"] == "shared/"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


def test_four_functions_on_python312_arm64_with_the_layer_tracing_and_their_own_log_group() -> None:
    [layer_version] = resources_of(transformed(), "AWS::Lambda::LayerVersion")
    log_groups = set(resources_of(transformed(), "AWS::Logs::LogGroup"))
    assert set(functions()) == {"CallbackFunction", "VendFunction", "RefreshSweepFunction", "RefreshWorkerFunction"}
    used_log_groups = set()
    for name, function in functions().items():
        assert function["Runtime"] == "python3.12", name
        assert function["Architectures"] == ["arm64"], name
        assert function["Layers"] == [{"Ref": layer_version}], name
        # Tracing follows the Tracing parameter (Active by default), and so does the library's switch.
        assert function["TracingConfig"] == {"Mode": {"Ref": "Tracing"}}, name
        assert function["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == {
            "Fn::If": ["TracingActive", "false", "true"]
        }, name
        log_group = function["LoggingConfig"]["LogGroup"]["Ref"]
        assert log_group in log_groups, name
        used_log_groups.add(log_group)
        env = function["Environment"]["Variables"]
        assert env["POWERTOOLS_SERVICE_NAME"] == "tokenbroker"
        # Responses carry tokens: never recorded in a trace.
        assert env["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"
    assert len(used_log_groups) == 4, "one log group per function"


def test_every_log_group_keeps_logs_for_the_configured_retention_and_is_used() -> None:
    groups = resources_of(transformed(), "AWS::Logs::LogGroup")
    assert groups
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
    text = json.dumps({k: v for k, v in transformed()["Resources"].items() if k not in groups})
    for name in groups:
        assert f'"{name}"' in text, f"{name} is not used"


def test_api_access_logs_record_no_query_string_or_headers() -> None:
    """The callback's query string holds the authorization code; headers hold signatures."""
    [stage] = resources_of(transformed(), "AWS::ApiGatewayV2::Stage").values()
    settings = stage["Properties"]["AccessLogSettings"]
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogs", "Arn"]}
    fields = json.loads(settings["Format"])
    assert "requestId" in fields and "status" in fields
    for value in fields.values():
        assert not any(word in value.lower() for word in ("query", "header", "path", "authorizer.", "body")), value


def test_the_table_has_pitr_ttl_on_demand_and_encryption() -> None:
    table = resource("Table")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert transformed()["Resources"]["Table"]["DeletionPolicy"] == "Retain"


def test_the_worker_reads_its_queue_with_partial_failures_bounded_concurrency_and_a_dlq() -> None:
    [mapping] = resources_of(transformed(), "AWS::Lambda::EventSourceMapping").values()
    properties = mapping["Properties"]
    assert properties["FunctionName"] == {"Ref": "RefreshWorkerFunction"}
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "WorkerMaxConcurrency"}}
    queue = resource("RefreshQueue")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["RefreshDLQ", "Arn"]}
    # Lambda's advice: visibility at least six times the function timeout.
    assert queue["VisibilityTimeout"] >= 6 * functions()["RefreshWorkerFunction"]["Timeout"]
    for name in resources_of(transformed(), "AWS::SQS::Queue"):
        assert resource(name)["SqsManagedSseEnabled"] is True, name


def test_the_worker_finishes_before_its_lease_expires() -> None:
    worker = functions()["RefreshWorkerFunction"]
    assert worker["Timeout"] < float(worker["Environment"]["Variables"]["LEASE_SECONDS"])


def test_the_sweep_runs_on_a_parameterised_schedule_with_retries_and_its_own_dlq() -> None:
    [schedule] = resources_of(transformed(), "AWS::Scheduler::Schedule").values()
    properties = schedule["Properties"]
    assert properties["ScheduleExpression"] == {"Ref": "RefreshSchedule"}
    assert properties["Target"]["Arn"] == {"Fn::GetAtt": ["RefreshSweepFunction", "Arn"]}
    assert properties["Target"]["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["SweepDLQ", "Arn"]}}
    assert properties["Target"]["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    # Schedule names are unique per account and region: two stages must not collide.
    assert "${Stage}" in properties["Name"]["Fn::Sub"]
    sweep = functions()["RefreshSweepFunction"]
    assert sweep["Environment"]["Variables"]["REFRESH_QUEUE_URL"] == {"Ref": "RefreshQueue"}


def test_a_custom_event_bus_per_stage() -> None:
    [bus] = resources_of(transformed(), "AWS::Events::EventBus").values()
    assert "${Stage}" in bus["Properties"]["Name"]["Fn::Sub"]
    for name, function in functions().items():
        assert function["Environment"]["Variables"]["EVENT_BUS_NAME"] == {"Ref": "EventBus"}, name


def test_parameters_and_outputs_of_the_design() -> None:
    template = load()
    assert {"Stage", "AllowedReturnUrls", "RefreshSchedule", "KmsKeyId", "LogRetentionDays"} <= set(
        template["Parameters"]
    )
    assert {"ApiUrl", "CallbackUrlTemplate", "TableName", "EventBusName"} <= set(template["Outputs"])
    for name, parameter in template["Parameters"].items():
        if name in REQUIRED_PARAMETERS:
            continue
        assert "Default" in parameter, f"{name}: a guided deploy should be able to accept every default"


# Parameters a deploy must answer: no default could be right for every stack.
REQUIRED_PARAMETERS = {"AppName"}


def test_the_pages_branding_parameters() -> None:
    parameters = load()["Parameters"]
    app_name = parameters["AppName"]
    assert "Default" not in app_name, "the pages must name the real application, not a placeholder"
    assert (app_name["MinLength"], app_name["MaxLength"]) == (1, 64)
    assert parameters["AppLogoUrl"]["Default"] == "" and parameters["AppLogoUrl"]["MaxLength"] == 2048
    assert parameters["AppAccentColor"]["Default"] == ""
    # CloudFormation matches AllowedPattern against the whole value; Python's fullmatch is close enough here.
    name = re.compile(app_name["AllowedPattern"])
    assert all(name.fullmatch(ok) for ok in ("Acme CRM", "x", '"Acme" & Co', "Ёлка"))
    assert not any(name.fullmatch(bad) for bad in ("", " ", "   ", "Acme\nCRM", "a\tb"))
    logo = re.compile(parameters["AppLogoUrl"]["AllowedPattern"])
    assert all(logo.fullmatch(ok) for ok in ("", "https://cdn.acme.example/logo.png", "https://c.example:8443/a?v=1"))
    for bad in (
        "http://cdn.acme.example/logo.png",
        "https://user:pw@cdn.acme.example/logo.png",
        "https://cdn.acme.example/lo go.png",
        'https://cdn.acme.example/lo"go.png',
        "javascript:alert(1)",
    ):
        assert not logo.fullmatch(bad), bad
    colour = re.compile(parameters["AppAccentColor"]["AllowedPattern"])
    assert colour.fullmatch("") and colour.fullmatch("#1A5fb4")
    assert not any(colour.fullmatch(bad) for bad in ("#fff", "red", "1a5fb4", "#1a5fb4 "))


def test_the_branding_reaches_only_the_function_that_renders_pages() -> None:
    for name, function in functions().items():
        variables = function["Environment"]["Variables"]
        if name == "CallbackFunction":
            assert variables["APP_NAME"] == {"Ref": "AppName"}
            assert variables["APP_LOGO_URL"] == {"Ref": "AppLogoUrl"}
            assert variables["APP_ACCENT_COLOR"] == {"Ref": "AppAccentColor"}
        else:
            assert not {"APP_NAME", "APP_LOGO_URL", "APP_ACCENT_COLOR"} & set(variables), name


def test_every_deploy_config_names_the_application() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    envs = [env for env, commands in config.items() if isinstance(commands, dict) and "deploy" in commands]
    assert envs
    for env in envs:
        overrides = shlex.split(config[env]["deploy"]["parameters"]["parameter_overrides"])
        values = dict(item.split("=", 1) for item in overrides)
        assert 1 <= len(values.get("AppName", "")) <= 64, env


def test_tracing_is_on_by_default_and_can_be_traded_for_cold_start() -> None:
    parameter = load()["Parameters"]["Tracing"]
    assert parameter["Default"] == "Active"
    assert set(parameter["AllowedValues"]) == {"Active", "PassThrough"}
    assert load()["Conditions"]["TracingActive"] == {"Fn::Equals": [{"Ref": "Tracing"}, "Active"]}
