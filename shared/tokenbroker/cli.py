"""The ``tokenbroker`` command: connect links, connections, vending and forced refreshes over the API.

Works against the local stack (``make run``, default ``http://127.0.0.1:3000``) or a deployed stack
(its ``ApiUrl`` output, or ``TOKENBROKER_API_URL``). Requests are SigV4-signed by the consumer SDK
with the caller's AWS credentials; for a loopback API the local stack's credentials are used
instead, so a developer's real credentials are never offered to a local endpoint.

Output is JSON on stdout (``token --token-only`` prints the bare access token for ``$(...)``);
errors go to stderr as ``tokenbroker: <code>: <message>`` with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

import boto3

from tokenbroker.errors import TokenBrokerError

API_URL_ENV = "TOKENBROKER_API_URL"
DEFAULT_API_URL = "http://127.0.0.1:3000"
# What the local stack accepts on its IAM routes (infra/localstack reads the same variables).
LOCAL_ACCESS_KEY_ID_ENV = "TOKENBROKER_LOCAL_ACCESS_KEY_ID"
LOCAL_SECRET_ACCESS_KEY_ENV = "TOKENBROKER_LOCAL_SECRET_ACCESS_KEY"  # noqa: S105 - a variable name
LOCAL_REGION_ENV = "TOKENBROKER_LOCAL_REGION"
LOCAL_DEFAULTS = ("testing", "testing", "us-east-1")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback(api_url: str) -> bool:
    return (urlsplit(api_url).hostname or "") in LOOPBACK_HOSTS


def local_session(environ: Mapping[str, str]) -> boto3.Session:
    """A boto3 session holding the local stack's credentials (moto's convention unless overridden)."""
    key_id, secret, region = LOCAL_DEFAULTS
    return boto3.Session(
        aws_access_key_id=environ.get(LOCAL_ACCESS_KEY_ID_ENV) or key_id,
        aws_secret_access_key=environ.get(LOCAL_SECRET_ACCESS_KEY_ENV) or secret,
        region_name=environ.get(LOCAL_REGION_ENV) or region,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenbroker",
        description="Talk to a tokenbroker API: connect links, connections, tokens.",
    )
    parser.add_argument(
        "--api-url",
        default=None,
        help=f"the API (default ${API_URL_ENV} or {DEFAULT_API_URL}); a deployed stack's ApiUrl output",
    )
    parser.add_argument("--region", help="region of the API (default: from the URL or your AWS configuration)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    link = commands.add_parser("connect-link", help="create a one-time connect link for an end user")
    _key_arguments(link)
    link.add_argument("--return-to", help="where the browser goes afterwards (must be an allowed return URL)")
    link.add_argument("--scope", action="append", dest="scopes", help="requested scope (repeatable)")
    link.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="stored with the connection")
    link.add_argument("--end-user-id", help="your id for the end user the link is meant for (up to 256 characters)")
    link.add_argument(
        "--confirm",
        action="store_true",
        help="keep the grant pending until `tokenbroker confirm SESSION_ID END_USER_ID` (needs --end-user-id)",
    )
    link.set_defaults(run=_connect_link)

    confirm = commands.add_parser(
        "confirm", help="confirm mode: the end user who completed a connect session is the one it was meant for"
    )
    confirm.add_argument("session_id", help="the session_id that connect-link printed")
    confirm.add_argument("end_user_id", help="the end user signed in to your application")
    confirm.set_defaults(run=_confirm)

    connections = commands.add_parser("connections", help="list, show or delete connections")
    actions = connections.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every connection of a provider")
    listing.add_argument("provider")
    listing.set_defaults(run=_list)
    show = actions.add_parser("show", help="status and metadata of one connection (never tokens)")
    _key_arguments(show)
    show.set_defaults(run=_show)
    delete = actions.add_parser("delete", help="disconnect: the token secret is scheduled for deletion")
    _key_arguments(delete)
    delete.set_defaults(run=_delete)

    token = commands.add_parser("token", help="vend a valid access token")
    _key_arguments(token)
    token.add_argument("--min-ttl", type=int, default=60, help="refresh first if fewer seconds remain (default 60)")
    token.add_argument("--token-only", action="store_true", help="print only the access token")
    token.set_defaults(run=_token)

    refresh = commands.add_parser("refresh", help="force a refresh now (compare-and-refresh)")
    _key_arguments(refresh)
    refresh.add_argument(
        "--rejected-token", help="refresh only if this token is still the current one (else get the newer one)"
    )
    refresh.add_argument("--token-only", action="store_true", help="print only the new access token")
    refresh.set_defaults(run=_refresh)
    return parser


def _key_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("provider", help="e.g. worksection, workly")
    parser.add_argument("connection_id", help="your id for the connection, [A-Za-z0-9._-]{1,128}, not '.' or '..'")


# --- commands ------------------------------------------------------------------------------------

Client = Any  # tokenbroker.client.TokenBrokerClient, imported lazily (see main)
Command = Callable[[Client, argparse.Namespace], Any]


def _connect_link(client: Client, args: argparse.Namespace) -> Any:
    metadata: dict[str, str] = {}
    for item in args.metadata:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _usage(f"--metadata expects KEY=VALUE, got {item[:40]!r}")
        metadata[key] = value
    link = client.create_connect_session(
        args.provider,
        args.connection_id,
        return_to=args.return_to,
        scopes=args.scopes,
        metadata=metadata or None,
        end_user_id=args.end_user_id,
        confirm=args.confirm,
    )
    return {"connect_url": link.connect_url, "expires_at": link.expires_at, "session_id": link.session_id}


def _confirm(client: Client, args: argparse.Namespace) -> Any:
    return dict(client.confirm_connect_session(args.session_id, args.end_user_id).raw)


def _list(client: Client, args: argparse.Namespace) -> Any:
    return {"connections": [dict(info.raw) for info in client.connections(args.provider)]}


def _show(client: Client, args: argparse.Namespace) -> Any:
    return dict(client.connection(args.provider, args.connection_id).raw)


def _delete(client: Client, args: argparse.Namespace) -> Any:
    client.delete_connection(args.provider, args.connection_id)
    return {"deleted": True, "provider": args.provider, "connection_id": args.connection_id}


def _token_answer(token: Any, args: argparse.Namespace) -> Any:
    if args.token_only:
        return token.access_token
    return {
        "access_token": token.access_token,
        "token_type": token.token_type,
        "expires_at": token.expires_at,
        "expires_in": token.expires_in,
        "scopes": list(token.scopes),
        "generation": token.generation,
        "metadata": dict(token.metadata),
    }


def _token(client: Client, args: argparse.Namespace) -> Any:
    return _token_answer(client.get_token(args.provider, args.connection_id, min_ttl=args.min_ttl), args)


def _refresh(client: Client, args: argparse.Namespace) -> Any:
    return _token_answer(client.refresh_rejected(args.provider, args.connection_id, args.rejected_token), args)


class _UsageError(Exception):
    pass


def _usage(message: str) -> _UsageError:
    return _UsageError(message)


# --- entry point ---------------------------------------------------------------------------------


def make_client(api_url: str, region: str | None, environ: Mapping[str, str]) -> Client:
    # Imported here so that `tokenbroker --help` does not pay for requests and botocore's signer.
    from tokenbroker.client import TokenBrokerClient  # noqa: PLC0415

    if is_loopback(api_url):
        session = local_session(environ)
        return TokenBrokerClient(api_url, session=session, region=region or session.region_name)
    return TokenBrokerClient(api_url, region=region)


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    env = os.environ if environ is None else environ
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    api_url = args.api_url or env.get(API_URL_ENV) or DEFAULT_API_URL
    run: Command = args.run
    try:
        result = run(make_client(api_url, args.region, env), args)
    except _UsageError as error:
        print(f"tokenbroker: {error}", file=err)
        return 2
    except TokenBrokerError as error:
        print(f"tokenbroker: {error.code}: {error}", file=err)
        if error.code == "forbidden" and is_loopback(api_url):
            print(
                f"hint: the local stack accepts requests signed with ${LOCAL_ACCESS_KEY_ID_ENV}/"
                f"${LOCAL_SECRET_ACCESS_KEY_ENV} (default testing/testing)",
                file=err,
            )
        return 1
    if isinstance(result, str):
        print(result, file=out)
    else:
        print(json.dumps(result, indent=2, sort_keys=True), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
