"""Point tokenbroker's provider catalog at running sandboxes (an extra catalog file's entries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from tokenbroker.clock import Clock
from tokenbroker.http import HttpClient
from tokenbroker.providers import AppCredentials, Catalog, Provider, build_provider
from tokenbroker.tokens import TokenSet

from infra.sandboxes.workly import WorklySandbox
from infra.sandboxes.worksection import WorksectionSandbox


def catalog_overrides(
    *,
    workly: WorklySandbox | None = None,
    worksection: WorksectionSandbox | None = None,
    with_credentials: bool = True,
) -> dict[str, dict[str, Any]]:
    """``{"workly": {...}, "worksection": {...}}`` for ``Catalog.merged_with`` or an extra YAML file.

    Every URL is spelled out (not only ``base_url``) so the catalog follows the sandbox exactly;
    ``client_id``/``client_secret`` are the sandbox's app credentials (allowed for local use).
    """
    entries: dict[str, dict[str, Any]] = {}
    if workly is not None:
        entries["workly"] = {
            "base_url": workly.base_url,
            "token_url": workly.token_url,
            "password_reset_url": workly.password_reset_url,
            "access_token_ttl": max(1, int(workly.knobs.access_ttl)),
            "refresh_token_ttl": max(1, int(workly.knobs.refresh_ttl)),
            **(_credentials(workly) if with_credentials else {}),
        }
    if worksection is not None:
        entries["worksection"] = {
            "base_url": worksection.url,
            "authorize_url": worksection.authorize_url,
            "token_url": worksection.token_url,
            "refresh_url": worksection.refresh_url,
            "userinfo_url": worksection.userinfo_url,
            "access_token_ttl": max(1, int(worksection.knobs.access_ttl)),
            "refresh_token_ttl": max(1, int(worksection.knobs.refresh_ttl)),
            "account_url_domains": worksection.account_url_rules(),
            **(_credentials(worksection) if with_credentials else {}),
        }
    return entries


def write_catalog_file(
    path: str | Path,
    *,
    workly: WorklySandbox | None = None,
    worksection: WorksectionSandbox | None = None,
    with_credentials: bool = True,
) -> Path:
    """Write an extra catalog file (``Catalog.load(path)``, ``--providers FILE``) for the sandboxes."""
    target = Path(path)
    providers = catalog_overrides(workly=workly, worksection=worksection, with_credentials=with_credentials)
    target.write_text(yaml.safe_dump({"providers": providers}, sort_keys=False), encoding="utf-8")
    return target


def _credentials(sandbox: WorklySandbox | WorksectionSandbox) -> dict[str, str]:
    return {"client_id": sandbox.client_id, "client_secret": sandbox.client_secret}


def sandbox_provider(
    catalog: Catalog,
    sandbox: WorklySandbox | WorksectionSandbox,
    clock: Clock,
    *,
    read_timeout: float = 2.0,
) -> Provider:
    """The library's provider for ``sandbox``: its catalog entry pointed at the sandbox's URL."""
    base_url = sandbox.base_url if isinstance(sandbox, WorklySandbox) else sandbox.url
    entry = catalog.get(sandbox.provider).with_base_url(base_url)
    # Loopback connects either succeed at once or are refused: a short connect timeout suffices.
    http = HttpClient(connect_timeout=0.5, read_timeout=read_timeout)
    return build_provider(entry, AppCredentials(sandbox.client_id, sandbox.client_secret), http=http, clock=clock)


def token_from_answer(answer: dict[str, Any], now: float, scope_separator: str = ",") -> TokenSet:
    """A TokenSet from a sandbox's raw grant (``issue_tokens``), as a provider would parse it."""
    extra = {"account_url": str(answer["account_url"])} if answer.get("account_url") else {}
    scopes = tuple(s for s in str(answer.get("scope") or "").split(scope_separator) if s)
    return TokenSet(
        access_token=str(answer["access_token"]),
        token_type=str(answer.get("token_type") or "bearer"),
        expires_at=int(now + float(answer["expires_in"])),
        obtained_at=int(now),
        refresh_token=str(answer["refresh_token"]),
        scopes=scopes,
        extra=extra,
    )
