"""What template.yaml says about functions: their code, HttpApi routes, schedules and SQS sources."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from infra.localstack.template import TemplateError, function_properties, resources_of_type

FUNCTION_TYPE = "AWS::Serverless::Function"
HTTP_API_TYPE = "AWS::Serverless::HttpApi"


class Auth(StrEnum):
    NONE = "NONE"
    IAM = "AWS_IAM"


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    logical_id: str
    code_dir: Path
    handler: str
    timeout: int
    memory_mb: int
    environment: Mapping[str, Any]  # unresolved: intrinsics still in long form


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str  # upper case, or "ANY"
    path: str  # "/tokens/{provider}/{connection_id}"
    function: str  # logical id
    auth: Auth

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    def compile(self) -> re.Pattern[str]:
        """A regex over the decoded path; ``{name}`` is one segment, ``{name+}`` the rest."""
        pattern = ""
        for literal, name, greedy in re.findall(r"([^{]*)(?:\{(\w+)(\+)?\})?", self.path):
            pattern += re.escape(literal)
            if name:
                pattern += f"(?P<{name}>.+)" if greedy else f"(?P<{name}>[^/]+)"
        return re.compile(pattern)

    @property
    def specificity(self) -> tuple[int, int, int]:
        """API Gateway prefers literal segments, then fewer greedy params, then a specific method."""
        segments = self.path.strip("/").split("/")
        literal = sum(1 for s in segments if not s.startswith("{"))
        greedy = sum(1 for s in segments if s.endswith("+}"))
        return (literal, -greedy, 0 if self.method == "ANY" else 1)


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    function: str
    expression: str


@dataclass(frozen=True, slots=True)
class QueueSourceSpec:
    function: str
    queue: Any  # unresolved Queue property (usually {"Fn::GetAtt": [queue, "Arn"]})
    batch_size: int
    batching_window: float
    report_batch_item_failures: bool
    max_concurrency: Any  # unresolved: may be a Ref to a parameter


@dataclass(frozen=True, slots=True)
class Topology:
    functions: dict[str, FunctionSpec]
    routes: list[RouteSpec]
    schedules: list[ScheduleSpec]
    queue_sources: list[QueueSourceSpec]


def read_topology(template: Mapping[str, Any], template_dir: Path) -> Topology:
    functions: dict[str, FunctionSpec] = {}
    routes: list[RouteSpec] = []
    schedules: list[ScheduleSpec] = []
    sources: list[QueueSourceSpec] = []
    default_auth = _default_authorizers(template)
    for logical_id in resources_of_type(template, FUNCTION_TYPE):
        props = function_properties(template, logical_id)
        code_uri, handler = props.get("CodeUri"), props.get("Handler")
        if not isinstance(code_uri, str) or not isinstance(handler, str):
            raise TemplateError(f"{logical_id}: the local stack needs a local CodeUri and a Handler")
        functions[logical_id] = FunctionSpec(
            logical_id=logical_id,
            code_dir=(template_dir / code_uri).resolve(),
            handler=handler,
            timeout=_int(props.get("Timeout"), 3),
            memory_mb=_int(props.get("MemorySize"), 128),
            environment=(props.get("Environment") or {}).get("Variables") or {},
        )
        for event in (props.get("Events") or {}).values():
            kind, event_props = event.get("Type"), event.get("Properties") or {}
            if kind == "HttpApi":
                routes.append(_route(logical_id, event_props, default_auth))
            elif kind in ("Schedule", "ScheduleV2"):
                schedules.append(ScheduleSpec(logical_id, str(event_props.get("ScheduleExpression", ""))))
            elif kind == "SQS":
                sources.append(_queue_source(logical_id, event_props))
    routes.sort(key=lambda r: r.specificity, reverse=True)
    return Topology(functions=functions, routes=routes, schedules=schedules, queue_sources=sources)


def _int(value: object, default: int) -> int:
    """A plain number from the template, or ``default`` when it is absent or an intrinsic."""
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else default


def _default_authorizers(template: Mapping[str, Any]) -> dict[str | None, Auth]:
    """HttpApi logical id -> its DefaultAuthorizer (``None`` = the implicit API)."""
    result: dict[str | None, Auth] = {}
    implicit = ((template.get("Globals") or {}).get("HttpApi") or {}).get("Auth") or {}
    result[None] = _auth(implicit.get("DefaultAuthorizer"))
    for logical_id, api in resources_of_type(template, HTTP_API_TYPE).items():
        auth = (api.get("Properties") or {}).get("Auth") or {}
        result[logical_id] = _auth(auth.get("DefaultAuthorizer", implicit.get("DefaultAuthorizer")))
    return result


def _auth(name: object) -> Auth:
    if name is None or name == "NONE":
        return Auth.NONE
    if name == "AWS_IAM":
        return Auth.IAM
    raise TemplateError(f"authorizer {name!r}: the local stack only knows AWS_IAM and NONE")


def _route(function: str, props: Mapping[str, Any], defaults: Mapping[str | None, Auth]) -> RouteSpec:
    api = props.get("ApiId")
    api_id = api.get("Ref") if isinstance(api, dict) else None
    if api_id not in defaults:
        raise TemplateError(f"{function}: HttpApi event refers to an unknown API {api!r}")
    authorizer = (props.get("Auth") or {}).get("Authorizer")
    path, method = props.get("Path"), props.get("Method")
    if not isinstance(path, str) or not isinstance(method, str):
        raise TemplateError(f"{function}: HttpApi events need Path and Method")
    return RouteSpec(
        method="ANY" if method.lower() in ("any", "x-amazon-apigateway-any-method") else method.upper(),
        path=path,
        function=function,
        auth=defaults[api_id] if authorizer is None else _auth(authorizer),
    )


def _queue_source(function: str, props: Mapping[str, Any]) -> QueueSourceSpec:
    scaling = props.get("ScalingConfig") or {}
    return QueueSourceSpec(
        function=function,
        queue=props.get("Queue"),
        batch_size=_int(props.get("BatchSize"), 10),
        batching_window=float(props.get("MaximumBatchingWindowInSeconds", 0)),
        report_batch_item_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
        max_concurrency=scaling.get("MaximumConcurrency"),
    )
