"""Run both sandboxes until Ctrl-C: ``python -m infra.sandboxes --workly-port 0 --worksection-port 0``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from infra.sandboxes.server import SandboxServer
from infra.sandboxes.workly import WorklySandbox
from infra.sandboxes.worksection import WorksectionSandbox


def _user(value: str) -> tuple[str, str]:
    email, sep, password = value.partition(":")
    if not sep or not email or not password:
        raise argparse.ArgumentTypeError("expected EMAIL:PASSWORD")
    return email, password


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infra.sandboxes", description=__doc__)
    parser.add_argument("--workly-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--worksection-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--no-workly", action="store_true")
    parser.add_argument("--no-worksection", action="store_true")
    parser.add_argument("--access-ttl", type=float, help="access token lifetime in seconds (both)")
    parser.add_argument("--refresh-ttl", type=float, help="refresh token lifetime in seconds (both)")
    parser.add_argument("--workly-client-id", default=None)
    parser.add_argument("--workly-client-secret", default=None)
    parser.add_argument("--worksection-client-id", default=None)
    parser.add_argument("--worksection-client-secret", default=None)
    parser.add_argument(
        "--account-url-template",
        default=None,
        help="Worksection account_url, e.g. 'https://{account}.worksection.com' or '{url}'",
    )
    parser.add_argument(
        "--user",
        type=_user,
        action="append",
        default=None,
        metavar="EMAIL:PASSWORD",
        help="seed a user in both sandboxes (repeatable; default demo@example.com:demo-password)",
    )
    parser.add_argument("--accounts", default="demo", help="comma-separated Worksection accounts of seeded users")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> list[SandboxServer]:
    ttl: dict[str, Any] = {k: v for k, v in (("access_ttl", args.access_ttl), ("refresh_ttl", args.refresh_ttl)) if v}
    users = args.user or [("demo@example.com", "demo-password")]
    accounts = tuple(a.strip() for a in args.accounts.split(",") if a.strip())
    sandboxes: list[SandboxServer] = []
    if not args.no_workly:
        creds = _credentials(args.workly_client_id, args.workly_client_secret)
        workly = WorklySandbox(port=args.workly_port, verbose=args.verbose, **creds, **ttl)
        for email, password in users:
            workly.add_user(email, password)
        sandboxes.append(workly)
    if not args.no_worksection:
        creds = _credentials(args.worksection_client_id, args.worksection_client_secret)
        extra: dict[str, Any] = {"account_url_template": args.account_url_template} if args.account_url_template else {}
        worksection = WorksectionSandbox(port=args.worksection_port, verbose=args.verbose, **creds, **ttl, **extra)
        for email, password in users:
            worksection.add_user(email, password, accounts=accounts)
        sandboxes.append(worksection)
    return sandboxes


def _credentials(client_id: str | None, client_secret: str | None) -> dict[str, Any]:
    values = {"client_id": client_id, "client_secret": client_secret}
    return {k: v for k, v in values.items() if v}


def describe(sandbox: SandboxServer) -> str:
    if isinstance(sandbox, WorklySandbox):
        return f"workly       base_url={sandbox.base_url} client_id={sandbox.client_id}"
    if isinstance(sandbox, WorksectionSandbox):
        return (
            f"worksection  authorize_url={sandbox.authorize_url} token_url={sandbox.token_url} "
            f"refresh_url={sandbox.refresh_url} userinfo_url={sandbox.userinfo_url} client_id={sandbox.client_id}"
        )
    return f"{sandbox.provider} {sandbox.url}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sandboxes = build(args)
    try:
        for sandbox in sandboxes:
            sandbox.start()
            print(describe(sandbox), flush=True)
        print("control API: POST <root>/_sandbox/faults, GET <root>/_sandbox/calls; Ctrl-C stops", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        for sandbox in sandboxes:
            sandbox.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
