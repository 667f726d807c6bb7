"""Runnable imitations of the providers (Workly, Worksection) on 127.0.0.1 for tests and the
local stack. Usage::

    from infra.sandboxes import WorklySandbox, WorksectionSandbox

    with WorklySandbox(clock=clock, access_ttl=60) as workly:
        workly.add_user("ann@example.com", "correct-horse")
        workly.faults.fail(502, endpoint="token")
        ...  # point a provider at workly.base_url

See ``server.py`` for the control API (``/_sandbox/...``) and ``faults.py`` for the knobs.
"""

from infra.sandboxes.browser import ConsentFailed, HtmlForm, parse_forms, submit_consent
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
    "parse_forms",
    "submit_consent",
]
