"""Runnable imitations of the providers (Workly, Worksection) on 127.0.0.1 for tests and the
local stack. Usage::

    from infra.sandboxes import WorklySandbox, WorksectionSandbox

    with WorklySandbox(clock=clock, access_ttl=60) as workly:
        workly.add_user("ann@example.com", "correct-horse")
        workly.faults.fail(502, endpoint="token")
        write_catalog_file(tmp_path / "providers.yaml", workly=workly)  # for Catalog.load(...)

See ``server.py`` for the control API (``/_sandbox/...``) and ``faults.py`` for the knobs.
"""

from infra.sandboxes.browser import ConsentFailed, HtmlForm, parse_forms, submit_consent
from infra.sandboxes.catalog import catalog_overrides, write_catalog_file
from infra.sandboxes.faults import Fault, FaultKind, Faults
from infra.sandboxes.server import CallCounter, SandboxServer
from infra.sandboxes.workly import WorklyKnobs, WorklySandbox
from infra.sandboxes.worksection import WorksectionKnobs, WorksectionSandbox

__all__ = [
    "CallCounter",
    "ConsentFailed",
    "Fault",
    "FaultKind",
    "Faults",
    "HtmlForm",
    "SandboxServer",
    "WorklyKnobs",
    "WorklySandbox",
    "WorksectionKnobs",
    "WorksectionSandbox",
    "catalog_overrides",
    "parse_forms",
    "submit_consent",
    "write_catalog_file",
]
