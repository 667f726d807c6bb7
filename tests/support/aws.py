"""AWS helpers for tests, free of pytest: fake credentials, tables from template.yaml, moto servers."""

from __future__ import annotations

import os
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from moto.moto_server.werkzeug_app import MotoRequestHandler
from tokenbroker.aws import AwsClients, DynamoTable, default_config
from werkzeug.serving import BaseWSGIServer, make_server

from infra.moto_app import ATOMIC_TARGET_PREFIXES, moto_wsgi_app
from infra.template_resources import DEFAULT_TEMPLATE
from infra.template_resources import create_table_from_template as _create_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
# Variables that could point a test at a real account or a stray endpoint.
UNSAFE_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN")


def use_fake_aws_environment(environ: os._Environ[str] | dict[str, str] = os.environ) -> None:
    """Fake credentials, one region, no profile, no endpoint override, no shared config files."""
    environ.update(FAKE_CREDENTIALS)
    for name in list(environ):
        if name in UNSAFE_VARIABLES or name.startswith("AWS_ENDPOINT_URL_"):
            del environ[name]
    environ["AWS_CONFIG_FILE"] = os.devnull
    environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    environ["AWS_EC2_METADATA_DISABLED"] = "true"


def create_table_from_template(
    client: DynamoDBClient, table_name: str | None = None, template_path: str | Path = DEFAULT_TEMPLATE
) -> str:
    """Create the template's ``Table`` under ``table_name`` (random if omitted); returns the name."""
    name = table_name or f"tokenbroker-test-{uuid.uuid4().hex[:12]}"
    return _create_table(client, name, template_path=template_path)


def clients_for(endpoint_url: str | None = None, *, max_pool_connections: int = 50) -> AwsClients:
    """Clients with the fake credentials, optionally aimed at a moto server."""
    session = boto3.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
        region_name=REGION,
    )
    config = default_config(max_pool_connections=max_pool_connections)
    return AwsClients(session, config=config, endpoint_url=endpoint_url)


def new_table(clients: AwsClients, table_name: str | None = None) -> DynamoTable:
    return clients.table(create_table_from_template(clients.dynamodb, table_name))


class MotoServer:
    """moto's app on 127.0.0.1 (port 0 = any free port) in a daemon thread.

    ``threaded=False`` serves one request at a time (design.md's fallback); the default keeps a
    thread per request but serialises DynamoDB and Secrets Manager (``ATOMIC_TARGET_PREFIXES``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        threaded: bool = True,
        atomic_prefixes: tuple[str, ...] = ATOMIC_TARGET_PREFIXES,
    ) -> None:
        app = moto_wsgi_app(atomic_prefixes)
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=threaded, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def reset(self) -> None:
        """Forget every resource (moto's /moto-api/reset)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


@contextmanager
def running(server: MotoServer) -> Iterator[MotoServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
