"""`make run` / `python -m infra.localstack`: tokenbroker on one machine, no AWS account, no Docker."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from infra.localstack.net import PortInUse
from infra.localstack.stack import (
    DEFAULT_APP_NAME,
    DEFAULT_PORT,
    DEFAULT_SWEEP_INTERVAL,
    LocalStack,
    StackError,
    StackOptions,
)
from infra.localstack.template import DEFAULT_TEMPLATE, TemplateError


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError("must be 0..65535 (0 = any free port)")
    return value


def _app_name(text: str) -> str:
    """Refused here as a deployed stack would refuse it, rather than pages falling back to no name."""
    from tokenbroker.errors import ConfigurationError  # noqa: PLC0415
    from tokenbroker.pages import Branding  # noqa: PLC0415 - only when the flag is given

    try:
        return Branding.of(text, None, None).app_name
    except ConfigurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: Sequence[str] | None = None) -> StackOptions:
    parser = argparse.ArgumentParser(
        prog="python -m infra.localstack",
        description="Run tokenbroker locally: moto, the provider sandboxes and the HttpApi routes on 127.0.0.1.",
    )
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help="API port (default 3000; 0 = any free)")
    parser.add_argument(
        "--providers", type=Path, metavar="FILE", help="extra catalog entries (may carry client_id/client_secret)"
    )
    parser.add_argument("--no-sandboxes", action="store_true", help="do not start the Workly/Worksection sandboxes")
    parser.add_argument(
        "--sweep-interval",
        type=_positive,
        default=DEFAULT_SWEEP_INTERVAL,
        metavar="SECONDS",
        help=f"run the refresh sweep this often (default {DEFAULT_SWEEP_INTERVAL:g})",
    )
    parser.add_argument("--access-ttl", type=_positive, metavar="SECONDS", help="sandbox access-token lifetime")
    parser.add_argument("--refresh-ttl", type=_positive, metavar="SECONDS", help="sandbox refresh-token lifetime")
    parser.add_argument(
        "--allowed-return-urls",
        default="",
        metavar="URLS",
        help="comma-separated URL prefixes a connect session's return_to may use (default: none)",
    )
    parser.add_argument(
        "--app-name",
        type=_app_name,
        default=DEFAULT_APP_NAME,
        metavar="NAME",
        help=f"the application the connect pages name (the AppName parameter; default {DEFAULT_APP_NAME!r})",
    )
    parser.add_argument("--moto-port", type=_port, default=0, help="port of the moto server (default: any free)")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, help=argparse.SUPPRESS)
    parser.add_argument(
        "--ready-file", type=Path, metavar="FILE", help="write URLs and credentials as JSON here once ready"
    )
    args = parser.parse_args(argv)
    return StackOptions(
        port=args.port,
        providers_file=args.providers,
        sandboxes=not args.no_sandboxes,
        sweep_interval=args.sweep_interval,
        access_ttl=args.access_ttl,
        refresh_ttl=args.refresh_ttl,
        allowed_return_urls=tuple(u.strip() for u in args.allowed_return_urls.split(",") if u.strip()),
        moto_port=args.moto_port,
        template=args.template,
        ready_file=args.ready_file,
        app_name=args.app_name,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            # A second Ctrl-C while stopping: leave now.
            os._exit(130)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    from infra.localstack.banner import banner  # noqa: PLC0415 - after argparse, so --help stays quick

    stack = LocalStack(options, log=sys.stderr)
    try:
        info = stack.start()
    except PortInUse as busy:
        print(f"tokenbroker: {busy}", file=sys.stderr)
        return 1
    except (StackError, TemplateError) as error:
        print(f"tokenbroker: cannot start the local stack: {error}", file=sys.stderr)
        return 1
    try:
        print(banner(info), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        print("stopping ...", file=sys.stderr, flush=True)
        stack.stop()
    print("stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
