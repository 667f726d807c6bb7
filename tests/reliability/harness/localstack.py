"""The local stack (``python -m infra.localstack``) as the security and fuzz tests use it.

``LiveStack`` wraps the running subprocess: signed and unsigned HTTP clients that record every
answer tokenbroker gave, the browser steps of both connect flows, direct access to its moto server
(to read a secret or plant an expired state), and the registry of every secret value seen, for the
final scan of answers and log lines.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import boto3
import requests
from tokenbroker.aws import DynamoTable
from tokenbroker.models import StoredToken

from infra.localstack.banner import READY_PREFIX
from infra.sandboxes import submit_consent
from infra.sandboxes.workly import DEFAULT_CLIENT_SECRET as WORKLY_CLIENT_SECRET
from infra.sandboxes.worksection import DEFAULT_CLIENT_SECRET as WORKSECTION_CLIENT_SECRET
from tests.e2e.stackproc import StackProcess, running_stack
from tests.reliability.harness.sigv4auth import SigV4RequestsAuth

RETURN_PREFIX = "http://127.0.0.1:9/app"
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"
DEMO_ACCOUNT = "demo"


@dataclass
class Answer:
    method: str
    url: str
    status: int
    headers: dict[str, str]
    body: str
    vend: bool = False  # a token route's 200: the one place an access token may appear

    def text(self) -> str:
        return "\n".join([*(f"{k}: {v}" for k, v in self.headers.items()), self.body])


@dataclass
class Secrets:
    """Every secret value the tests handled; the scan looks for each in every answer and log line."""

    never: dict[str, str] = field(default_factory=dict)  # value -> kind: refresh tokens, passwords, codes...
    access: set[str] = field(default_factory=set)  # access tokens: allowed in vend answers only
    bearer_ids: set[str] = field(default_factory=set)  # session ids and states: in answers (links), never in logs
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *values: str | None, kind: str = "secret") -> None:
        with self.lock:
            for value in values:
                if not value or len(value) < 8:
                    continue
                if kind == "access token":
                    self.access.add(value)
                elif kind in ("session id", "state"):
                    self.bearer_ids.add(value)
                else:
                    self.never[value] = kind

    def count(self) -> int:
        with self.lock:
            return len(self.never) + len(self.access) + len(self.bearer_ids)


@dataclass
class LiveStack:
    process: StackProcess
    answers: list[Answer] = field(default_factory=list)
    secrets: Secrets = field(default_factory=Secrets)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The end user's browser on the public routes: keeps the connect flow's binding cookie.
    browser: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        info = self.process.info
        self.auth = SigV4RequestsAuth(info["access_key_id"], info["secret_access_key"], info["region"])
        self.secrets.add(info["secret_access_key"], kind="local AWS secret key")
        self.secrets.add(WORKLY_CLIENT_SECRET, WORKSECTION_CLIENT_SECRET, kind="client secret")
        self.secrets.add(DEMO_PASSWORD, kind="password")

    @property
    def url(self) -> str:
        return self.process.api_url

    @property
    def info(self) -> dict[str, Any]:
        return self.process.info

    # --- HTTP ------------------------------------------------------------------------------------

    def record(self, response: requests.Response, *, vend: bool = False) -> requests.Response:
        headers = {k.lower(): v for k, v in response.headers.items()}
        answer = Answer(response.request.method or "", response.url, response.status_code, headers, response.text)
        self._keep(answer, vend)
        return response

    def record_fuzzed(self, response: Any, *, vend: bool = False) -> None:
        """A schemathesis answer (lower-case headers with list values, bytes content)."""
        headers = {k: ", ".join(v) for k, v in response.headers.items()}
        body = response.content.decode("utf-8", errors="replace")
        request = response.request
        self._keep(Answer(request.method or "", request.url or "", response.status_code, headers, body), vend)

    def _keep(self, answer: Answer, vend: bool) -> None:
        answer.vend = vend and answer.status == 200
        with self.lock:
            self.answers.append(answer)

    def signed(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        vend = path.startswith("/tokens/")
        kwargs.setdefault("timeout", 15)
        response = requests.request(method, self.url + path, auth=self.auth, allow_redirects=False, **kwargs)
        if vend and response.status_code == 200:
            self.secrets.add(response.json().get("access_token"), kind="access token")
        return self.record(response, vend=vend)

    def public(
        self, method: str, path_or_url: str, *, browser: requests.Session | None = None, **kwargs: Any
    ) -> requests.Response:
        """A request from ``browser`` (default: the one end user's browser, with its cookies)."""
        url = path_or_url if path_or_url.startswith("http") else self.url + path_or_url
        kwargs.setdefault("timeout", 15)
        return self.record((browser or self.browser).request(method, url, allow_redirects=False, **kwargs))

    # --- flows -----------------------------------------------------------------------------------

    def connect_link(self, provider: str, connection_id: str, return_to: str | None = None) -> str:
        body: dict[str, Any] = {"provider": provider, "connection_id": connection_id}
        if return_to is not None:
            body["return_to"] = return_to
        response = self.signed("POST", "/connect-sessions", json=body)
        assert response.status_code == 201, response.text
        link = str(response.json()["connect_url"])
        self.secrets.add(urlsplit(link).path.rsplit("/", 1)[-1], kind="session id")
        return link

    def authorize(self, connection_id: str, return_to: str | None = None) -> tuple[str, dict[str, str]]:
        """Worksection up to the provider's redirect back: (callback URL, its query)."""
        start = self.public("GET", self.connect_link("worksection", connection_id, return_to))
        assert start.status_code == 302, start.text
        callback = submit_consent(
            requests.Session(),
            start.headers["Location"],
            email=DEMO_EMAIL,
            password=DEMO_PASSWORD,
            account=DEMO_ACCOUNT,
        )
        query = dict(parse_qsl(urlsplit(callback).query))
        self.secrets.add(query.get("code"), kind="authorization code")
        self.secrets.add(query.get("state"), kind="state")
        return callback, query

    def connect_worksection(self, connection_id: str) -> requests.Response:
        callback, _ = self.authorize(connection_id)
        done = self.public("GET", callback)
        assert done.status_code in (200, 302), done.text
        self.learn_secret("worksection", connection_id)
        return done

    def connect_workly(self, connection_id: str, *, remember: bool = False) -> requests.Response:
        link = self.connect_link("workly", connection_id)
        assert self.public("GET", link).status_code == 200  # the browser opens the link first
        form = {"action": "login", "email": DEMO_EMAIL, "password": DEMO_PASSWORD}
        if remember:
            form["remember"] = "yes"
        done = self.public("POST", link, data=form, headers={"Origin": "null"})
        assert done.status_code in (200, 302), done.text
        self.learn_secret("workly", connection_id)
        return done

    # --- the stack's AWS ---------------------------------------------------------------------------

    def aws(self, service: str) -> Any:
        info = self.info
        session = boto3.Session(
            aws_access_key_id=info["access_key_id"],
            aws_secret_access_key=info["secret_access_key"],
            region_name=info["region"],
        )
        return session.client(service, endpoint_url=info["moto_url"])  # type: ignore[call-overload]

    def table(self) -> DynamoTable:
        return DynamoTable(client=self.aws("dynamodb"), name=str(self.info["table_name"]))

    def stored(self, provider: str, connection_id: str) -> StoredToken:
        name = f"tokenbroker/{self.info['stage']}/{provider}/{connection_id}"
        value = self.aws("secretsmanager").get_secret_value(SecretId=name)["SecretString"]
        return StoredToken.from_json(cast("str", value))

    def learn_secret(self, provider: str, connection_id: str) -> StoredToken:
        stored = self.stored(provider, connection_id)
        self.secrets.add(stored.token.refresh_token, kind="refresh token")
        self.secrets.add(stored.token.access_token, kind="access token")
        if stored.login is not None:
            self.secrets.add(stored.login.password, kind="password")
        return stored

    # --- the scan ----------------------------------------------------------------------------------

    def log_lines(self) -> list[str]:
        """What the running stack wrote: handler logs (stdout) and the gateway's (stderr). The start
        banner before the ready line is left out: it prints the sandboxes' demo login on purpose."""
        stdout = list(self.process.stdout)
        ready = next((i for i, line in enumerate(stdout) if line.startswith(READY_PREFIX)), -1)
        return [*stdout[ready + 1 :], *self.process.stderr]

    def leaks(self, answers: Iterable[Answer] | None = None, lines: Iterable[str] | None = None) -> list[str]:
        """Where a secret shows up that must not: '<secret kind> in <place>' (values never printed)."""
        found: list[str] = []
        with self.secrets.lock:
            never, access, ids = dict(self.secrets.never), set(self.secrets.access), set(self.secrets.bearer_ids)
        for answer in self.answers if answers is None else answers:
            text = answer.text()
            where = f"the answer to {answer.method} {_route_of(urlsplit(answer.url).path)}"
            found += [f"{kind} in {where}" for secret, kind in never.items() if secret in text]
            if not answer.vend and any(secret in text for secret in access):
                found.append(f"an access token in {where}")
        for number, line in enumerate(self.log_lines() if lines is None else lines):
            found += [f"{kind} in log line {number}" for secret, kind in never.items() if secret in line]
            if any(secret in line for secret in access):
                found.append(f"an access token in log line {number}")
            if any(secret in line for secret in ids):
                found.append(f"a session id or state in log line {number}")
        return found


def _route_of(path: str) -> str:
    """The route shape of a path, without the ids (which may be bearer secrets)."""
    parts = path.strip("/").split("/")
    return "/" + "/".join(parts[:2]) + ("/..." if len(parts) > 2 else "")


@contextmanager
def live_stack(workdir: Path) -> Iterator[LiveStack]:
    args = ["--sweep-interval", "3600", "--allowed-return-urls", RETURN_PREFIX]
    with running_stack(args, workdir) as process:
        yield LiveStack(process)
