"""The log scan (tests/logscan_plugin.py) can fail a run, and stays quiet when logs are clean.

Each scenario is a small test file run by pytest in a separate process with the plugin, so this
session's own scan stays clean while the inner runs leak sandbox secrets on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.logscan_plugin import Leak, SecretLedger, mask

ROOT = Path(__file__).resolve().parents[2]

SEED = """
import logging
import pathlib

from infra.sandboxes import WorklySandbox, WorksectionSandbox


def workly_tokens():
    sandbox = WorklySandbox(client_id="logscan-client", client_secret="logscan-client-secret")
    sandbox.add_user("ann@example.com", "correct-horse-battery")
    return sandbox.issue_tokens("ann@example.com")
"""


def run_inner(tmp_path: Path, tests: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.logscan_plugin"]\n')
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(SEED) + textwrap.dedent(tests))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "shared")]),
        "POWERTOOLS_SERVICE_NAME": "tokenbroker",
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_sandbox_token_logged_through_a_plain_logger_fails_the_run(tmp_path: Path) -> None:
    answer = run_inner(
        tmp_path,
        """
        def test_leaks_a_token():
            tokens = workly_tokens()
            logging.getLogger("plain").warning("refreshed, new token %s", tokens["access_token"])
            pathlib.Path(TOKEN_FILE).write_text(tokens["access_token"])
        """.replace("TOKEN_FILE", repr(str(tmp_path / "token"))),
    )
    output = answer.stdout + answer.stderr
    token = (tmp_path / "token").read_text()

    assert answer.returncode == 1, output
    assert "1 passed" in output  # the test itself passed: the scan failed the run
    assert "secrets in log lines" in output
    assert "test_inner.py::test_leaks_a_token" in output
    assert "refreshed, new token <access token>" in output
    assert token not in output, "the report must not print the secret it found"


def test_secrets_redacted_by_the_library_or_not_emitted_pass(tmp_path: Path) -> None:
    answer = run_inner(
        tmp_path,
        """
        from tokenbroker.observability import logger

        def test_clean():
            tokens = workly_tokens()
            logger.info("vended", extra={"access_token": tokens["access_token"]})
            logging.getLogger("quiet").debug("below the level, never emitted: %s", tokens["refresh_token"])
        """,
        "-s",  # shows Powertools' own line
    )
    output = answer.stdout + answer.stderr

    assert answer.returncode == 0, output
    assert "logscan: no secret in 1 distinct log lines" in output
    assert '"access_token":"***"' in output  # Powertools printed its line, masked by the library


def test_each_xdist_worker_scans_its_own_lines_and_the_controller_fails_the_run(tmp_path: Path) -> None:
    answer = run_inner(
        tmp_path,
        """
        def test_leaks_a_password():
            workly_tokens()
            logging.getLogger("plain").error("login failed for correct-horse-battery")

        def test_leaks_a_client_secret_in_a_traceback():
            sandbox = WorksectionSandbox(client_id="c", client_secret="ws-logscan-secret")
            try:
                raise RuntimeError(f"bad client {sandbox.client_secret}")
            except RuntimeError:
                logging.getLogger("plain").exception("provider call failed")
        """,
        "-n",
        "2",
    )
    output = answer.stdout + answer.stderr

    assert answer.returncode == 1, output
    assert "2 passed" in output
    assert "test_inner.py::test_leaks_a_password: password logged" in output
    assert "test_inner.py::test_leaks_a_client_secret_in_a_traceback: client secret logged" in output
    assert "correct-horse-battery" not in output
    assert "ws-logscan-secret" not in output


def test_the_ledger_finds_every_secret_in_a_line_and_ignores_short_values() -> None:
    ledger = SecretLedger()
    ledger.add("tok-0123456789", "access token")
    ledger.add("tok-0123456789-longer", "refresh token")
    ledger.add("short", "password")  # too short to scan without false alarms

    leaks = ledger.find(
        [
            ("t::a", "a=tok-0123456789 b=tok-0123456789-longer"),
            ("t::b", "a short line"),
            ("t::c", "nothing here"),
        ]
    )

    assert leaks == [Leak("t::a", "access token, refresh token", "a=<access token> b=<refresh token>")]


def test_a_long_line_is_shortened_around_the_masked_secret() -> None:
    line = "x" * 1000 + "SECRET-VALUE" + "y" * 1000
    masked = mask(line, ["SECRET-VALUE"], {"SECRET-VALUE": "token"})
    assert "<token>" in masked and "SECRET-VALUE" not in masked
    assert len(masked) < 400
