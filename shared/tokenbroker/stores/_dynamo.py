"""Low-level DynamoDB attribute values, spelled out (the resource layer costs cold-start time)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from tokenbroker.errors import InvalidInput

# Plain dicts in the wire format ({"S": ...}, {"N": ...}): the boto3-stubs unions of every
# possible value type make each access a cast, for no safety gained here.
AttributeValue = dict[str, Any]
Item = Mapping[str, Any]
Values = dict[str, AttributeValue]


def s(value: str) -> AttributeValue:
    return {"S": value}


def n(value: float) -> AttributeValue:
    # Integers stay integers; times keep millisecond precision (enough for leases, never "1e+20").
    if isinstance(value, int) or float(value).is_integer():
        return {"N": str(int(value))}
    return {"N": f"{value:.3f}"}


def string_map(values: Mapping[str, str]) -> AttributeValue:
    return {"M": {str(k): {"S": str(v)} for k, v in values.items()}}


def string_list(values: Iterable[str]) -> AttributeValue:
    return {"L": [{"S": str(v)} for v in values]}


def get_s(item: Item, name: str) -> str | None:
    value = item.get(name)
    return None if value is None else value.get("S")


def get_n(item: Item, name: str) -> float | None:
    value = item.get(name)
    raw = None if value is None else value.get("N")
    return None if raw is None else float(str(raw))


def get_int(item: Item, name: str, default: int = 0) -> int:
    value = get_n(item, name)
    return default if value is None else int(value)


def get_map(item: Item, name: str) -> dict[str, str]:
    value = item.get(name)
    entries: Mapping[str, Any] = (value or {}).get("M") or {}
    return {str(k): str(v.get("S", "")) for k, v in entries.items()}


def get_list(item: Item, name: str) -> tuple[str, ...]:
    value = item.get(name)
    entries: list[Any] = list((value or {}).get("L") or [])
    return tuple(str(v.get("S", "")) for v in entries)


def is_conditional_failure(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code", "")) == "ConditionalCheckFailedException"


def old_item_of_failure(error: ClientError) -> Item | None:
    """The item a failed condition saw (ReturnValuesOnConditionCheckFailure=ALL_OLD); None if absent."""
    response: Mapping[str, Any] = error.response
    item: Item | None = response.get("Item")
    return item or None


def encode_cursor(data: Mapping[str, str]) -> str:
    raw = json.dumps(dict(data), sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InvalidInput("cursor is not one this service returned", field="cursor")
    return {str(k): v for k, v in data.items()}


class Expression:
    """Builds update and condition expressions with every name and value aliased.

    Aliasing every attribute sidesteps DynamoDB's reserved words (``status``, ``ttl``, ...).
    """

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: Values = {}
        self._sets: list[str] = []
        self._removes: list[str] = []
        self._adds: list[str] = []

    def name(self, attribute: str) -> str:
        alias = "#" + attribute
        self.names[alias] = attribute
        return alias

    def value(self, value: AttributeValue) -> str:
        alias = f":v{len(self.values)}"
        self.values[alias] = value
        return alias

    def set(self, attribute: str, value: AttributeValue) -> Expression:
        self._sets.append(f"{self.name(attribute)} = {self.value(value)}")
        return self

    def set_raw(self, attribute: str, expression: str) -> Expression:
        """``expression`` already uses aliases from ``name``/``value``."""
        self._sets.append(f"{self.name(attribute)} = {expression}")
        return self

    def set_or_remove(self, attribute: str, value: AttributeValue | None) -> Expression:
        return self.set(attribute, value) if value is not None else self.remove(attribute)

    def remove(self, *attributes: str) -> Expression:
        self._removes.extend(self.name(a) for a in attributes)
        return self

    def add(self, attribute: str, value: AttributeValue) -> Expression:
        self._adds.append(f"{self.name(attribute)} {self.value(value)}")
        return self

    def update_expression(self) -> str:
        parts = []
        if self._sets:
            parts.append("SET " + ", ".join(self._sets))
        if self._removes:
            parts.append("REMOVE " + ", ".join(self._removes))
        if self._adds:
            parts.append("ADD " + ", ".join(self._adds))
        return " ".join(parts)
