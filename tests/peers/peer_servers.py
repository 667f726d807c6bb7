"""Real OAuth servers that nobody on this project wrote, started on 127.0.0.1 (see conftest.py).

* django-oauth-toolkit (Python, installed in the venv): password and refresh grants.
* panva/oidc-provider (Node, tests/peers/oidc): authorization code + PKCE, refresh, userinfo.

Each server runs in its own process, prints ``listening <port>`` once it accepts connections, and
is always terminated (SIGTERM, then SIGKILL) when the module's tests are done.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from tokenbroker.providers.base import AppCredentials

PEERS_DIR = Path(__file__).resolve().parent
OIDC_DIR = PEERS_DIR / "oidc"
READY_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 5.0
_LISTENING = re.compile(rb"^listening (\d+)$", re.MULTILINE)


@dataclass
class PeerProcess:
    """A running peer server and where its output goes (stdout/stderr files, for diagnostics)."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, limit: int = 4000) -> str:
        return _tail(self.log_path, limit)

    def stop(self) -> None:
        _stop(self.process)


def _tail(path: Path, limit: int) -> str:
    try:
        return path.read_bytes()[-limit:].decode("utf-8", "replace")
    except OSError:
        return ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


def start_peer(name: str, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_dir: Path) -> PeerProcess:
    """Start ``argv`` and wait (bounded) for its ``listening <port>`` line; fail loudly otherwise."""
    stdout_path = log_dir / f"{name}.stdout"
    log_path = log_dir / f"{name}.stderr"
    with stdout_path.open("wb") as stdout, log_path.open("wb") as stderr:
        process = subprocess.Popen(
            list(argv), cwd=cwd, env={**os.environ, **env}, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        match = _LISTENING.search(stdout_path.read_bytes())
        if match:
            return PeerProcess(name, process, int(match.group(1)), log_path)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    _stop(process)
    pytest.fail(
        f"{name} did not report 'listening <port>' within {READY_TIMEOUT_SECONDS:.0f}s "
        f"(exit code {process.returncode}); stderr:\n{_tail(log_path, 4000)}"
    )


def write_catalog(path: Path, entries: Mapping[str, Mapping[str, Any]]) -> Path:
    """An extra catalog file, in the format of TOKENBROKER_PROVIDERS_FILE, naming the peers."""
    document = {"providers": {name: dict(fields) for name, fields in entries.items()}}
    path.write_text(yaml.safe_dump(document, sort_keys=True), encoding="utf-8")
    return path


# --- django-oauth-toolkit ------------------------------------------------------------------------


@dataclass(frozen=True)
class DotPeer:
    server: PeerProcess
    username: str
    email: str
    password: str = field(repr=False)
    credentials: AppCredentials
    access_ttl: int

    @property
    def token_url(self) -> str:
        return f"{self.server.base_url}/o/token/"

    @property
    def userinfo_url(self) -> str:
        return f"{self.server.base_url}/api/userinfo/"


DOT_ACCESS_TTL_SECONDS = 120


def start_dot_peer(workdir: Path) -> DotPeer:
    """Migrate, seed (one user, one confidential password-grant application) and serve DOT."""
    username = "peer-user"
    email = "peer-user@dot.peer.test"
    password = secrets.token_urlsafe(16)
    credentials = AppCredentials(client_id=secrets.token_hex(12), client_secret=secrets.token_urlsafe(32))
    env = {
        "DJANGO_SETTINGS_MODULE": "dot_project.settings",
        "DOT_DJANGO_SECRET_KEY": secrets.token_urlsafe(32),
        "DOT_DB_PATH": str(workdir / "db.sqlite3"),
        "DOT_ACCESS_TTL": str(DOT_ACCESS_TTL_SECONDS),
        "DOT_USERNAME": username,
        "DOT_EMAIL": email,
        "DOT_PASSWORD": password,
        "DOT_CLIENT_ID": credentials.client_id,
        "DOT_CLIENT_SECRET": credentials.client_secret,
        "PYTHONUNBUFFERED": "1",
    }
    server = start_peer(
        "django-oauth-toolkit",
        [sys.executable, "-m", "dot_project.serve"],
        cwd=PEERS_DIR,
        env=env,
        log_dir=workdir,
    )
    return DotPeer(server, username, email, password, credentials, DOT_ACCESS_TTL_SECONDS)


# --- panva/oidc-provider -------------------------------------------------------------------------

OIDC_ACCESS_TTL_SECONDS = 90
OIDC_REFRESH_TTL_SECONDS = 600
# Registered with the provider and never served: the test reads the code from the Location header.
OIDC_REDIRECT_URI = "http://127.0.0.1:9/cb"


@dataclass(frozen=True)
class OidcPeer:
    server: PeerProcess
    # One confidential client per token endpoint auth method ("basic", "body").
    clients: Mapping[str, AppCredentials]
    redirect_uri: str
    access_ttl: int

    @property
    def base_url(self) -> str:
        return self.server.base_url


def _require_node_modules() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the oidc-provider peer needs Node.js (>= 20.19)")
    if not (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        pytest.fail(
            f"{OIDC_DIR / 'node_modules'} is missing: run `make test`, which runs "
            "`npm ci --prefix tests/peers/oidc` before pytest"
        )
    return node


def start_oidc_peer(workdir: Path) -> OidcPeer:
    """Serve oidc-provider with two confidential clients (client_secret_basic and _post)."""
    node = _require_node_modules()
    clients = {
        "basic": AppCredentials(client_id="peer-basic", client_secret=secrets.token_urlsafe(32)),
        "body": AppCredentials(client_id="peer-body", client_secret=secrets.token_urlsafe(32)),
    }
    methods = {"basic": "client_secret_basic", "body": "client_secret_post"}
    registered = [
        {
            "client_id": creds.client_id,
            "client_secret": creds.client_secret,
            "token_endpoint_auth_method": methods[mode],
        }
        for mode, creds in clients.items()
    ]
    env = {
        "PEER_CLIENTS": json.dumps(registered),
        "PEER_REDIRECT_URI": OIDC_REDIRECT_URI,
        "PEER_ACCESS_TTL": str(OIDC_ACCESS_TTL_SECONDS),
        "PEER_REFRESH_TTL": str(OIDC_REFRESH_TTL_SECONDS),
        "PEER_COOKIE_KEY": secrets.token_urlsafe(32),
        "NODE_ENV": "test",
    }
    server = start_peer("oidc-provider", [node, "server.mjs", "0"], cwd=OIDC_DIR, env=env, log_dir=workdir)
    return OidcPeer(server, clients, OIDC_REDIRECT_URI, OIDC_ACCESS_TTL_SECONDS)
