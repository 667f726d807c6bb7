"""What a cold start of the vend function loads: never pydantic, never the connect flow.

A fresh interpreter imports functions/vend/app.py and builds its collaborators from the
environment, as on the first request of a Lambda cold start (no AWS call happens while building),
then routes a few requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("vend_app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["vend_app"] = module
spec.loader.exec_module(module)
module.services()
# Then serve requests (on in-memory collaborators): routing must not pull pydantic in either.
from tests.unit.vending.apigw import iam_event, invoke
from tests.unit.vending.fakes import FakeConnections, FakeRefresher, FakeTokens, Result, stored
from tokenbroker.clock import SystemClock
from tokenbroker.repository import ConnectionRepository
from tokenbroker.vending import VendingService
repository = ConnectionRepository(items=FakeConnections(), secrets=FakeTokens(stored()), clock=SystemClock())
vending = VendingService(repository=repository,
                         refresher=FakeRefresher(Result("refreshed")), clock=SystemClock(), wait_seconds=1)
module.use_services(module.Services(vending=vending, connect=None))
assert invoke(module, iam_event("GET", "/tokens/worksection/acme-1")).status == 200
assert invoke(module, iam_event("POST", "/tokens/worksection/acme-1/refresh", json_body={})).status == 200
assert invoke(module, iam_event("GET", "/connections", query={"provider": "worksection"})).status == 200
loaded = set(sys.modules)
print(json.dumps({name: name in loaded for name in ("pydantic", "tokenbroker.connect", "tokenbroker.vending")}))
"""


def test_a_cold_start_loads_neither_pydantic_nor_the_connect_flow() -> None:
    env = {
        **os.environ,
        "TABLE_NAME": "tokenbroker-cold-start",
        "STAGE": "dev",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "shared")]),
    }
    env.pop("TOKENBROKER_PROVIDERS_FILE", None)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / "functions" / "vend" / "app.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(probe.stdout.strip().splitlines()[-1])  # metrics lines come first
    assert loaded == {"pydantic": False, "tokenbroker.connect": False, "tokenbroker.vending": True}
