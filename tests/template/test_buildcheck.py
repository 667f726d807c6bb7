"""The build check's own machinery, on small fake builds (the real run is `make templates`).

These prove the import check can fail: a dependency present in this venv but missing from the
layer is not importable, a socket opened during initialisation is caught, and two layer builds
with different contents are refused as stand-ins for each other.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.template import buildcheck
from tests.template.buildcheck import BuildCheckError, BuiltFunction
from tests.template.sam import load

APP = """\
import {imports}

def services():
    {init}
    return object()

def lambda_handler(event, context):
    return {{"statusCode": 404}}
"""


def fake_function(tmp_path: Path, *, imports: str = "json", init: str = "pass") -> BuiltFunction:
    code = tmp_path / "function"
    code.mkdir()
    (code / "app.py").write_text(APP.format(imports=imports, init=init))
    return BuiltFunction("FakeFunction", code, "app.lambda_handler", {"TABLE_NAME": "t"}, trigger=None)


def fake_layer(tmp_path: Path, modules: dict[str, str]) -> Path:
    layer = tmp_path / "layer" / "python"
    layer.mkdir(parents=True)
    for name, source in modules.items():
        (layer / f"{name}.py").write_text(source)
    return layer


def test_a_function_whose_imports_the_layer_provides_passes(tmp_path: Path) -> None:
    function = fake_function(tmp_path, imports="tokenbroker_fake_dependency")
    layer = fake_layer(tmp_path, {"tokenbroker_fake_dependency": "VALUE = 1\n"})

    report = buildcheck.check_function(function, layer, tmp_path / "scratch")

    assert report.ok, report.describe()
    assert report.details["stage"] == "done"
    assert report.details["initialised"] == "object"


def test_a_dependency_of_this_venv_missing_from_the_layer_fails_the_import(tmp_path: Path) -> None:
    """PyYAML is installed in the venv that runs the check; the isolated import must not see it."""
    function = fake_function(tmp_path, imports="yaml")
    layer = fake_layer(tmp_path, {})

    report = buildcheck.check_function(function, layer, tmp_path / "scratch")

    assert not report.ok
    assert report.details["stage"] == "import"
    assert "No module named 'yaml'" in report.details["error"]
    assert all("site-packages" not in entry for entry in report.details["sys_path"])


def test_a_dependency_missing_at_initialisation_is_caught_too(tmp_path: Path) -> None:
    function = fake_function(tmp_path, init="import requests")
    report = buildcheck.check_function(function, fake_layer(tmp_path, {}), tmp_path / "scratch")

    assert not report.ok
    assert report.details["stage"] == "initialise"
    assert "requests" in report.details["error"]


def test_network_access_during_initialisation_is_refused_and_reported(tmp_path: Path) -> None:
    function = fake_function(tmp_path, imports="socket", init="socket.create_connection(('127.0.0.1', 9), timeout=1)")
    report = buildcheck.check_function(function, fake_layer(tmp_path, {}), tmp_path / "scratch")

    assert not report.ok
    assert report.details["network_attempts"] == ["('127.0.0.1', 9)"]


def test_a_module_without_an_init_hook_fails(tmp_path: Path) -> None:
    code = tmp_path / "function"
    code.mkdir()
    (code / "app.py").write_text("def lambda_handler(event, context):\n    return {}\n")
    function = BuiltFunction("Bare", code, "app.lambda_handler", {}, trigger=None)

    report = buildcheck.check_function(function, fake_layer(tmp_path, {}), tmp_path / "scratch")

    assert not report.ok
    assert "init hooks" in report.details["error"]


def make_dist(layer: Path, name: str) -> None:
    (layer / f"{name}.dist-info").mkdir(parents=True)


def test_layers_with_different_distributions_are_not_stand_ins(tmp_path: Path) -> None:
    deployed, host = tmp_path / "arm64", tmp_path / "x86_64"
    for layer in (deployed, host):
        (layer / "tokenbroker").mkdir(parents=True)
        (layer / "tokenbroker" / "__init__.py").write_text("")
        make_dist(layer, "PyYAML-6.0.3")
    make_dist(deployed, "pydantic_core-2.50.4")
    make_dist(host, "pydantic_core-2.50.5")

    with pytest.raises(BuildCheckError, match=re.escape("pydantic_core-2.50.4")):
        buildcheck.same_layer_contents(deployed, host)

    make_dist(host, "pydantic_core-2.50.4")
    (host / "pydantic_core-2.50.5.dist-info").rmdir()
    buildcheck.same_layer_contents(deployed, host)

    (host / "tokenbroker" / "extra.py").write_text("")
    with pytest.raises(BuildCheckError, match=re.escape("extra.py")):
        buildcheck.same_layer_contents(deployed, host)


def test_the_host_layer_is_the_templates_own_layer_for_another_architecture(tmp_path: Path) -> None:
    template = load()
    host = buildcheck.host_layer_template(template, "x86_64", root=tmp_path)

    layer = host["Resources"]["SharedLayer"]
    original = template["Resources"]["SharedLayer"]
    assert layer["Metadata"] == {**original["Metadata"], "BuildArchitecture": "x86_64"}
    assert layer["Properties"]["ContentUri"] == str((tmp_path / original["Properties"]["ContentUri"]).resolve())
    assert layer["Properties"]["CompatibleRuntimes"] == original["Properties"]["CompatibleRuntimes"]
    assert json.dumps(host).count("Fn::") == 0, "the one-resource template must not refer to parameters"


def test_built_functions_get_the_templates_environment_and_trigger(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(
        "Transform: AWS::Serverless-2016-10-31\n"
        "Parameters:\n  Stage: {Type: String, Default: dev}\n"
        "Globals:\n  Function:\n    Environment:\n      Variables: {STAGE: !Ref Stage, TABLE_NAME: !Ref Table}\n"
        "Resources:\n"
        "  Table: {Type: AWS::DynamoDB::Table}\n"
        "  Queue: {Type: AWS::SQS::Queue}\n"
        "  Worker:\n    Type: AWS::Serverless::Function\n    Properties:\n"
        "      CodeUri: Worker\n      Handler: app.worker_handler\n"
        "      Environment: {Variables: {QUEUE_URL: !Ref Queue}}\n"
        "      Events: {Due: {Type: SQS, Properties: {Queue: !GetAtt Queue.Arn}}}\n"
    )
    [worker] = buildcheck.built_functions(tmp_path)

    assert worker.code_dir == tmp_path / "Worker"
    assert worker.handler == "app.worker_handler"
    assert worker.trigger == "sqs"
    assert worker.environment["STAGE"] == "dev"
    assert worker.environment["TABLE_NAME"] == "buildcheck-Table"
    assert worker.environment["QUEUE_URL"].startswith("http://127.0.0.1:9/")


def test_the_input_digest_follows_sources_and_ignores_caches(tmp_path: Path) -> None:
    (tmp_path / "shared" / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "template.yaml").write_text("Resources: {}\n")
    source = tmp_path / "shared" / "pkg" / "mod.py"
    source.write_text("A = 1\n")
    first = buildcheck.inputs_digest(tmp_path, "sam 1")

    (tmp_path / "shared" / "pkg" / "__pycache__" / "mod.cpython-312.pyc").write_bytes(b"\0")
    assert buildcheck.inputs_digest(tmp_path, "sam 1") == first
    assert buildcheck.inputs_digest(tmp_path, "sam 2") != first
    source.write_text("A = 2\n")
    assert buildcheck.inputs_digest(tmp_path, "sam 1") != first
