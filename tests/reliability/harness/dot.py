"""The django-oauth-toolkit peer for the reliability suite: one server, rotating and non-rotating grants.

Started exactly like tests/peers does (same project, same seeding), with dot_settings.py on top:
grants with the scope ``write`` keep their refresh token, all others rotate it.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from tokenbroker.providers.base import AppCredentials

from tests.peers.peer_servers import DOT_ACCESS_TTL_SECONDS, PEERS_DIR, DotPeer, start_peer
from tests.reliability.harness.results import REPO

ROTATING_SCOPE = "read"
# dot_validator.NON_ROTATING_SCOPE (that module needs Django configured, so it is not imported here).
NON_ROTATING_SCOPE = "write"

__all__ = ["NON_ROTATING_SCOPE", "ROTATING_SCOPE", "start_dot"]


def start_dot(workdir: Path) -> DotPeer:
    username, email, password = "peer-user", "peer-user@dot.peer.test", secrets.token_urlsafe(16)
    credentials = AppCredentials(client_id=secrets.token_hex(12), client_secret=secrets.token_urlsafe(32))
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.reliability.harness.dot_settings",
        "PYTHONPATH": f"{PEERS_DIR}:{REPO}",
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
    command = [sys.executable, "-m", "dot_project.serve"]
    server = start_peer("dot-reliability", command, cwd=PEERS_DIR, env=env, log_dir=workdir)
    return DotPeer(server, username, email, password, credentials, DOT_ACCESS_TTL_SECONDS)
