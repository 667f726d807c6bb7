"""The system under measurement, in-process, against a moto server in a child process.

Resources come from template.yaml (the local stack's own ``create_resources``), the Worksection
sandbox stands in for the provider, and ``tokenbroker.wiring.Runtime`` builds every collaborator
exactly as the handlers do, except that its ``AwsClients`` are aimed at the moto server
explicitly (so an ``AwsCallCounter`` can watch them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TextIO

import boto3
import yaml
from tokenbroker.aws import AwsClients, default_config
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import StoredToken
from tokenbroker.repository import initial_schedule
from tokenbroker.settings import Settings
from tokenbroker.stores.connections import DEFAULT_DUE_SHARDS, connection_pk, due_shard
from tokenbroker.tokens import TokenSet
from tokenbroker.wiring import Runtime

from infra.bench.moto_process import MotoProcess
from infra.localstack.resources import AwsApis, CreatedResources, create_resources, seed_app_secret
from infra.localstack.template import DEFAULT_TEMPLATE, Resolver, load_template
from infra.localstack.topology import Topology, read_topology
from infra.sandboxes import WorksectionSandbox, catalog_overrides

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
STAGE = "bench"
PROVIDER = "worksection"
EMAIL = "bench@example.com"
PASSWORD = "bench-password-1"
DAY = 86_400.0
# Variables that could send the bench's AWS calls anywhere but its own moto server.
FOREIGN_AWS_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    # As the local stack runs handlers: no X-Ray daemon here.
    "POWERTOOLS_TRACE_DISABLED": "true",
}


def isolate_aws_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Fake credentials, one region, nothing that could reach a real account."""
    env = os.environ if environ is None else environ
    for name in list(env):
        if name in FOREIGN_AWS_VARIABLES or name.startswith("AWS_ENDPOINT_URL"):
            del env[name]
    env.update(FAKE_AWS)


def session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


def clients_for(url: str, *, max_pool_connections: int = 64) -> AwsClients:
    return AwsClients(session(), config=default_config(max_pool_connections=max_pool_connections), endpoint_url=url)


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """Discard what the code under test prints (JSON log lines, EMF metrics) while it is measured.

    The work of formatting them is still done (it is part of the cost on Lambda); only the bytes
    go nowhere instead of flooding the bench's table. Progress goes to stderr, untouched.
    """
    from tokenbroker.observability import logger  # noqa: PLC0415 - after the environment is set

    handler = logger.registered_handler
    sink: TextIO = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    previous = handler.setStream(sink) if isinstance(handler, logging.StreamHandler) else None
    try:
        with contextlib.redirect_stdout(sink):
            yield
    finally:
        if previous is not None and isinstance(handler, logging.StreamHandler):
            handler.setStream(previous)
        sink.close()


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class Rig:
    moto: MotoProcess
    clients: AwsClients
    resources: CreatedResources
    topology: Topology
    settings: Settings
    worksection: WorksectionSandbox
    workdir: Path
    runtime: Runtime
    _issued: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def queue_url(self) -> str:
        return self.settings.refresh_queue_url or ""

    def fresh_runtime(self, clients: AwsClients | None = None) -> Runtime:
        """Another composition on the same resources (its own clients, caches and lease owners)."""
        return Runtime(self.settings, aws=clients or clients_for(self.moto.url))

    # --- seeding -----------------------------------------------------------------------------

    def token(self, *, expires_in: float, lifetime: float = DAY) -> TokenSet:
        """A grant the sandbox really issued, made to look ``lifetime - expires_in`` seconds old."""
        issued = self.worksection.issue_tokens(EMAIL)
        now = time.time()
        return TokenSet(
            access_token=issued["access_token"],
            token_type=issued["token_type"],
            expires_at=int(now + expires_in),
            obtained_at=int(now + expires_in - lifetime),
            refresh_token=issued["refresh_token"],
            scopes=("projects_read",),
            extra={"account_url": issued["account_url"]},
        )

    def seed(self, key: ConnectionKey, *, expires_in: float, runtime: Runtime | None = None) -> StoredToken:
        """One connection as the connect flow leaves it: ``ConnectionRepository.save_connected`` (item
        first, then the secret) with the schedule ``initial_schedule`` gives a new grant."""
        target = runtime or self.runtime
        token = self.token(expires_in=expires_in)
        ttl = target.catalog.get(key.provider).refresh_token_ttl
        schedule = initial_schedule(token, refresh_token_ttl=ttl, login=None, now=time.time())
        metadata = {"user_email": EMAIL}
        saved = target.repository.save_connected(
            key, token, metadata=metadata, scopes=token.scopes, login=None, schedule=schedule
        )
        return saved.stored

    def seed_many(self, keys: Sequence[ConnectionKey], *, expires_in: float, threads: int = 4) -> float:
        """Seed ``keys`` quickly; returns the seconds it took.

        moto parses a long UpdateExpression slowly (``save_connected`` costs it ~20 ms of CPU,
        DynamoDB a few ms), so only the first connection goes through ``save_connected``; its
        item, read back, is the template for the others, written with BatchWriteItem (25 per
        call) with their own key attributes and due shard. Each secret is one CreateSecret with
        the store's name, JSON and ClientRequestToken (``TokenStore.put`` of a new secret tries
        PutSecretValue first). Every token is a grant the sandbox really issued.
        """
        if not keys:
            return 0.0
        started = time.perf_counter()
        first, rest = keys[0], list(keys[1:])
        self.seed(first, expires_in=expires_in)
        table = self.settings.table_name
        dynamodb: Any = self.clients.dynamodb
        template = dynamodb.get_item(TableName=table, Key=_item_key(first), ConsistentRead=True)["Item"]
        generation = int(template["generation"]["N"])
        batches = [rest[i : i + 25] for i in range(0, len(rest), 25)]

        def write_items(batch: list[ConnectionKey]) -> None:
            requests = [{"PutRequest": {"Item": _item_for(template, key)}} for key in batch]
            for _ in range(10):
                answer = dynamodb.batch_write_item(RequestItems={table: requests})
                requests = answer.get("UnprocessedItems", {}).get(table, [])
                if not requests:
                    return
            raise RuntimeError("BatchWriteItem kept items unprocessed")

        def write_secret(key: ConnectionKey) -> None:
            stored = StoredToken(
                token=self.token(expires_in=expires_in), generation=generation, metadata={"user_email": EMAIL}
            )
            tokens = self.runtime.tokens
            self.clients.secretsmanager.create_secret(
                Name=tokens.secret_name(key),
                SecretString=stored.to_json(),
                ClientRequestToken=tokens.client_request_token(key, stored.generation),
            )

        with ThreadPoolExecutor(max_workers=threads) as pool:
            for _ in pool.map(write_items, batches):
                pass
            for _ in pool.map(write_secret, rest):
                pass
        return time.perf_counter() - started

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self.worksection.stop()
        self.moto.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _item_key(key: ConnectionKey) -> dict[str, Any]:
    return {"pk": {"S": connection_pk(key.provider)}, "sk": {"S": key.connection_id}}


def _item_for(template: dict[str, Any], key: ConnectionKey) -> dict[str, Any]:
    """``template`` (an item ``save_connected`` wrote) with ``key``'s own key attributes."""
    item = dict(template)
    item.update(_item_key(key))
    item["provider"] = {"S": key.provider}
    item["connection_id"] = {"S": key.connection_id}
    if "due_shard" in item:
        item["due_shard"] = {"S": due_shard(key, DEFAULT_DUE_SHARDS)}
    return item


def build_rig(workdir: Path | None = None, *, template: Path = DEFAULT_TEMPLATE) -> Rig:
    """moto child, template resources, the Worksection sandbox, app credentials, a Runtime."""
    directory = workdir or Path(tempfile.mkdtemp(prefix="tokenbroker-bench-"))
    moto = MotoProcess().start()
    worksection: WorksectionSandbox | None = None
    try:
        clients = clients_for(moto.url)
        apis = AwsApis(
            dynamodb=clients.dynamodb,
            sqs=clients.client("sqs"),  # type: ignore[arg-type]
            events=clients.client("events"),  # type: ignore[arg-type]
            secretsmanager=clients.secretsmanager,
        )
        document = load_template(template)
        resolver = Resolver(
            document,
            parameters={"Stage": STAGE, "AppName": "Bench"},
            region=REGION,
            account_id=ACCOUNT_ID,
            stack_name=f"tokenbroker-{STAGE}",
        )
        resources = create_resources(document, resolver, apis, template_path=template)
        topology = read_topology(document, template.parent)

        worksection = WorksectionSandbox().start()
        worksection.add_user(EMAIL, PASSWORD, accounts=("bench",))
        providers_file = directory / "providers.bench.yaml"
        overrides = catalog_overrides(worksection=worksection, with_credentials=False)
        providers_file.write_text(yaml.safe_dump({"providers": overrides}, sort_keys=False), encoding="utf-8")
        seed_app_secret(
            apis.secretsmanager,
            stage=STAGE,
            provider=PROVIDER,
            client_id=worksection.client_id,
            client_secret=worksection.client_secret,
        )
        queue = _worker_queue(topology, resolver, resources)
        settings = Settings(
            table_name=resources.tables.get("Table") or next(iter(resources.tables.values())),
            stage=STAGE,
            event_bus_name=next(iter(resources.buses.values()), None),
            refresh_queue_url=queue,
            providers_file=str(providers_file),
        )
        return Rig(
            moto=moto,
            clients=clients,
            resources=resources,
            topology=topology,
            settings=settings,
            worksection=worksection,
            workdir=directory,
            runtime=Runtime(settings, aws=clients),
        )
    except BaseException:
        if worksection is not None:
            worksection.stop()
        moto.stop()
        raise


def _worker_queue(topology: Topology, resolver: Resolver, resources: CreatedResources) -> str | None:
    for source in topology.queue_sources:
        try:
            return resources.queue_by_arn(str(resolver.resolve(source.queue))).url
        except KeyError:
            continue
    return None
