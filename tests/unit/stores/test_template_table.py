"""template.yaml's Table translates into the CreateTable call the stores rely on."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenbroker.stores.connections import DUE_INDEX

from infra.template_resources import (
    TemplateTableError,
    create_table_request,
    load_template,
    table_properties,
    ttl_attribute,
)


def test_template_table_has_the_store_key_design() -> None:
    properties = table_properties(load_template())
    request = create_table_request(properties, "t")

    assert request["TableName"] == "t"
    assert request["BillingMode"] == "PAY_PER_REQUEST"
    assert request["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert {(d["AttributeName"], d["AttributeType"]) for d in request["AttributeDefinitions"]} == {
        ("pk", "S"),
        ("sk", "S"),
        ("due_shard", "S"),
        ("next_refresh_at", "N"),
    }
    [index] = request["GlobalSecondaryIndexes"]
    assert index["IndexName"] == DUE_INDEX
    assert index["KeySchema"] == [
        {"AttributeName": "due_shard", "KeyType": "HASH"},
        {"AttributeName": "next_refresh_at", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert ttl_attribute(properties) == "ttl"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_short_form_tags_are_read_as_intrinsics() -> None:
    properties = table_properties(load_template())
    assert properties["SSESpecification"]["KMSMasterKeyId"] == {
        "Fn::If": ["HasKmsKey", {"Ref": "KmsKeyId"}, {"Ref": "AWS::NoValue"}]
    }


def test_intrinsics_in_the_key_schema_are_refused(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Resources:\n"
        "  Table:\n"
        "    Type: AWS::DynamoDB::Table\n"
        "    Properties:\n"
        "      AttributeDefinitions: [{AttributeName: !Ref Name, AttributeType: S}]\n"
        "      KeySchema: [{AttributeName: pk, KeyType: HASH}]\n"
    )
    with pytest.raises(TemplateTableError, match="intrinsic"):
        create_table_request(table_properties(load_template(template)), "t")


def test_missing_table_is_a_clear_error(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text("Resources:\n  Other:\n    Type: AWS::SQS::Queue\n")
    with pytest.raises(TemplateTableError, match="no AWS::DynamoDB::Table named Table"):
        table_properties(load_template(template))
