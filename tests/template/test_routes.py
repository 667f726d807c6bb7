"""The HttpApi as API Gateway receives it (the OpenAPI body SAM generates).

Public = an operation whose security is ``NONE`` (SAM's ``Authorizer: NONE``) or missing; every
other route must require SigV4 (the ``AWS_IAM`` scheme). Public routes are exactly the connect
flow a browser walks through: /connect/* and /callback/*.
"""

from __future__ import annotations

from typing import Any

from tests.template.sam import resources_of, transformed

IAM: list[dict[str, list[str]]] = [{"AWS_IAM": []}]
PUBLIC_ROUTES = {
    ("GET", "/connect/{session}"),
    ("POST", "/connect/{session}"),
    ("GET", "/callback/{provider}"),
}
IAM_ROUTES = {
    ("POST", "/connect-sessions"),
    ("POST", "/connect-sessions/{session_id}/confirm"),
    ("GET", "/tokens/{provider}/{connection_id}"),
    ("POST", "/tokens/{provider}/{connection_id}/refresh"),
    ("GET", "/connections"),
    ("GET", "/connections/{provider}/{connection_id}"),
    ("DELETE", "/connections/{provider}/{connection_id}"),
}
HTTP_METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "x-amazon-apigateway-any-method"}


def openapi() -> dict[str, Any]:
    [api] = resources_of(transformed(), "AWS::ApiGatewayV2::Api").values()
    body: dict[str, Any] = api["Properties"]["Body"]
    return body


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in openapi()["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def is_public(operation: dict[str, Any]) -> bool:
    security = operation.get("security")
    return not security or security == [{"NONE": []}]


def test_the_api_serves_exactly_the_routes_of_the_design() -> None:
    assert set(operations()) == PUBLIC_ROUTES | IAM_ROUTES
    assert not any(method == "X-AMAZON-APIGATEWAY-ANY-METHOD" for method, _ in operations())
    assert "$default" not in openapi()["paths"]


def test_public_routes_are_exactly_connect_and_callback() -> None:
    public = {route for route, operation in operations().items() if is_public(operation)}
    assert public == PUBLIC_ROUTES
    assert all(path.startswith(("/connect/", "/callback/")) for _, path in public)


def test_every_other_route_requires_sigv4() -> None:
    for route, operation in operations().items():
        if route not in PUBLIC_ROUTES:
            assert operation.get("security") == IAM, route
    scheme = openapi()["components"]["securitySchemes"]["AWS_IAM"]
    assert scheme["x-amazon-apigateway-authtype"] == "awsSigv4"


def test_public_routes_reach_only_the_callback_function_and_iam_routes_only_vend() -> None:
    for route, operation in operations().items():
        uri = operation["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
        expected = "CallbackFunction" if route in PUBLIC_ROUTES else "VendFunction"
        assert f"${{{expected}.Arn}}" in uri, (route, uri)


def test_api_gateway_may_invoke_each_function_only_through_its_own_routes() -> None:
    permissions = resources_of(transformed(), "AWS::Lambda::Permission")
    assert permissions
    for name, permission in permissions.items():
        properties = permission["Properties"]
        assert properties["Principal"] == "apigateway.amazonaws.com", name
        arn, values = properties["SourceArn"]["Fn::Sub"]
        assert values["__ApiId__"] == {"Ref": "HttpApi"}, name
        method = arn.split("${__Stage__}/", 1)[1].split("/", 1)[0]
        assert method in {m for m, _ in PUBLIC_ROUTES | IAM_ROUTES}, (name, arn)


def test_the_only_api_is_the_http_api() -> None:
    template = transformed()
    assert list(resources_of(template, "AWS::ApiGatewayV2::Api")) == ["HttpApi"]
    assert not resources_of(template, "AWS::ApiGateway::RestApi")
    assert not resources_of(template, "AWS::Lambda::Url")
