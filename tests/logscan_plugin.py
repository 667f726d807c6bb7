"""Fail the test run when a secret the suite used shows up in a log line.

Registered for the whole suite by tests/conftest.py. Works alone and under pytest-xdist (each
worker scans its own lines and reports to the controller).

Secrets come from the provider sandboxes, independently of the library's redaction registry, so
the check is not circular: every token and authorization code they mint (``infra.sandboxes``
minting functions and the token ledger), every password seeded into them (``add_user``) and every
client secret they accept. Values shorter than 8 characters are not checked (they collide with
ordinary words); ``declare_secret`` adds a value by hand.

Log lines are the final text of every ``logging.Handler.format`` call of this process: the
Powertools handler's JSON line (after its redacting formatter), any stdlib handler, and pytest's
own capture handler for records a Lambda would print through its root handler. Records of a
Powertools logger are the exception for pytest's handler: on Lambda, Powertools filters them
out of the root handler, so only its own (redacted) line is real output. Only emitted records
count (logger levels as configured), as in production. Out of scope: subprocesses (the local
stack, a standalone sandbox) and text that is printed, not logged (the CLI prints tokens by design).

The report names the test that was running when the line was emitted and shows the line with
the secret masked; the secret itself is never printed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest

MIN_SECRET_LENGTH = 8
REPORT_LIMIT = 20
# How much of a long line the report shows around the masked secret.
CONTEXT_CHARS = 160
BETWEEN_TESTS = "(outside any test)"
WORKEROUTPUT_KEY = "logscan_leaks"


@dataclass(frozen=True, slots=True)
class Leak:
    test: str
    kind: str
    line: str  # already masked

    def to_dict(self) -> dict[str, str]:
        return {"test": self.test, "kind": self.kind, "line": self.line}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Leak:
        return cls(data["test"], data["kind"], data["line"])


class SecretLedger:
    """Secret values and what they are (``"workly access token"``), indexed for a fast scan."""

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, value: object, kind: str, *, precise: bool = False) -> None:
        """``precise``: ``kind`` is more exact than what a minting function knew (access vs refresh)."""
        if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
            with self._lock:
                if precise:
                    self._kinds[value] = kind
                else:
                    self._kinds.setdefault(value, kind)

    def __len__(self) -> int:
        return len(self._kinds)

    def find(self, lines: Iterable[tuple[str, str]]) -> list[Leak]:
        """Leaks in ``(test, line)`` pairs: one index lookup per character, not per secret."""
        with self._lock:
            kinds = dict(self._kinds)
        index: dict[str, list[str]] = {}
        for secret in sorted(kinds, key=len, reverse=True):
            index.setdefault(secret[:MIN_SECRET_LENGTH], []).append(secret)
        leaks = []
        for test, line in lines:
            found = {
                secret
                for start in range(len(line) - MIN_SECRET_LENGTH + 1)
                for secret in index.get(line[start : start + MIN_SECRET_LENGTH], ())
                if line.startswith(secret, start)
            }
            if found:
                leaks.append(Leak(test, ", ".join(sorted({kinds[s] for s in found})), mask(line, found, kinds)))
        return leaks


def mask(line: str, secrets: Iterable[str], kinds: dict[str, str]) -> str:
    ordered = sorted(secrets, key=len, reverse=True)
    first = min(line.find(secret) for secret in ordered)
    for secret in ordered:
        line = line.replace(secret, f"<{kinds[secret]}>")
    if len(line) > 2 * CONTEXT_CHARS:
        start = max(0, first - CONTEXT_CHARS)
        line = ("..." if start else "") + line[start : start + 2 * CONTEXT_CHARS] + "..."
    return line


class LineRecorder:
    """Distinct emitted log lines, each with the first test during which it appeared."""

    def __init__(self) -> None:
        self._lines: dict[str, str] = {}
        self._lock = threading.Lock()
        self.current_test = BETWEEN_TESTS

    def add(self, text: str) -> None:
        with self._lock:
            self._lines.setdefault(text, self.current_test)

    def items(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(test, line) for line, test in self._lines.items()]

    def __len__(self) -> int:
        return len(self._lines)


SECRETS = SecretLedger()
LINES = LineRecorder()
_installed = False


def declare_secret(value: str, kind: str = "declared secret") -> None:
    """Add a value the sandboxes do not know (for tests that make up their own secrets)."""
    SECRETS.add(value, kind)


# --- capture: log lines ----------------------------------------------------------------------------


_services_cache: tuple[int, list[str]] = (-1, [])


def _powertools_services() -> list[str]:
    """Names of the Powertools loggers (their service names); recomputed when loggers are added."""
    global _services_cache  # noqa: PLW0603 - a cache keyed on the logger registry's size
    loggers = logging.Logger.manager.loggerDict
    if _services_cache[0] != len(loggers):
        names = [name for name, lg in list(loggers.items()) if getattr(lg, "powertools_handler", None)]
        _services_cache = (len(loggers), names)
    return _services_cache[1]


def _is_pytest_handler(handler: logging.Handler) -> bool:
    return type(handler).__module__.startswith("_pytest")


def _install_line_capture() -> None:
    original = logging.Handler.format

    def format_and_record(self: logging.Handler, record: logging.LogRecord) -> str:
        text = original(self, record)
        # On Lambda the root handler filters out Powertools loggers' records (SuppressFilter):
        # pytest's root capture of them is not output anyone would see; their own line is.
        if not (_is_pytest_handler(self) and any(s in record.name for s in _powertools_services())):
            LINES.add(text)
        return text

    logging.Handler.format = format_and_record  # type: ignore[method-assign]


# --- capture: secrets the sandboxes issue, accept or are seeded with -------------------------------


def _recording(function: Callable[..., Any], kind: str) -> Callable[..., Any]:
    def minted(*args: Any, **kwargs: Any) -> Any:
        value = function(*args, **kwargs)
        SECRETS.add(value, kind)
        return value

    return minted


def _install_secret_capture() -> None:
    from infra.sandboxes import ledger, server, workly, worksection  # noqa: PLC0415 - only in test runs

    for module in (workly, worksection):
        for name in ("hex_token", "jwt_like", "league_opaque"):
            if hasattr(module, name):
                setattr(
                    module,
                    name,
                    _recording(getattr(module, name), f"{module.__name__.rsplit('.', 1)[-1]} token or code"),
                )

    add_pair = ledger.TokenLedger.add_pair

    def add_pair_recorded(self: Any, *, access_token: str, refresh_token: str, **kwargs: Any) -> None:
        SECRETS.add(access_token, "access token", precise=True)
        SECRETS.add(refresh_token, "refresh token", precise=True)
        add_pair(self, access_token=access_token, refresh_token=refresh_token, **kwargs)

    ledger.TokenLedger.add_pair = add_pair_recorded  # type: ignore[method-assign]

    init = server.SandboxServer.__init__

    def init_recorded(self: Any, *args: Any, **kwargs: Any) -> None:
        SECRETS.add(kwargs.get("client_secret"), "client secret")
        init(self, *args, **kwargs)

    server.SandboxServer.__init__ = init_recorded  # type: ignore[method-assign]
    add_client = server.SandboxServer.add_client

    def add_client_recorded(self: Any, client_id: str, client_secret: str) -> None:
        SECRETS.add(client_secret, "client secret")
        add_client(self, client_id, client_secret)

    server.SandboxServer.add_client = add_client_recorded  # type: ignore[method-assign]

    for sandbox in (workly.WorklySandbox, worksection.WorksectionSandbox):
        sandbox.add_user = _password_recording(sandbox.add_user)  # type: ignore[method-assign]


def _password_recording(add_user: Callable[..., None]) -> Callable[..., None]:
    def add_user_recorded(self: Any, email: str, password: str, **details: Any) -> None:
        SECRETS.add(password, "password")
        add_user(self, email, password, **details)

    return add_user_recorded


def install() -> None:
    global _installed  # noqa: PLW0603 - patches are process-wide, installed once
    if not _installed:
        _installed = True
        _install_line_capture()
        _install_secret_capture()


# --- pytest hooks ------------------------------------------------------------------------------------


class LogScan:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.leaks: list[Leak] = []
        self.scanned = 0

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Any:
        LINES.current_test = item.nodeid
        yield
        LINES.current_test = BETWEEN_TESTS

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """xdist controller: collect what a worker found in its own lines."""
        output = getattr(node, "workeroutput", None) or {}
        self.leaks.extend(Leak.from_dict(leak) for leak in output.get(WORKEROUTPUT_KEY, []))
        self.scanned += int(output.get(WORKEROUTPUT_KEY + "_lines", 0))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        local = SECRETS.find(LINES.items())
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller reports
            workeroutput[WORKEROUTPUT_KEY] = [leak.to_dict() for leak in local]
            workeroutput[WORKEROUTPUT_KEY + "_lines"] = len(LINES)
        self.leaks.extend(local)
        self.scanned += len(LINES)
        if self.leaks:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if getattr(self.config, "workeroutput", None) is not None:
            return
        if not self.leaks:
            terminalreporter.write_line(f"logscan: no secret in {self.scanned} distinct log lines")
            return
        terminalreporter.section("secrets in log lines", sep="=", red=True, bold=True)
        for leak in self.leaks[:REPORT_LIMIT]:
            terminalreporter.write_line(f"{leak.test}: {leak.kind} logged:")
            terminalreporter.write_line(f"    {leak.line}")
        if len(self.leaks) > REPORT_LIMIT:
            terminalreporter.write_line(f"... and {len(self.leaks) - REPORT_LIMIT} more lines")
        terminalreporter.write_line(f"logscan: {len(self.leaks)} log line(s) hold a secret; the run fails")


def pytest_configure(config: pytest.Config) -> None:
    install()
    config.pluginmanager.register(LogScan(config), "logscan")
