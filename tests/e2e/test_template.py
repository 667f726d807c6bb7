"""Reading template.yaml: short-form tags, intrinsics, Globals, and the repo's own routes."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.localstack.__main__ import parse_args
from infra.localstack.stack import LocalStack
from infra.localstack.template import DEFAULT_TEMPLATE, Resolver, TemplateError, function_properties, load_template
from infra.localstack.topology import Auth, read_topology

TEMPLATE = """
Parameters:
  Stage: {Type: String, Default: dev}
  Urls: {Type: CommaDelimitedList, Default: "https://a.example/x, https://b.example"}
  Key: {Type: String, Default: ""}
Conditions:
  HasKey: !Not [!Equals [!Ref Key, ""]]
Globals:
  Function:
    Timeout: 30
    Layers: [!Ref SharedLayer]
    Environment:
      Variables: {STAGE: !Ref Stage, SHARED: "yes"}
Resources:
  Queue: {Type: AWS::SQS::Queue}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Timeout: 60
      Layers: [extra]
      Environment:
        Variables: {OWN: !GetAtt Queue.Arn}
"""


@pytest.fixture
def template(tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    return load_template(path)


def test_short_form_tags_become_long_form_intrinsics(template: dict[str, object]) -> None:
    fn = template["Resources"]["Fn"]  # type: ignore[index]
    assert fn["Properties"]["Environment"]["Variables"]["OWN"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert template["Conditions"]["HasKey"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "Key"}, ""]}]}  # type: ignore[index]


def test_globals_merge_like_sam(template: dict[str, object]) -> None:
    props = function_properties(template, "Fn")
    assert props["Timeout"] == 60
    assert props["Layers"] == [{"Ref": "SharedLayer"}, "extra"]
    assert set(props["Environment"]["Variables"]) == {"STAGE", "SHARED", "OWN"}


def test_intrinsics_resolve_against_parameters_and_created_resources(template: dict[str, object]) -> None:
    resolver = Resolver(template, parameters={"Stage": "local"}, region="eu-west-1", account_id="111122223333")
    resolver.refs["Queue"] = "https://queue.url"
    resolver.attributes[("Queue", "Arn")] = "arn:aws:sqs:eu-west-1:111122223333:q"
    assert resolver.resolve({"Ref": "Stage"}) == "local"
    assert resolver.resolve({"Ref": "Urls"}) == ["https://a.example/x", "https://b.example"]
    assert resolver.resolve({"Fn::Join": [",", {"Ref": "Urls"}]}) == "https://a.example/x,https://b.example"
    assert resolver.resolve({"Fn::Sub": "tb-${Stage}-${AWS::Region}-${Queue.Arn}-${!Literal}"}) == (
        "tb-local-eu-west-1-arn:aws:sqs:eu-west-1:111122223333:q-${Literal}"
    )
    assert resolver.resolve({"Fn::Sub": ["${A}/${Stage}", {"A": {"Ref": "Queue"}}]}) == "https://queue.url/local"
    assert resolver.resolve({"Fn::Select": [1, {"Fn::Split": [",", "a,b,c"]}]}) == "b"
    # !If with AWS::NoValue drops the item, as CloudFormation does.
    statement = [{"Sid": "A"}, {"Fn::If": ["HasKey", {"Sid": "Kms"}, {"Ref": "AWS::NoValue"}]}]
    assert resolver.resolve(statement) == [{"Sid": "A"}]
    with_key = Resolver(template, parameters={"Key": "k-1"})
    assert with_key.resolve(statement) == [{"Sid": "A"}, {"Sid": "Kms"}]


def test_what_cannot_be_evaluated_fails_loudly(template: dict[str, object]) -> None:
    resolver = Resolver(template)
    with pytest.raises(TemplateError, match="Ref Nowhere"):
        resolver.resolve({"Ref": "Nowhere"})
    with pytest.raises(TemplateError, match=r"GetAtt Queue\.Arn"):
        resolver.resolve({"Fn::GetAtt": ["Queue", "Arn"]})
    with pytest.raises(TemplateError, match="Fn::ImportValue"):
        resolver.resolve({"Fn::ImportValue": "x"})


def test_the_repo_template_serves_the_external_contract() -> None:
    """design.md's route table, with its auth, is what the local gateway (and API Gateway) serve."""
    topology = read_topology(load_template(DEFAULT_TEMPLATE), DEFAULT_TEMPLATE.parent)
    routes = {route.route_key: route for route in topology.routes}
    public = {"GET /connect/{session}", "POST /connect/{session}", "GET /callback/{provider}"}
    iam = {
        "POST /connect-sessions",
        "POST /connect-sessions/{session_id}/confirm",
        "GET /tokens/{provider}/{connection_id}",
        "POST /tokens/{provider}/{connection_id}/refresh",
        "GET /connections",
        "GET /connections/{provider}/{connection_id}",
        "DELETE /connections/{provider}/{connection_id}",
    }
    assert set(routes) == public | iam
    assert {key for key, route in routes.items() if route.auth is Auth.NONE} == public
    for route in routes.values():
        function = topology.functions[route.function]
        assert (function.code_dir / "app.py").is_file()
    assert [s.function for s in topology.schedules] == ["RefreshSweepFunction"]
    assert [q.function for q in topology.queue_sources] == ["RefreshWorkerFunction"]
    assert topology.functions["RefreshWorkerFunction"].handler == "app.worker_handler"


def test_the_local_stack_names_the_application_the_template_requires() -> None:
    """AppName has no Default: the local stack supplies it (--app-name), and only the callback gets it."""
    template = load_template(DEFAULT_TEMPLATE)
    assert "Default" not in template["Parameters"]["AppName"]
    with pytest.raises(TemplateError, match="AppName has no value"):
        Resolver(template).resolve({"Ref": "AppName"})
    options = parse_args(["--app-name", "  Acme CRM "])
    assert options.app_name == "Acme CRM"
    assert parse_args([]).app_name == "Example App"
    stack = LocalStack(options, environ={})
    resolver = Resolver(template, parameters=stack._parameters(template, "http://127.0.0.1:3000"))
    resolver.refs.update({logical_id: f"local-{logical_id}" for logical_id in template["Resources"]})
    topology = read_topology(template, DEFAULT_TEMPLATE.parent)
    callback = resolver.resolve(dict(topology.functions["CallbackFunction"].environment))
    assert (callback["APP_NAME"], callback["APP_LOGO_URL"], callback["APP_ACCENT_COLOR"]) == ("Acme CRM", "", "")
    for name, function in topology.functions.items():
        if name != "CallbackFunction":
            assert "APP_NAME" not in resolver.resolve(dict(function.environment)), name


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "Acme\tCRM"])
def test_the_local_stack_refuses_an_app_name_a_deploy_would_refuse(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--app-name", name])
    assert "--app-name" in capsys.readouterr().err
