"""The whole system on one machine: moto, resources from template.yaml, sandboxes, gateway, sweep, poller.

``LocalStack.start()`` brings the parts up in dependency order and, if any step fails, takes down
what already runs; ``stop()`` takes everything down in reverse order. All of it lives in this one
process: the handlers run in-process exactly as their Lambda functions would, configured through
the environment the template gives them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

import boto3
import yaml
from botocore.config import Config
from tokenbroker.cli import LOCAL_ACCESS_KEY_ID_ENV, LOCAL_DEFAULTS, LOCAL_REGION_ENV, LOCAL_SECRET_ACCESS_KEY_ENV
from tokenbroker.schedule import SchedulePolicy

from infra.localstack.functions import LambdaHandler, load_handler
from infra.localstack.gateway import Gateway, bind_routes
from infra.localstack.moto import MotoServer
from infra.localstack.net import LOOPBACK, LoopbackServer, bind_loopback
from infra.localstack.poller import QueuePoller
from infra.localstack.resources import AwsApis, CreatedResources, create_resources, seed_app_secret
from infra.localstack.scheduler import Scheduler
from infra.localstack.sigv4 import LocalCredentials, SigV4Verifier
from infra.localstack.template import DEFAULT_TEMPLATE, Resolver, TemplateError, load_template
from infra.localstack.topology import Topology, read_topology

if TYPE_CHECKING:
    from infra.sandboxes import WorklySandbox, WorksectionSandbox

STAGE = "local"
STACK_NAME = "tokenbroker-local"
DEFAULT_PORT = 3000
DEFAULT_SWEEP_INTERVAL = 10.0
# AppName has no Default in the template (a deployed stack must name its application).
DEFAULT_APP_NAME = "Example App"
# The sandboxes' own standalone defaults (python -m infra.sandboxes), so both tools agree.
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"
DEMO_ACCOUNT = "demo"
MAX_WORKER_CONCURRENCY = 4
# Variables that could send this process's AWS calls anywhere but the local moto server.
_FOREIGN_AWS_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


class StackError(Exception):
    """The stack cannot start; the message says what to change."""


@dataclass(frozen=True, slots=True)
class StackOptions:
    port: int = DEFAULT_PORT
    providers_file: Path | None = None
    sandboxes: bool = True
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL
    access_ttl: float | None = None
    refresh_ttl: float | None = None
    allowed_return_urls: tuple[str, ...] = ()
    moto_port: int = 0
    template: Path = DEFAULT_TEMPLATE
    ready_file: Path | None = None
    app_name: str = DEFAULT_APP_NAME


@dataclass(frozen=True, slots=True)
class SandboxInfo:
    name: str
    url: str
    base_url: str
    client_id: str


@dataclass(slots=True)
class StackInfo:
    """What a person (the banner) or a program (``--ready-file``) needs to use the running stack."""

    api_url: str
    moto_url: str
    credentials: LocalCredentials
    stage: str
    table_name: str
    sweep_interval: float
    sandboxes: list[SandboxInfo] = field(default_factory=list)
    demo_users: list[tuple[str, str]] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "moto_url": self.moto_url,
            "region": self.credentials.region,
            "access_key_id": self.credentials.access_key_id,
            "secret_access_key": self.credentials.secret_access_key,
            "stage": self.stage,
            "table_name": self.table_name,
            "sweep_interval": self.sweep_interval,
            "sandboxes": {
                s.name: {"url": s.url, "base_url": s.base_url, "client_id": s.client_id} for s in self.sandboxes
            },
            "demo_users": [{"email": email, "password": password} for email, password in self.demo_users],
            "providers": self.providers,
        }


def local_credentials(environ: MutableMapping[str, str]) -> LocalCredentials:
    """The credentials IAM routes accept: moto's convention unless TOKENBROKER_LOCAL_* override them.

    Dedicated variable names, not AWS_*: a developer's real credentials must never be adopted,
    printed in the banner or accepted by the local gateway.
    """
    key_id, secret, region = LOCAL_DEFAULTS
    return LocalCredentials(
        access_key_id=environ.get(LOCAL_ACCESS_KEY_ID_ENV) or key_id,
        secret_access_key=environ.get(LOCAL_SECRET_ACCESS_KEY_ENV) or secret,
        region=environ.get(LOCAL_REGION_ENV) or region,
    )


class LocalStack:
    def __init__(
        self,
        options: StackOptions,
        *,
        environ: MutableMapping[str, str] | None = None,
        log: TextIO | None = None,
    ) -> None:
        self.options = options
        # --sweep-interval is the local schedule: the handlers build the same SchedulePolicy from it.
        self._schedule = SchedulePolicy(options.sweep_interval)
        self._environ = os.environ if environ is None else environ
        self._log = log
        self.credentials = local_credentials(self._environ)
        self._stops: list[Callable[[], None]] = []
        self._workdir: Path | None = None
        self._moto: MotoServer | None = None
        self._gateway: LoopbackServer | None = None
        self._workly: WorklySandbox | None = None
        self._worksection: WorksectionSandbox | None = None
        self.resources = CreatedResources()
        self.info: StackInfo | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> StackInfo:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything that started, newest first; safe to call twice."""
        while self._stops:
            stop = self._stops.pop()
            try:
                stop()
            except Exception as error:  # keep stopping the rest
                self._say(f"[stack] error while stopping: {type(error).__name__}: {error}")

    def _start(self) -> StackInfo:
        options = self.options
        # Bind the public port first: a second `make run` fails at once with a clear message.
        gateway_socket = bind_loopback(options.port)
        self._stops.append(gateway_socket.close)
        self._workdir = Path(tempfile.mkdtemp(prefix="tokenbroker-local-"))
        self._stops.append(lambda: shutil.rmtree(cast("Path", self._workdir), ignore_errors=True))
        api_url = f"http://{LOOPBACK}:{gateway_socket.getsockname()[1]}"

        template = load_template(options.template)
        self._moto = MotoServer(options.moto_port).start()
        self._stops.append(self._moto.stop)
        self._use_local_aws(self._moto.url)
        apis = self._apis()

        resolver = Resolver(
            template,
            parameters=self._parameters(template, api_url),
            region=self.credentials.region,
            account_id=self.credentials.account_id,
            stack_name=STACK_NAME,
        )
        self.resources = create_resources(template, resolver, apis, template_path=options.template)
        table_name = self._table_name()

        sandboxes = self._start_sandboxes() if options.sandboxes else []
        providers_file = self._providers_file(apis)
        topology = read_topology(template, options.template.parent)
        self._configure_handlers(topology, resolver, api_url=api_url, table_name=table_name, providers=providers_file)

        handlers: dict[str, LambdaHandler] = {}
        routes = bind_routes(topology, handlers)
        verifier = SigV4Verifier(self.credentials)
        self._gateway = LoopbackServer(Gateway(routes, verifier, log=self._log), gateway_socket, name="gateway")
        self._start_schedules(topology, handlers)
        self._start_pollers(topology, handlers, resolver, apis)
        self._gateway.start()
        self._stops.append(self._gateway.stop)

        self.info = StackInfo(
            api_url=api_url,
            moto_url=self._moto.url,
            credentials=self.credentials,
            stage=STAGE,
            table_name=table_name,
            sweep_interval=options.sweep_interval,
            sandboxes=sandboxes,
            demo_users=[(DEMO_EMAIL, DEMO_PASSWORD)] if sandboxes else [],
            providers=self._provider_names(),
        )
        if options.ready_file is not None:
            options.ready_file.write_text(json.dumps(self.info.to_dict(), indent=2), encoding="utf-8")
        return self.info

    # --- AWS -----------------------------------------------------------------------------------

    def _use_local_aws(self, moto_url: str) -> None:
        """Point every boto3 client of this process (the handlers' too) at moto, with local credentials."""
        env = self._environ
        for name in list(env):
            if name in _FOREIGN_AWS_VARIABLES or name.startswith("AWS_ENDPOINT_URL_"):
                del env[name]
        env.update(
            {
                "AWS_ENDPOINT_URL": moto_url,
                "AWS_ACCESS_KEY_ID": self.credentials.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.credentials.secret_access_key,
                "AWS_DEFAULT_REGION": self.credentials.region,
                "AWS_REGION": self.credentials.region,
                # No shared config/credentials files and no instance metadata: nothing real leaks in.
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )

    def _apis(self) -> AwsApis:
        assert self._moto is not None
        session = boto3.Session(
            aws_access_key_id=self.credentials.access_key_id,
            aws_secret_access_key=self.credentials.secret_access_key,
            region_name=self.credentials.region,
        )
        config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=10)
        url = self._moto.url
        return AwsApis(
            dynamodb=session.client("dynamodb", endpoint_url=url, config=config),
            sqs=session.client("sqs", endpoint_url=url, config=config),
            events=session.client("events", endpoint_url=url, config=config),
            secretsmanager=session.client("secretsmanager", endpoint_url=url, config=config),
        )

    def _parameters(self, template: dict[str, Any], api_url: str) -> dict[str, str]:
        """Values for the template parameters the local stack decides; the rest keep their Default."""
        wanted = {
            "Stage": STAGE,
            "AllowedReturnUrls": ",".join(self.options.allowed_return_urls),
            "PublicBaseUrl": api_url,
            "KmsKeyId": "",
            "AppName": self.options.app_name,
        }
        declared = template.get("Parameters") or {}
        return {name: value for name, value in wanted.items() if name in declared}

    def _table_name(self) -> str:
        tables = self.resources.tables
        if not tables:
            raise StackError(f"{self.options.template} declares no AWS::DynamoDB::Table")
        return tables.get("Table") or next(iter(tables.values()))

    # --- sandboxes and providers ---------------------------------------------------------------

    def _start_sandboxes(self) -> list[SandboxInfo]:
        from infra.sandboxes import WorklySandbox, WorksectionSandbox  # noqa: PLC0415 - not needed with --no-sandboxes

        ttl: dict[str, Any] = {}
        if self.options.access_ttl is not None:
            ttl["access_ttl"] = self.options.access_ttl
        if self.options.refresh_ttl is not None:
            ttl["refresh_ttl"] = self.options.refresh_ttl
        workly = WorklySandbox(**ttl)
        workly.add_user(DEMO_EMAIL, DEMO_PASSWORD)
        workly.start()
        self._stops.append(workly.stop)
        # account_url = the sandbox itself, so a consumer can call "{account_url}/api/oauth2" locally.
        worksection = WorksectionSandbox(account_url_template="{url}", **ttl)
        worksection.add_user(DEMO_EMAIL, DEMO_PASSWORD, accounts=(DEMO_ACCOUNT,))
        worksection.start()
        self._stops.append(worksection.stop)
        self._workly, self._worksection = workly, worksection
        return [
            SandboxInfo("workly", workly.url, workly.base_url, workly.client_id),
            SandboxInfo("worksection", worksection.url, worksection.url, worksection.client_id),
        ]

    def _providers_file(self, apis: AwsApis) -> Path | None:
        """One override file (TOKENBROKER_PROVIDERS_FILE) = sandbox URLs, then the user's --providers file.

        App credentials go to Secrets Manager, where deployed stacks keep them too.
        """
        overrides: dict[str, dict[str, Any]] = {}
        secrets: dict[str, tuple[str, str]] = {}
        if self._workly is not None and self._worksection is not None:
            from infra.sandboxes.catalog import catalog_overrides  # noqa: PLC0415

            overrides.update(
                catalog_overrides(workly=self._workly, worksection=self._worksection, with_credentials=False)
            )
            secrets["workly"] = (self._workly.client_id, self._workly.client_secret)
            secrets["worksection"] = (self._worksection.client_id, self._worksection.client_secret)
        if self.options.providers_file is not None:
            # Checked alone first, so that a mistake is reported against the user's own file.
            self._check_catalog(self.options.providers_file)
            for name, given in _read_providers_file(self.options.providers_file).items():
                entry = dict(given)
                client_id, client_secret = entry.pop("client_id", None), entry.pop("client_secret", None)
                if client_id is not None:
                    secrets[name] = (str(client_id), str(client_secret or ""))
                overrides[name] = {**overrides.get(name, {}), **entry}
        for name, (client_id, client_secret) in secrets.items():
            seed_app_secret(
                apis.secretsmanager, stage=STAGE, provider=name, client_id=client_id, client_secret=client_secret
            )
        if not overrides:
            return None
        assert self._workdir is not None
        path = self._workdir / "providers.local.yaml"
        path.write_text(yaml.safe_dump({"providers": overrides}, sort_keys=False), encoding="utf-8")
        self._check_catalog(path)
        return path

    @staticmethod
    def _check_catalog(path: Path) -> None:
        """Fail at start, not at the first request, when the merged catalog is invalid."""
        from tokenbroker.errors import TokenBrokerError  # noqa: PLC0415 - keeps `--help` fast
        from tokenbroker.providers.catalog import Catalog  # noqa: PLC0415

        try:
            Catalog.load(path)
        except TokenBrokerError as error:
            raise StackError(f"the provider catalog is invalid: {error}") from None

    def _provider_names(self) -> list[str]:
        from tokenbroker.providers.catalog import Catalog  # noqa: PLC0415

        return list(Catalog.load(self._environ.get("TOKENBROKER_PROVIDERS_FILE") or None).names())

    # --- handlers ------------------------------------------------------------------------------

    def _configure_handlers(
        self, topology: Topology, resolver: Resolver, *, api_url: str, table_name: str, providers: Path | None
    ) -> None:
        """The handlers' environment: what the template gives each function, then the local values."""
        env: dict[str, str] = {}
        for function in topology.functions.values():
            try:
                resolved = resolver.resolve(dict(function.environment))
            except TemplateError as error:
                raise StackError(f"{function.logical_id} environment: {error}") from None
            env.update({name: str(value) for name, value in resolved.items()})
        env.update(
            {
                "STAGE": STAGE,
                "TABLE_NAME": table_name,
                "ALLOWED_RETURN_URLS": ",".join(self.options.allowed_return_urls),
                "PUBLIC_BASE_URL": api_url,
                # The same policy as on AWS, fed the local interval (seconds: no rate() is that short);
                # it wins over the template's REFRESH_SCHEDULE, and horizon and slack derive from it.
                "REFRESH_INTERVAL_SECONDS": repr(self._schedule.interval),
            }
        )
        if self.resources.buses:
            env["EVENT_BUS_NAME"] = next(iter(self.resources.buses.values()))
        queue = self._refresh_queue(topology, resolver)
        if queue is not None:
            env["REFRESH_QUEUE_URL"] = queue
        if providers is not None:
            env["TOKENBROKER_PROVIDERS_FILE"] = str(providers)
        else:
            self._environ.pop("TOKENBROKER_PROVIDERS_FILE", None)
        # No X-Ray daemon and no CloudWatch locally: keep the console for logs people read.
        self._environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
        self._environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
        self._environ.update(env)

    def _refresh_queue(self, topology: Topology, resolver: Resolver) -> str | None:
        """The URL of the queue the worker consumes (what the sweep must enqueue into)."""
        for source in topology.queue_sources:
            arn = resolver.resolve(source.queue)
            try:
                return self.resources.queue_by_arn(str(arn)).url
            except KeyError:
                continue
        return None

    def _handler(self, topology: Topology, handlers: dict[str, LambdaHandler], logical_id: str) -> LambdaHandler:
        if logical_id not in handlers:
            function = topology.functions[logical_id]
            handlers[logical_id] = load_handler(function.code_dir, function.handler, unique_name=logical_id)
        return handlers[logical_id]

    def _start_schedules(self, topology: Topology, handlers: dict[str, LambdaHandler]) -> None:
        for schedule in topology.schedules:
            scheduler = Scheduler(
                topology.functions[schedule.function],
                self._handler(topology, handlers, schedule.function),
                interval=self._schedule.interval,
                region=self.credentials.region,
                account_id=self.credentials.account_id,
            )
            scheduler.start()
            self._stops.append(scheduler.stop)

    def _start_pollers(
        self, topology: Topology, handlers: dict[str, LambdaHandler], resolver: Resolver, apis: AwsApis
    ) -> None:
        for source in topology.queue_sources:
            queue = self.resources.queue_by_arn(str(resolver.resolve(source.queue)))
            concurrency = resolver.resolve(source.max_concurrency) if source.max_concurrency is not None else 2
            poller = QueuePoller(
                topology.functions[source.function],
                self._handler(topology, handlers, source.function),
                queue,
                apis.sqs,
                region=self.credentials.region,
                account_id=self.credentials.account_id,
                batch_size=source.batch_size,
                batching_window=source.batching_window,
                report_batch_item_failures=source.report_batch_item_failures,
                concurrency=max(1, min(MAX_WORKER_CONCURRENCY, int(concurrency))),
            )
            poller.start()
            self._stops.append(poller.stop)

    def _say(self, text: str) -> None:
        if self._log is not None:
            print(text, file=self._log, flush=True)


def _read_providers_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise StackError(f"cannot read --providers {path}: {error.strerror}") from None
    except yaml.YAMLError:
        raise StackError(f"--providers {path} is not valid YAML") from None
    providers = (document or {}).get("providers") if isinstance(document, dict) else None
    if not isinstance(providers, dict) or not all(isinstance(v, dict) for v in providers.values()):
        raise StackError(f"--providers {path} must look like: providers: {{<name>: {{<catalog fields>}}}}")
    return {str(name): entry for name, entry in providers.items()}
