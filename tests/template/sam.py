"""template.yaml as CloudFormation, translated offline by SAM's own translator (samtranslator).

What CloudFormation receives after ``sam deploy`` is the transformed template: SAM adds roles,
permissions, the OpenAPI body of the HttpApi, schedules and event source mappings. Assertions on
that output see what AWS will enforce, not what the SAM shorthand suggests.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import boto3
from samtranslator.metrics.metrics import Metrics  # type: ignore[import-untyped]
from samtranslator.parser.parser import Parser  # type: ignore[import-untyped]
from samtranslator.translator.translator import Translator  # type: ignore[import-untyped]
from samtranslator.yaml_helper import yaml_parse  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REGION = "us-east-1"


def load(path: Path = TEMPLATE) -> dict[str, Any]:
    document: dict[str, Any] = yaml_parse(path.read_text(encoding="utf-8"))
    return document


def transform(template: Mapping[str, Any], parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The CloudFormation template SAM deploys (code locations stand in for `sam package`'s S3 URIs)."""
    document = copy.deepcopy(dict(template))
    for logical_id, resource in document["Resources"].items():
        properties = resource.get("Properties") or {}
        for uri in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(uri), str):
                properties[uri] = f"s3://tokenbroker-artifacts/{logical_id}.zip"
    # A fixed region and no credentials: the translator only needs them to name partitions.
    session = boto3.Session(region_name=REGION, aws_access_key_id="unused", aws_secret_access_key="unused")
    metrics = Metrics()  # SAM's own usage metrics: published to its no-op publisher below
    translator = Translator(None, Parser(), boto_session=session, metrics=metrics)
    # No managed policy names to resolve: every function has its own role (a name would fail here).
    translated: dict[str, Any] = translator.translate(
        document, parameter_values=dict(parameters or {}), get_managed_policy_map=dict
    )
    metrics.publish()
    plain: dict[str, Any] = json.loads(json.dumps(translated))  # plain dicts and lists, no SAM wrapper types
    return plain


@cache
def transformed() -> dict[str, Any]:
    return transform(load())


def resources_of(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r.get("Type") == resource_type}


def statements(policy_document: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every statement, including both branches of an ``Fn::If`` (AWS::NoValue dropped)."""
    yield from _flatten(policy_document.get("Statement", []))


def _flatten(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    elif isinstance(value, dict) and "Fn::If" in value:
        _, when_true, when_false = value["Fn::If"]
        yield from _flatten(when_true)
        yield from _flatten(when_false)
    elif isinstance(value, dict) and value != {"Ref": "AWS::NoValue"}:
        yield value


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


_SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")


def sub_variables(text: str) -> list[str]:
    """``${Name}`` and ``${Name.Attribute}`` references of an ``Fn::Sub`` string (``${!x}`` is literal)."""
    return _SUB_VARIABLE.findall(text)


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Evaluate an ``Fn::Sub`` string with ``values`` (a missing name raises KeyError)."""
    return _SUB_VARIABLE.sub(lambda match: values[match.group(1)], text).replace("${!", "${")
