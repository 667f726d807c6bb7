"""The local gateway: routes read from a template, API Gateway v2 events, SigV4 on IAM routes.

Fake handlers (written to tmp_path) echo what they receive, so these tests pin the gateway's
side of the contract independently of the real handlers.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.localstack.gateway import Gateway, bind_routes
from infra.localstack.net import LoopbackServer, PortInUse, bind_loopback
from infra.localstack.sigv4 import LocalCredentials, SigV4Verifier
from infra.localstack.template import load_template
from infra.localstack.topology import Auth, read_topology
from tests.e2e.signing import presigned_url, signed_headers

TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  HttpApi:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        EnableIamAuthorizer: true
        DefaultAuthorizer: AWS_IAM
  PublicFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/public/
      Handler: app.lambda_handler
      Events:
        Page:
          Type: HttpApi
          Properties:
            ApiId: !Ref HttpApi
            Path: /connect/{session}
            Method: GET
            Auth:
              Authorizer: NONE
        Form:
          Type: HttpApi
          Properties:
            ApiId: !Ref HttpApi
            Path: /connect/{session}
            Method: POST
            Auth: {Authorizer: NONE}
  PrivateFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/private/
      Handler: app.handle
      Timeout: 7
      Events:
        Token:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: "/tokens/{provider}/{connection_id}", Method: GET}
        Refresh:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: "/tokens/{provider}/{connection_id}/refresh", Method: POST}
        Anything:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: "/tokens/{proxy+}", Method: ANY}
        Boom:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: /boom, Method: GET}
"""

ECHO = """
import base64, json

def respond(event, context):
    if event["rawPath"] == "/boom":
        raise RuntimeError("the handler failed")
    if event.get("queryStringParameters", {}).get("shape") == "redirect":
        return {"statusCode": 302, "headers": {"Location": "https://example.test/next"},
                "cookies": ["a=1; Path=/", "b=2; Path=/"], "body": ""}
    if event.get("queryStringParameters", {}).get("shape") == "binary":
        return {"statusCode": 200, "headers": {"Content-Type": "application/octet-stream"},
                "isBase64Encoded": True, "body": base64.b64encode(b"\\x00\\x01binary").decode()}
    if event.get("queryStringParameters", {}).get("shape") == "plain":
        return {"answer": 42}
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json", "X-Function": FUNCTION},
        "body": json.dumps({
            "event": event,
            "context": {
                "function_name": context.function_name,
                "memory": context.memory_limit_in_mb,
                "remaining": context.get_remaining_time_in_millis(),
                "request_id": context.aws_request_id,
            },
        }),
    }
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gateway-site")
    (root / "template.yaml").write_text(TEMPLATE)
    for name, entry in (("public", "lambda_handler"), ("private", "handle")):
        code = root / "functions" / name
        code.mkdir(parents=True)
        (code / "app.py").write_text(f"FUNCTION = {name!r}\n{ECHO}\n{entry} = respond\n")
    return root


CREDENTIALS = LocalCredentials(access_key_id="testing", secret_access_key="testing")


@pytest.fixture(scope="module")
def gateway_log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture(scope="module")
def base_url(site: Path, gateway_log: io.StringIO) -> Iterator[str]:
    topology = read_topology(load_template(site / "template.yaml"), site)
    gateway = Gateway(bind_routes(topology), SigV4Verifier(CREDENTIALS), log=gateway_log)
    server = LoopbackServer(gateway, bind_loopback(0), name="test-gateway")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def echo(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def signed_get(url: str, **kwargs: Any) -> requests.Response:
    return requests.get(url, headers=signed_headers("GET", url, **kwargs), timeout=5)


# --- routes from the template ------------------------------------------------------------------


def test_routes_and_their_auth_come_from_the_template(site: Path) -> None:
    topology = read_topology(load_template(site / "template.yaml"), site)
    routes = {route.route_key: route for route in topology.routes}
    assert set(routes) == {
        "GET /connect/{session}",
        "POST /connect/{session}",
        "GET /tokens/{provider}/{connection_id}",
        "POST /tokens/{provider}/{connection_id}/refresh",
        "ANY /tokens/{proxy+}",
        "GET /boom",
    }
    assert routes["GET /connect/{session}"].auth is Auth.NONE
    assert routes["POST /connect/{session}"].auth is Auth.NONE
    assert routes["GET /tokens/{provider}/{connection_id}"].auth is Auth.IAM
    assert routes["GET /boom"].auth is Auth.IAM
    private = topology.functions["PrivateFunction"]
    assert private.handler == "app.handle"
    assert private.timeout == 7
    assert private.code_dir == (site / "functions" / "private").resolve()


def test_the_most_specific_route_wins(base_url: str) -> None:
    exact = echo(signed_get(f"{base_url}/tokens/worksection/acme"))["event"]
    assert exact["routeKey"] == "GET /tokens/{provider}/{connection_id}"
    assert exact["pathParameters"] == {"provider": "worksection", "connection_id": "acme"}
    url = f"{base_url}/tokens/a/b/c/d"
    greedy = echo(requests.delete(url, headers=signed_headers("DELETE", url), timeout=5))["event"]
    assert greedy["routeKey"] == "ANY /tokens/{proxy+}"
    assert greedy["pathParameters"] == {"proxy": "a/b/c/d"}


def test_unknown_paths_and_methods_are_404(base_url: str) -> None:
    assert requests.get(f"{base_url}/nowhere", timeout=5).status_code == 404
    missing_method = requests.delete(f"{base_url}/connect/abc", timeout=5)
    assert missing_method.status_code == 404
    assert missing_method.json() == {"message": "Not Found"}


# --- the event a handler receives --------------------------------------------------------------


def test_public_route_gets_a_payload_v2_event(base_url: str) -> None:
    response = requests.get(
        f"{base_url}/connect/s%20one?a=1&b=x%2By&a=2&flag",
        headers={"X-Custom": "Value", "Cookie": "c1=v1; c2=v2", "User-Agent": "gateway-test"},
        timeout=5,
    )
    body = echo(response)
    event, context = body["event"], body["context"]
    assert response.headers["X-Function"] == "public"
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /connect/{session}"
    assert event["rawPath"] == "/connect/s%20one"
    assert event["rawQueryString"] == "a=1&b=x%2By&a=2&flag"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x+y", "flag": ""}
    assert event["pathParameters"] == {"session": "s one"}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-custom"] == "Value"
    assert all(name == name.lower() for name in event["headers"])
    assert event["headers"]["x-forwarded-proto"] == "http"
    assert event["isBase64Encoded"] is False
    assert "body" not in event
    ctx = event["requestContext"]
    assert ctx["stage"] == "$default"
    assert ctx["routeKey"] == "GET /connect/{session}"
    assert ctx["accountId"] == "123456789012"
    assert ctx["domainName"] == base_url.removeprefix("http://")
    assert ctx["http"] == {
        "method": "GET",
        "path": "/connect/s one",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "gateway-test",
    }
    assert abs(ctx["timeEpoch"] / 1000 - time.time()) < 30
    assert ctx["requestId"]
    assert "authorizer" not in ctx
    assert context["function_name"].endswith("PublicFunction")
    assert 0 < context["remaining"] <= 3000  # the template's default Lambda timeout


def test_form_bodies_arrive_base64_encoded_and_json_as_text(base_url: str) -> None:
    form = echo(requests.post(f"{base_url}/connect/abc", data={"email": "a@b.c", "password": "x y"}, timeout=5))
    assert form["event"]["isBase64Encoded"] is True
    assert base64.b64decode(form["event"]["body"]) == b"email=a%40b.c&password=x+y"
    url = f"{base_url}/tokens/p/c/refresh"
    payload = json.dumps({"rejected_token_sha256": "0" * 64}).encode()
    headers = {"Content-Type": "application/json"}
    signed = signed_headers("POST", url, body=payload, headers=headers)
    text = echo(requests.post(url, data=payload, headers=signed, timeout=5))
    assert text["event"]["isBase64Encoded"] is False
    assert json.loads(text["event"]["body"]) == {"rejected_token_sha256": "0" * 64}


# --- SigV4 on IAM routes -----------------------------------------------------------------------


def test_a_correctly_signed_request_reaches_the_handler_with_the_caller(base_url: str) -> None:
    event = echo(signed_get(f"{base_url}/tokens/workly/acme?min_ttl=300"))["event"]
    iam = event["requestContext"]["authorizer"]["iam"]
    assert iam["accessKey"] == "testing"
    assert iam["accountId"] == "123456789012"
    assert iam["userArn"].startswith("arn:aws:iam::123456789012:user/")
    assert iam["callerId"] and iam["userId"]
    assert event["queryStringParameters"] == {"min_ttl": "300"}


def forbidden(response: requests.Response) -> str:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "forbidden"
    message: str = body["message"]
    assert "testing" not in message.lower().replace("x-amz", "")  # never echoes a credential
    return message


def test_unsigned_requests_are_refused(base_url: str) -> None:
    assert "Missing Authentication Token" in forbidden(requests.get(f"{base_url}/tokens/workly/acme", timeout=5))


def test_a_wrong_secret_is_refused(base_url: str) -> None:
    forbidden(signed_get(f"{base_url}/tokens/workly/acme", secret_key="not-the-secret"))


def test_an_unknown_access_key_or_region_is_refused(base_url: str) -> None:
    forbidden(signed_get(f"{base_url}/tokens/workly/acme", access_key="AKIAOTHER"))
    forbidden(signed_get(f"{base_url}/tokens/workly/acme", region="eu-west-1"))


def test_a_tampered_path_query_or_body_is_refused(base_url: str) -> None:
    signed_for = f"{base_url}/tokens/workly/acme"
    headers = signed_headers("GET", signed_for)
    forbidden(requests.get(f"{base_url}/tokens/workly/other", headers=headers, timeout=5))
    forbidden(requests.get(f"{signed_for}?min_ttl=1", headers=headers, timeout=5))
    url = f"{base_url}/tokens/p/c/refresh"
    headers = signed_headers("POST", url, body=b'{"a": 1}', headers={"Content-Type": "application/json"})
    forbidden(requests.post(url, data=b'{"a": 2}', headers=headers, timeout=5))
    # The same signature on a different method.
    forbidden(requests.post(signed_for, headers=signed_headers("GET", signed_for), timeout=5))


def test_a_host_header_no_url_can_carry_is_refused_not_a_crash(base_url: str) -> None:
    """Found by the IAM fuzz run: a Host such as "a[b" made the verifier's canonical URL raise (500)."""
    url = f"{base_url}/tokens/workly/acme"
    headers = signed_headers("GET", url)
    forbidden(requests.get(url, headers={**headers, "Host": "pFrt[EZPAS<J!Aah(35b3c"}, timeout=5))


def test_stale_and_future_signatures_are_refused(base_url: str) -> None:
    url = f"{base_url}/tokens/workly/acme"
    assert "expired" in forbidden(signed_get(url, at=time.time() - 6 * 60)).lower()
    forbidden(signed_get(url, at=time.time() + 6 * 60))
    # Within the 5-minute window is fine.
    echo(signed_get(url, at=time.time() - 60))


def test_a_payload_hash_header_must_match_the_body(base_url: str) -> None:
    url = f"{base_url}/tokens/p/c/refresh"
    headers = {"Content-Type": "application/json", "X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD"}
    signed = signed_headers("POST", url, body=b"{}", headers=headers)
    echo(requests.post(url, data=b'{"unsigned": true}', headers=signed, timeout=5))
    wrong = {"Content-Type": "application/json", "X-Amz-Content-Sha256": "0" * 64}
    forbidden(requests.post(url, data=b"{}", headers=signed_headers("POST", url, body=b"{}", headers=wrong), timeout=5))


def test_presigned_urls_work_until_they_expire(base_url: str) -> None:
    echo(requests.get(presigned_url("GET", f"{base_url}/tokens/workly/acme?min_ttl=5"), timeout=5))
    forbidden(requests.get(presigned_url("GET", f"{base_url}/tokens/workly/acme", secret_key="wrong"), timeout=5))
    expired = presigned_url("GET", f"{base_url}/tokens/workly/acme", expires=1)
    time.sleep(2.1)
    forbidden(requests.get(expired, timeout=5))


def test_curl_aws_sigv4_is_accepted(base_url: str) -> None:
    """The copy-paste command the stack prints on start."""
    url = f"{base_url}/tokens/workly/acme?min_ttl=60"
    command = ["curl", "-sS", "--max-time", "5", "--aws-sigv4", "aws:amz:us-east-1:execute-api"]

    def curl(user: str) -> Any:
        done = subprocess.run([*command, "--user", user, url], check=True, capture_output=True, text=True, timeout=10)
        return json.loads(done.stdout)

    assert curl("testing:testing")["event"]["requestContext"]["authorizer"]["iam"]["accessKey"] == "testing"
    assert curl("testing:wrong")["error"] == "forbidden"


# --- what the handler answers ------------------------------------------------------------------


def test_handler_responses_become_http_responses(base_url: str) -> None:
    redirect = requests.get(f"{base_url}/connect/x?shape=redirect", allow_redirects=False, timeout=5)
    assert redirect.status_code == 302
    assert redirect.headers["Location"] == "https://example.test/next"
    assert redirect.raw.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    binary = requests.get(f"{base_url}/connect/x?shape=binary", timeout=5)
    assert binary.content == b"\x00\x01binary"
    assert binary.headers["Content-Type"] == "application/octet-stream"
    plain = requests.get(f"{base_url}/connect/x?shape=plain", timeout=5)
    assert plain.status_code == 200
    assert plain.json() == {"answer": 42}
    assert plain.headers["Content-Type"] == "application/json"


def test_a_failing_handler_is_a_500_like_api_gateway(base_url: str) -> None:
    url = f"{base_url}/boom"
    response = requests.get(url, headers=signed_headers("GET", url), timeout=5)
    assert response.status_code == 500
    assert response.json() == {"message": "Internal Server Error"}


def test_the_access_log_names_routes_never_raw_paths_or_queries(base_url: str, gateway_log: io.StringIO) -> None:
    requests.get(f"{base_url}/connect/session-secret-123?code=oauth-code-456", timeout=5)
    log = gateway_log.getvalue()
    assert "GET /connect/{session} -> 200" in log
    assert "session-secret-123" not in log
    assert "oauth-code-456" not in log


def test_a_busy_port_is_reported_clearly() -> None:
    first = bind_loopback(0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} is in use; pass --port"):
            bind_loopback(port)
    finally:
        first.close()
