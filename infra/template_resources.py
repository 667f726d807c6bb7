"""Create the DynamoDB table that template.yaml declares, from the template itself.

Tests and the local stack call ``create_table_from_template`` so that the key schema, attribute
definitions and GSIs exist in exactly one place (the template). Only what moto and DynamoDB
Local need is translated; PITR and SSE are deployment concerns and are ignored, TTL is enabled.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

# One reader of template.yaml for the whole repo (short-form tags as long-form intrinsics).
from infra.localstack.template import DEFAULT_TEMPLATE, load_template

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["DEFAULT_TEMPLATE", "TemplateTableError", "create_table_from_template", "load_template", "table_properties"]

TABLE_LOGICAL_ID = "Table"


class TemplateTableError(Exception):
    """The template's table cannot be translated into a CreateTable call."""


def table_properties(template: Mapping[str, Any], logical_id: str = TABLE_LOGICAL_ID) -> dict[str, Any]:
    resource = template["Resources"].get(logical_id)
    if not isinstance(resource, dict) or resource.get("Type") != "AWS::DynamoDB::Table":
        raise TemplateTableError(f"template has no AWS::DynamoDB::Table named {logical_id}")
    properties = resource.get("Properties")
    if not isinstance(properties, dict):
        raise TemplateTableError(f"{logical_id} has no Properties")
    return properties


def _literal(value: Any, where: str) -> Any:
    """Key schemas must be literal: an intrinsic there would need a real CloudFormation."""
    if isinstance(value, dict) and any(k == "Ref" or k.startswith("Fn::") for k in value):
        raise TemplateTableError(f"{where} uses an intrinsic function; it must be literal")
    return value


def _key_schema(entries: Any, where: str) -> list[dict[str, str]]:
    return [
        {
            "AttributeName": str(_literal(e["AttributeName"], where)),
            "KeyType": str(_literal(e["KeyType"], where)),
        }
        for e in entries
    ]


def _projection(projection: Mapping[str, Any] | None) -> dict[str, Any]:
    if not projection:
        return {"ProjectionType": "ALL"}
    result: dict[str, Any] = {"ProjectionType": str(projection.get("ProjectionType", "ALL"))}
    if projection.get("NonKeyAttributes"):
        result["NonKeyAttributes"] = [str(a) for a in projection["NonKeyAttributes"]]
    return result


def create_table_request(properties: Mapping[str, Any], table_name: str) -> dict[str, Any]:
    """The CreateTable parameters equivalent to the template's Properties (on-demand billing)."""
    request: dict[str, Any] = {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {
                "AttributeName": str(_literal(d["AttributeName"], "AttributeDefinitions")),
                "AttributeType": str(_literal(d["AttributeType"], "AttributeDefinitions")),
            }
            for d in properties["AttributeDefinitions"]
        ],
        "KeySchema": _key_schema(properties["KeySchema"], "KeySchema"),
    }
    indexes = properties.get("GlobalSecondaryIndexes") or []
    if indexes:
        request["GlobalSecondaryIndexes"] = [
            {
                "IndexName": str(_literal(index["IndexName"], "IndexName")),
                "KeySchema": _key_schema(index["KeySchema"], index["IndexName"]),
                "Projection": _projection(index.get("Projection")),
            }
            for index in indexes
        ]
    return request


def ttl_attribute(properties: Mapping[str, Any]) -> str | None:
    spec = properties.get("TimeToLiveSpecification") or {}
    enabled = spec.get("Enabled")
    return str(spec["AttributeName"]) if enabled is True or str(enabled).lower() == "true" else None


def create_table_from_template(
    client: DynamoDBClient,
    table_name: str,
    *,
    template_path: str | Path = DEFAULT_TEMPLATE,
    logical_id: str = TABLE_LOGICAL_ID,
) -> str:
    """Create ``table_name`` as the template declares it, wait until active, enable TTL."""
    properties = table_properties(load_template(template_path), logical_id)
    client.create_table(**create_table_request(properties, table_name))
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ttl = ttl_attribute(properties)
    if ttl:
        client.update_time_to_live(
            TableName=table_name, TimeToLiveSpecification={"AttributeName": ttl, "Enabled": True}
        )
    return table_name
