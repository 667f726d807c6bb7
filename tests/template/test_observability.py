"""Alarms and the dashboard watch metrics the code really emits, with the dimensions it emits.

CloudWatch matches a metric by namespace, name and the exact set of dimensions. A typo, a missing
dimension or a namespace mismatch gives an alarm that never fires, silently. So:
- the metric names and dimension sets are read from the code (every ``add_metric``, ``emit`` and
  ``_emit`` call with a literal name in shared/tokenbroker and functions/),
- what Powertools actually prints (EMF) is captured in a process with the template's environment,
- every Metrics Insights query and metric line of the alarms and dashboard is checked against both.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from functools import cache
from typing import Any

from tokenbroker.errors import (
    ProviderErrorKind,
)
from tokenbroker.refresh import RefreshOutcome

from tests.template.sam import ROOT, load, resources_of, sub_variables, substitute, transformed

CODE_ROOTS = (ROOT / "shared" / "tokenbroker", ROOT / "functions")
SERVICE_DIMENSION = "service"
QUERY = re.compile(
    r"SELECT (?P<function>SUM|AVG|MAX|MIN|COUNT)\((?P<metric>\w+)\) "
    r'FROM SCHEMA\("\$\{MetricsNamespace\}", (?P<dimensions>[\w, ]+)\)'
    r"(?: WHERE (?P<where>.*?))?(?: GROUP BY (?P<group>[\w, ]+))?$"
)
CONDITION = re.compile(r"(\w+) = '([^']*)'")


# --- what the code emits -------------------------------------------------------------------------


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _dict_keys(node: ast.expr) -> tuple[set[str], bool]:
    """Literal keys of a dict display, and whether it spreads ``**other`` (call-site keywords)."""
    if not isinstance(node, ast.Dict):
        return set(), False
    keys = {key.value for key in node.keys if isinstance(key, ast.Constant) and isinstance(key.value, str)}
    return keys, any(key is None for key in node.keys)


def _emit_helpers(tree: ast.AST) -> dict[str, tuple[set[str], bool]]:
    """``def _emit(self, name, value, provider, **dims): self._metrics.emit(name, v, unit, {...})``."""
    helpers = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("_emit"):
            for call in ast.walk(node):
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
                    continue
                if call.func.attr == "emit" and len(call.args) >= 4:
                    helpers[node.name] = _dict_keys(call.args[3])
    return helpers


def _calls(tree: ast.AST) -> Iterator[tuple[str, ast.Call]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            yield name, node


@cache
def emitted_metrics() -> dict[str, set[frozenset[str]]]:
    """Metric name -> the dimension sets it is emitted with (``service`` included)."""
    found: dict[str, set[frozenset[str]]] = {}
    for root in CODE_ROOTS:
        for file in root.rglob("*.py"):
            tree = ast.parse(file.read_text(encoding="utf-8"))
            helpers = _emit_helpers(tree)
            for name, call in _calls(tree):
                metric: str | None = None
                dimensions: set[str] | None = None
                if name == "add_metric":  # Powertools Metrics: service is its default dimension
                    metric = next((_literal(k.value) for k in call.keywords if k.arg == "name"), None)
                    dimensions = set()
                elif name == "emit" and len(call.args) >= 4:
                    metric, (dimensions, _) = _literal(call.args[0]), _dict_keys(call.args[3])
                elif name in helpers and call.args:
                    keys, spreads = helpers[name]
                    metric = _literal(call.args[0])
                    dimensions = keys | ({k.arg for k in call.keywords if k.arg} if spreads else set())
                if metric is not None and dimensions is not None:
                    found.setdefault(metric, set()).add(frozenset({SERVICE_DIMENSION, *dimensions}))
    return found


def powertools_output(namespace: str, service: str) -> list[dict[str, Any]]:
    """EMF records printed by the library's two metric paths, in a process with the template's env."""
    script = textwrap.dedent(
        """
        from aws_lambda_powertools.metrics import MetricUnit
        from tokenbroker.observability import metrics
        from tokenbroker.refresh import PowertoolsRefreshMetrics

        PowertoolsRefreshMetrics().emit("ConnectionsNeedingReauth", 1, MetricUnit.Count, {"provider": "workly"})
        metrics.add_metric(name="TokensVended", unit=MetricUnit.Count, value=1)
        metrics.flush_metrics()
        """
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT / "shared"),
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_METRICS_NAMESPACE": namespace,
    }
    answer = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return [json.loads(line) for line in answer.stdout.splitlines() if line.startswith('{"_aws"')]


# --- what the template watches -------------------------------------------------------------------


@cache
def template() -> dict[str, Any]:
    return load()


def globals_environment() -> dict[str, Any]:
    variables: dict[str, Any] = template()["Globals"]["Function"]["Environment"]["Variables"]
    return variables


def template_service() -> str:
    return str(globals_environment()["POWERTOOLS_SERVICE_NAME"])


def alarms() -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in resources_of(template(), "AWS::CloudWatch::Alarm").items()}


def alarm_queries() -> dict[str, str]:
    queries = {}
    for name, alarm in alarms().items():
        for metric in alarm.get("Metrics", []):
            if "Expression" in metric:
                queries[name] = " ".join(metric["Expression"]["Fn::Sub"].split())
    return queries


def dashboard() -> dict[str, Any]:
    [resource] = resources_of(template(), "AWS::CloudWatch::Dashboard").values()
    body = resource["Properties"]["DashboardBody"]["Fn::Sub"]
    values = {name: f"<{name}>" for name in sub_variables(body)}
    values["MetricsNamespace"] = "${MetricsNamespace}"  # kept, so queries read like the alarms'
    return dict(json.loads(substitute(body, values)))


def dashboard_queries() -> list[str]:
    return [
        " ".join(entry["expression"].split())
        for widget in dashboard()["widgets"]
        for line in widget["properties"].get("metrics", [])
        for entry in line
        if isinstance(entry, dict) and "expression" in entry
    ]


def check_query(query: str, emitted: dict[str, set[frozenset[str]]]) -> None:
    match = QUERY.fullmatch(query)
    assert match, f"not a query of the expected shape: {query}"
    metric = match["metric"]
    assert metric in emitted, f"{metric} is not emitted by the code"
    dimensions = frozenset(d.strip() for d in match["dimensions"].split(","))
    assert dimensions in emitted[metric], f"{metric} is emitted with {emitted[metric]}, queried with {dimensions}"
    conditions = dict(CONDITION.findall(match["where"] or ""))
    assert conditions.get(SERVICE_DIMENSION) == template_service(), query
    if "outcome" in conditions:
        assert conditions["outcome"] in {str(o) for o in RefreshOutcome}, query
    if "kind" in conditions:
        assert conditions["kind"] in {str(k) for k in ProviderErrorKind}, query
    for group in (match["group"] or "").split(","):
        assert not group.strip() or group.strip() in dimensions, query


# --- tests ---------------------------------------------------------------------------------------


def test_the_code_emits_the_metrics_the_alarms_are_about() -> None:
    emitted = emitted_metrics()
    assert frozenset({"service", "provider", "outcome"}) in emitted["RefreshOutcome"]
    assert frozenset({"service", "provider"}) in emitted["ConnectionsNeedingReauth"]
    assert frozenset({"service", "provider", "kind"}) in emitted["RefreshProblem"]
    assert frozenset({"service"}) in emitted["VendRequests"]


def test_powertools_emits_the_namespace_and_service_dimension_the_template_configures() -> None:
    namespace = str(template()["Parameters"]["MetricsNamespace"]["Default"])
    assert globals_environment()["POWERTOOLS_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
    records = powertools_output(namespace, template_service())

    assert len(records) == 2
    for record in records:
        [directive] = record["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == namespace
        assert all(SERVICE_DIMENSION in dimensions for dimensions in directive["Dimensions"])
        assert record[SERVICE_DIMENSION] == template_service() == "tokenbroker"
    reauth = records[0]["_aws"]["CloudWatchMetrics"][0]
    assert set(reauth["Dimensions"][0]) == {"service", "provider"}
    assert reauth["Metrics"][0]["Name"] == "ConnectionsNeedingReauth"


def test_every_alarm_query_matches_an_emitted_metric_exactly() -> None:
    emitted = emitted_metrics()
    queries = alarm_queries()
    assert set(queries) == {"RefreshFailuresAlarm", "RefreshProblemsAlarm", "NeedsReauthAlarm"}
    for query in queries.values():
        check_query(query, emitted)
    assert "outcome = 'transient_failure'" in queries["RefreshFailuresAlarm"]


def test_every_dashboard_query_and_custom_metric_matches_an_emitted_metric() -> None:
    emitted = emitted_metrics()
    queries = dashboard_queries()
    assert len(queries) >= 5
    for query in queries:
        check_query(query, emitted)
    custom_lines = [
        line
        for widget in dashboard()["widgets"]
        for line in widget["properties"].get("metrics", [])
        if line and line[0] == "${MetricsNamespace}"
    ]
    assert custom_lines
    for line in custom_lines:
        metric, dimensions = line[1], frozenset(line[2:-1:2])
        assert metric in emitted and dimensions in emitted[metric], line
        assert line[3] == template_service()


def test_every_function_has_an_error_alarm_and_every_dead_letter_queue_a_depth_alarm() -> None:
    functions = set(resources_of(template(), "AWS::Serverless::Function"))
    error_alarms = {
        alarm["Dimensions"][0]["Value"]["Ref"]
        for alarm in alarms().values()
        if alarm.get("Namespace") == "AWS/Lambda" and alarm["MetricName"] == "Errors"
    }
    assert error_alarms == functions

    redrive_targets = {
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in resources_of(template(), "AWS::SQS::Queue").values()
        if "RedrivePolicy" in q["Properties"]
    }
    schedule_dlqs = {
        event["Properties"]["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
        for function in resources_of(template(), "AWS::Serverless::Function").values()
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] == "ScheduleV2"
    }
    assert schedule_dlqs, "the schedule has its own dead-letter queue"
    depth_alarms = {
        alarm["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for alarm in alarms().values()
        if alarm.get("MetricName") == "ApproximateNumberOfMessagesVisible"
    }
    assert depth_alarms == redrive_targets | schedule_dlqs


def test_alarms_notify_the_optional_topic_and_ignore_missing_data() -> None:
    for name, alarm in alarms().items():
        for actions in ("AlarmActions", "OKActions"):
            assert alarm[actions] == {
                "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
            }, name
        assert alarm["TreatMissingData"] == "notBreaching", name
        assert alarm["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-"), name


def test_the_dashboard_shows_every_alarm_and_every_log_group() -> None:
    widgets = dashboard()["widgets"]
    [alarm_widget] = [w for w in widgets if w["type"] == "alarm"]
    assert set(alarm_widget["properties"]["alarms"]) == {f"<{name}.Arn>" for name in alarms()}
    [log_widget] = [w for w in widgets if w["type"] == "log"]
    log_groups = {
        function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        for function in resources_of(template(), "AWS::Serverless::Function").values()
    }
    sources = set(re.findall(r"SOURCE '<(\w+)>'", log_widget["properties"]["query"]))
    assert sources == log_groups


def test_the_transformed_template_keeps_the_alarms_and_the_dashboard() -> None:
    cloudformation = transformed()
    assert set(resources_of(cloudformation, "AWS::CloudWatch::Alarm")) == set(alarms())
    assert list(resources_of(cloudformation, "AWS::CloudWatch::Dashboard")) == ["Dashboard"]
