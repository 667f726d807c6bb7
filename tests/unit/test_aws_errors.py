"""Which AWS failures a caller may simply retry."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from tokenbroker.aws import is_transient_aws_error


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutSecretValue")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_client_error("ThrottlingException", 400), True),
        (_client_error("ProvisionedThroughputExceededException", 400), True),
        (_client_error("InternalServiceError", 500), True),
        (_client_error("SomethingNew", 503), True),
        (EndpointConnectionError(endpoint_url="https://secretsmanager.example"), True),
        (ReadTimeoutError(endpoint_url="https://dynamodb.example"), True),
        # The request itself is wrong, or a condition failed: retrying the same call cannot help.
        (_client_error("ResourceNotFoundException", 400), False),
        (_client_error("ConditionalCheckFailedException", 400), False),
        (_client_error("AccessDeniedException", 400), False),
        (ValueError("not AWS"), False),
    ],
)
def test_transient_aws_errors(error: BaseException, transient: bool) -> None:
    assert is_transient_aws_error(error) is transient
