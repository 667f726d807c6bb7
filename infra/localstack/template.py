"""Read template.yaml: CloudFormation short-form tags, Globals, and intrinsic functions.

The local stack builds everything from the template (tables, queues, routes, handler environment)
so that local and deployed stacks cannot drift apart. Only the intrinsics the template actually
uses are evaluated; anything else fails loudly instead of producing a half-right value.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"


class TemplateError(Exception):
    """The template cannot be read or uses something the local stack cannot evaluate."""


class CfnLoader(yaml.SafeLoader):
    """A SafeLoader that turns ``!Ref X`` into ``{"Ref": "X"}`` and ``!Sub s`` into ``{"Fn::Sub": s}``."""


def _construct_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - yaml has no other node kinds
        raise TemplateError(f"unsupported node for !{tag_suffix}")
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        # The short form is "Resource.Attribute"; the attribute itself may contain dots.
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: str | Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """Parse a SAM/CloudFormation template into plain dicts (intrinsics in long form)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise TemplateError(f"cannot read {path}: {error.strerror}") from None
    document: object = yaml.load(text, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"{path} has no Resources")
    return {str(key): value for key, value in document.items()}


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    """Logical id -> resource, for every resource of ``resource_type``, in template order."""
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if isinstance(resource, dict) and resource.get("Type") == resource_type
    }


def function_properties(template: Mapping[str, Any], logical_id: str) -> dict[str, Any]:
    """A function's Properties with ``Globals.Function`` applied the way SAM does it.

    Scalars in the function win over Globals; maps (Environment.Variables) are merged;
    lists (Layers) are concatenated, Globals first.
    """
    globals_ = copy.deepcopy((template.get("Globals") or {}).get("Function") or {})
    own = template["Resources"][logical_id].get("Properties") or {}
    merged = _merge_globals(globals_, copy.deepcopy(own))
    if not isinstance(merged, dict):
        raise TemplateError(f"{logical_id} has no Properties mapping")
    return merged


def _merge_globals(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict) and not _is_intrinsic(override):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge_globals(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list):
        return [*base, *override]
    return override


def _is_intrinsic(value: Mapping[str, Any]) -> bool:
    return len(value) == 1 and next(iter(value)).startswith(("Ref", "Fn::", "Condition"))


class _NoValue:
    """``AWS::NoValue``: the enclosing list item or map key disappears."""


NO_VALUE = _NoValue()


@dataclass
class Resolver:
    """Evaluates intrinsic functions against parameter values and the resources created so far.

    ``refs`` maps a logical id to what ``Ref`` returns (queue URL, table name, bus name);
    ``attributes`` maps ``(logical_id, attribute)`` to what ``Fn::GetAtt`` returns.
    """

    template: Mapping[str, Any]
    parameters: Mapping[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    account_id: str = "123456789012"
    stack_name: str = "tokenbroker-local"
    refs: dict[str, Any] = field(default_factory=dict)
    attributes: dict[tuple[str, str], Any] = field(default_factory=dict)

    def parameter(self, name: str) -> Any:
        declared = (self.template.get("Parameters") or {}).get(name)
        if declared is None:
            raise TemplateError(f"unknown parameter {name}")
        raw = self.parameters.get(name, declared.get("Default"))
        if raw is None:
            raise TemplateError(f"parameter {name} has no value and no Default")
        if str(declared.get("Type", "String")).startswith(("CommaDelimitedList", "List<")):
            if isinstance(raw, list):
                return [str(item) for item in raw]
            return [item.strip() for item in str(raw).split(",") if item.strip()]
        return str(raw)

    def pseudo(self, name: str) -> Any:
        values: dict[str, Any] = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/local",
            "AWS::NoValue": NO_VALUE,
        }
        if name not in values:
            raise TemplateError(f"unknown pseudo parameter {name}")
        return values[name]

    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in (self.template.get("Parameters") or {}):
            return self.parameter(name)
        if name in self.refs:
            return self.refs[name]
        raise TemplateError(f"Ref {name}: not a parameter or a resource the local stack creates")

    def get_att(self, resource: str, attribute: str) -> Any:
        try:
            return self.attributes[(resource, attribute)]
        except KeyError:
            raise TemplateError(f"GetAtt {resource}.{attribute}: not known locally") from None

    def condition(self, name: str) -> bool:
        conditions = self.template.get("Conditions") or {}
        if name not in conditions:
            raise TemplateError(f"unknown condition {name}")
        return bool(self.resolve(conditions[name]))

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic evaluated; ``AWS::NoValue`` items removed."""
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if _is_intrinsic(value):
            ((name, argument),) = value.items()
            return self._intrinsic(name, argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def _intrinsic(self, name: str, argument: Any) -> Any:
        handlers: dict[str, Callable[[Any], Any]] = {
            "Ref": lambda a: self.ref(str(self.resolve(a))),
            "Condition": lambda a: self.condition(str(a)),
            "Fn::GetAtt": self._fn_get_att,
            "Fn::Sub": self._fn_sub,
            "Fn::Join": self._fn_join,
            "Fn::If": self._fn_if,
            "Fn::Equals": lambda a: self.resolve(a[0]) == self.resolve(a[1]),
            "Fn::Not": lambda a: not self.resolve(a[0]),
            "Fn::And": lambda a: all(self.resolve(item) for item in a),
            "Fn::Or": lambda a: any(self.resolve(item) for item in a),
            "Fn::Select": lambda a: self.resolve(a[1])[int(self.resolve(a[0]))],
            "Fn::Split": lambda a: str(self.resolve(a[1])).split(str(a[0])),
        }
        if name not in handlers:
            raise TemplateError(f"intrinsic {name} is not supported by the local stack")
        return handlers[name](argument)

    def _fn_get_att(self, argument: Any) -> Any:
        resource, attribute = argument.split(".", 1) if isinstance(argument, str) else self.resolve(argument)
        return self.get_att(str(resource), str(attribute))

    def _fn_join(self, argument: Any) -> str:
        delimiter, items = argument
        values = self.resolve(items)
        if not isinstance(values, list):
            raise TemplateError("Fn::Join needs a list")
        return str(delimiter).join(str(v) for v in values)

    def _fn_if(self, argument: Any) -> Any:
        condition, when_true, when_false = argument
        return self.resolve(when_true if self.condition(str(condition)) else when_false)

    def _fn_sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = argument[0], {k: self.resolve(v) for k, v in (argument[1] or {}).items()}
        else:
            text, variables = argument, {}
        return _substitute(str(text), lambda name: variables[name] if name in variables else self._sub_name(name))

    def _sub_name(self, name: str) -> Any:
        if "." in name and not name.startswith("AWS::"):
            resource, attribute = name.split(".", 1)
            return self.get_att(resource, attribute)
        return self.ref(name)


def _substitute(text: str, lookup: Callable[[str], Any]) -> str:
    """Replace ``${Name}`` (not ``${!Literal}``) in ``text``."""
    out: list[str] = []
    index = 0
    while True:
        start = text.find("${", index)
        if start < 0:
            out.append(text[index:])
            return "".join(out)
        end = text.find("}", start)
        if end < 0:
            raise TemplateError("unterminated ${ in Fn::Sub")
        out.append(text[index:start])
        name = text[start + 2 : end]
        if name.startswith("!"):
            out.append("${" + name[1:] + "}")
        else:
            value = lookup(name.strip())
            if isinstance(value, list):
                raise TemplateError(f"${{{name}}} is a list; Fn::Sub needs a string")
            out.append(str(value))
        index = end + 1
