"""The `tokenbroker` CLI against the local gateway with a fake vend function.

The fake echoes what it was asked, so these tests pin the CLI's side: arguments -> signed
requests (the local credentials for a loopback API), answers -> JSON on stdout, errors -> a
one-line message on stderr and exit status 1.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tokenbroker import cli

from infra.localstack.gateway import Gateway, bind_routes
from infra.localstack.net import LoopbackServer, bind_loopback
from infra.localstack.sigv4 import LocalCredentials, SigV4Verifier
from infra.localstack.template import load_template
from infra.localstack.topology import read_topology

TEMPLATE = """
Resources:
  HttpApi:
    Type: AWS::Serverless::HttpApi
    Properties: {Auth: {DefaultAuthorizer: AWS_IAM}}
  VendFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: vend/
      Handler: app.lambda_handler
      Events:
        Session: {Type: HttpApi, Properties: {ApiId: !Ref HttpApi, Path: /connect-sessions, Method: POST}}
        Token:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: "/tokens/{provider}/{connection_id}", Method: GET}
        Refresh:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: "/tokens/{provider}/{connection_id}/refresh", Method: POST}
        List: {Type: HttpApi, Properties: {ApiId: !Ref HttpApi, Path: /connections, Method: GET}}
        Show:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: "/connections/{provider}/{connection_id}", Method: GET}
        Delete:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: "/connections/{provider}/{connection_id}", Method: DELETE}
        Confirm:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: "/connect-sessions/{session_id}/confirm", Method: POST}
"""

VEND = """
import json

def answer(status, body):
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}

def connection(provider, connection_id):
    return {"provider": provider, "connection_id": connection_id, "status": "active", "generation": 3,
            "metadata": {"account_url": "https://acme.example"}, "scopes": ["a"]}

def lambda_handler(event, context):
    route, params = event["routeKey"], event.get("pathParameters") or {}
    query = event.get("queryStringParameters") or {}
    body = json.loads(event.get("body") or "{}")
    caller = event["requestContext"]["authorizer"]["iam"]["accessKey"]
    if params.get("connection_id") == "missing":
        return answer(404, {"error": "not_found", "message": "no such connection"})
    if route == "POST /connect-sessions":
        return answer(201, {"connect_url": "http://127.0.0.1/connect/s-" + body["connection_id"],
                            "expires_at": 2000000000, "session_id": "s-" + body["connection_id"], "echo": body})
    if route.startswith("GET /tokens/"):
        return answer(200, {"access_token": f"token-for-{caller}-{query['min_ttl']}", "token_type": "bearer",
                            "expires_at": 2000000000, "expires_in": 3600, "scopes": ["a"], "generation": 3,
                            "metadata": {"account_url": "https://acme.example"}})
    if route.startswith("POST /tokens/"):
        return answer(200, {"access_token": "rotated-" + str(body.get("rejected_token_sha256")),
                            "token_type": "bearer", "expires_at": 2000000000, "expires_in": 3600,
                            "scopes": [], "generation": 4, "metadata": {}})
    if route == "GET /connections":
        items = [connection(query["provider"], "one"), connection(query["provider"], "two")]
        return answer(200, {"connections": items})
    if route.startswith("GET /connections/"):
        return answer(200, connection(params["provider"], params["connection_id"]))
    if route.startswith("DELETE /connections/"):
        return {"statusCode": 204}
    if route == "POST /connect-sessions/{session_id}/confirm":
        if body.get("end_user_id") != "user-7":
            return answer(403, {"error": "end_user_mismatch", "message": "another end user completed it"})
        return answer(200, connection("worksection", params["session_id"]))
    return answer(500, {"error": "unexpected", "message": route})
"""


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("cli-site")
    (root / "template.yaml").write_text(TEMPLATE)
    (root / "vend").mkdir()
    (root / "vend" / "app.py").write_text(VEND)
    topology = read_topology(load_template(root / "template.yaml"), Path(root))
    verifier = SigV4Verifier(LocalCredentials(access_key_id="local-key", secret_access_key="local-secret"))
    server = LoopbackServer(Gateway(bind_routes(topology), verifier), bind_loopback(0), name="cli-gateway")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


# The stack would be started with the same variables; real-looking AWS_* ones must be ignored.
ENV = {
    "TOKENBROKER_LOCAL_ACCESS_KEY_ID": "local-key",
    "TOKENBROKER_LOCAL_SECRET_ACCESS_KEY": "local-secret",
    "AWS_ACCESS_KEY_ID": "AKIAREALLOOKINGKEY",
    "AWS_SECRET_ACCESS_KEY": "real-looking-secret",
}


def run(api_url: str, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--api-url", api_url, *argv], environ=env or ENV, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def ok_json(result: tuple[int, str, str]) -> Any:
    code, out, err = result
    assert code == 0, err
    return json.loads(out)


def test_token_signs_with_the_local_credentials_for_a_loopback_api(api_url: str) -> None:
    token = ok_json(run(api_url, "token", "worksection", "acme", "--min-ttl", "120"))
    # The SDK asks for min_ttl plus its cache margin (30 s).
    assert token["access_token"] == "token-for-local-key-150"
    assert token["generation"] == 3
    assert token["metadata"] == {"account_url": "https://acme.example"}
    assert "refresh_token" not in token
    code, out, _ = run(api_url, "token", "worksection", "acme", "--token-only")
    assert (code, out) == (0, "token-for-local-key-90\n")


def test_connect_link_sends_return_to_scopes_and_metadata(api_url: str) -> None:
    link = ok_json(
        run(
            api_url,
            "connect-link",
            "worksection",
            "acme",
            "--return-to",
            "https://app.example/done",
            "--scope",
            "tasks_read",
            "--scope",
            "users_read",
            "--metadata",
            "team=blue",
        )
    )
    assert link == {"connect_url": "http://127.0.0.1/connect/s-acme", "expires_at": 2000000000, "session_id": "s-acme"}
    confirm_mode = ok_json(run(api_url, "connect-link", "worksection", "acme", "--end-user-id", "user-7", "--confirm"))
    assert confirm_mode["session_id"] == "s-acme"
    code, _, err = run(api_url, "connect-link", "worksection", "acme", "--metadata", "novalue")
    assert code == 2
    assert "KEY=VALUE" in err


def test_connections_list_show_delete(api_url: str) -> None:
    listing = ok_json(run(api_url, "connections", "list", "workly"))
    assert [c["connection_id"] for c in listing["connections"]] == ["one", "two"]
    assert {c["provider"] for c in listing["connections"]} == {"workly"}
    shown = ok_json(run(api_url, "connections", "show", "workly", "one"))
    assert shown["status"] == "active"
    assert ok_json(run(api_url, "connections", "delete", "workly", "one")) == {
        "deleted": True,
        "provider": "workly",
        "connection_id": "one",
    }


def test_refresh_sends_only_the_hash_of_the_rejected_token(api_url: str) -> None:
    answer = ok_json(run(api_url, "refresh", "workly", "one", "--rejected-token", "old-token"))
    assert answer["access_token"] == "rotated-" + hashlib.sha256(b"old-token").hexdigest()
    assert ok_json(run(api_url, "refresh", "workly", "one"))["access_token"] == "rotated-None"


def test_errors_are_one_line_on_stderr_with_exit_status_1(api_url: str) -> None:
    code, out, err = run(api_url, "connections", "show", "workly", "missing")
    assert (code, out) == (1, "")
    assert err.strip() == "tokenbroker: not_found: no such connection"
    code, _, err = run(api_url, "token", "workly", "bad id!")
    assert code == 1
    assert err.startswith("tokenbroker: bad_request:")


def test_wrong_local_credentials_get_a_hint(api_url: str) -> None:
    env = {**ENV, "TOKENBROKER_LOCAL_SECRET_ACCESS_KEY": "wrong"}
    code, _, err = run(api_url, "token", "workly", "one", env=env)
    assert code == 1
    assert "forbidden" in err
    assert "TOKENBROKER_LOCAL_ACCESS_KEY_ID" in err
    assert "wrong" not in err


def test_the_api_url_defaults_to_the_environment_then_the_local_stack() -> None:
    assert cli.DEFAULT_API_URL == "http://127.0.0.1:3000"
    out, err = io.StringIO(), io.StringIO()
    # Nothing listens on port 9 of loopback: the error names the problem, exit status 1.
    env = {**ENV, "TOKENBROKER_API_URL": "http://127.0.0.1:9"}
    assert cli.main(["token", "workly", "one"], environ=env, stdout=out, stderr=err) == 1
    assert "unreachable" in err.getvalue()


def test_confirm_prints_the_connection_or_the_mismatch(api_url: str) -> None:
    session = "S" * 43
    confirmed = ok_json(run(api_url, "confirm", session, "user-7"))
    assert (confirmed["status"], confirmed["connection_id"]) == ("active", session)
    code, _, err = run(api_url, "confirm", session, "user-8")
    assert code != 0
    assert "another end user" in err
