"""django-oauth-toolkit peers for the reliability suite: one that rotates, one that does not.

Started exactly like tests/peers does (same project, same seeding), with dot_settings.py on top so
that rotation is a switch. Both start in parallel: each migrates its own sqlite file first.
"""

from __future__ import annotations

import secrets
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tokenbroker.providers.base import AppCredentials

from tests.peers.peer_servers import DOT_ACCESS_TTL_SECONDS, PEERS_DIR, DotPeer, start_peer
from tests.reliability.harness.results import REPO


def start_dot(workdir: Path, *, rotate: bool) -> DotPeer:
    name = "dot-rotating" if rotate else "dot-non-rotating"
    workdir = workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    username, email, password = "peer-user", "peer-user@dot.peer.test", secrets.token_urlsafe(16)
    credentials = AppCredentials(client_id=secrets.token_hex(12), client_secret=secrets.token_urlsafe(32))
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.reliability.harness.dot_settings",
        "PYTHONPATH": f"{PEERS_DIR}:{REPO}",
        "DOT_ROTATE": "1" if rotate else "0",
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
    server = start_peer(name, [sys.executable, "-m", "dot_project.serve"], cwd=PEERS_DIR, env=env, log_dir=workdir)
    return DotPeer(server, username, email, password, credentials, DOT_ACCESS_TTL_SECONDS)


def start_both(workdir: Path) -> tuple[DotPeer, DotPeer]:
    """(rotating, non-rotating), started side by side."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        rotating = pool.submit(start_dot, workdir, rotate=True)
        plain = pool.submit(start_dot, workdir, rotate=False)
        return rotating.result(), plain.result()
