"""What the local stack prints on start: where everything is and what to type next."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from infra.localstack.stack import DEMO_ACCOUNT, StackInfo

READY_PREFIX = "tokenbroker local stack ready:"


def _cli() -> str:
    """The ``tokenbroker`` console script of this interpreter's venv, or the bare name on PATH."""
    beside = Path(sys.executable).with_name("tokenbroker")
    if beside.exists():
        on_path = shutil.which("tokenbroker")
        if on_path is None or Path(on_path).resolve() != beside.resolve():
            return str(Path(beside).relative_to(Path.cwd())) if beside.is_relative_to(Path.cwd()) else str(beside)
    return "tokenbroker"


def banner(info: StackInfo) -> str:
    creds = info.credentials
    api = info.api_url
    user = f"{creds.access_key_id}:{creds.secret_access_key}"
    sigv4 = f'curl -sS --aws-sigv4 "aws:amz:{creds.region}:execute-api" --user {shlex.quote(user)}'
    cli = _cli()
    session = shlex.quote('{"provider": "worksection", "connection_id": "demo"}')
    lines = [
        "",
        f'tokenbroker is running locally (stage "{info.stage}", table {info.table_name})',
        "",
        f"  API (the HttpApi routes)   {api}",
        f"  OAuth redirect URI         {api}/callback/<provider>",
        f"  moto (DynamoDB, SQS, ...)  {info.moto_url}",
    ]
    for sandbox in info.sandboxes:
        lines.append(f"  {sandbox.name + ' sandbox':<26} {sandbox.base_url}")
    lines += [
        f"  providers                  {', '.join(info.providers)}",
        f"  refresh sweep              every {info.sweep_interval:g} s, queue polled into the worker",
        "",
        "Local AWS credentials (IAM routes accept requests signed with these, and nothing else;",
        "the tokenbroker CLI uses them by itself for a 127.0.0.1 API):",
        f"  export AWS_ACCESS_KEY_ID={creds.access_key_id} AWS_SECRET_ACCESS_KEY={creds.secret_access_key}"
        f" AWS_DEFAULT_REGION={creds.region}",
        "  unset AWS_SESSION_TOKEN AWS_PROFILE",
    ]
    if info.demo_users:
        users = ", ".join(f"{email} / {password}" for email, password in info.demo_users)
        lines += ["", f"Sandbox users (Workly and Worksection, account {DEMO_ACCOUNT!r}): {users}"]
    lines += [
        "",
        "Try it:",
        "  1. Create a connect link for an end user:",
        f"     {sigv4} \\",
        f"       -H 'Content-Type: application/json' -d {session} {api}/connect-sessions",
        f"     (or: {cli} --api-url {api} connect-link worksection demo)",
        "  2. Open the connect_url from the answer in a browser and sign in"
        + (f" as {info.demo_users[0][0]} / {info.demo_users[0][1]}." if info.demo_users else "."),
        "  3. Fetch a token (refreshed first if it has less than min_ttl seconds left):",
        f"     {sigv4} '{api}/tokens/worksection/demo?min_ttl=60'",
        f"     {cli} --api-url {api} token worksection demo",
        "     python (with the exports above):",
        "       from tokenbroker.client import TokenBrokerClient",
        f"       TokenBrokerClient({api!r}).get_token('worksection', 'demo').access_token",
        f"  4. Inspect or disconnect: {cli} --api-url {api} connections list | show worksection demo"
        " | delete worksection demo",
        "",
        "Ctrl-C stops everything.",
        f"{READY_PREFIX} {api}",
    ]
    return "\n".join(lines)
