"""Provider kinds: a quirky provider is one module plus a catalog entry, and nothing else changes."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import tokenbroker.providers
from tokenbroker.clock import ManualClock
from tokenbroker.errors import (
    ProviderErrorKind,
)
from tokenbroker.http import HttpClient
from tokenbroker.providers import (
    AppCredentials,
    Catalog,
    CatalogError,
    OAuth2Provider,
    WorklyProvider,
    WorksectionProvider,
    build_provider,
    kind_spec,
    kinds,
    register_kind,
)
from tokenbroker.tokens import TokenSet

from tests.support.errors import raises_kind
from tests.unit.providers.scripted import Reply, ScriptedServer

# A provider module as a newcomer would write it: its class, its classifier hook, its defaults.
ZENQUIRK_MODULE = '''
"""Zenquirk: a dead grant comes back as HTTP 200 {"fault": "gone"}."""

from tokenbroker.errors import ProviderError, ProviderErrorKind
from tokenbroker.http import HttpResponse
from tokenbroker.providers.classify import CallContext, classify_rfc6749, make_error
from tokenbroker.providers.kinds import register_kind
from tokenbroker.providers.oauth2 import OAuth2Provider


@register_kind("zenquirk", defaults={"refresh_token_ttl": "7d", "default_scopes": ["zen.read"]})
class ZenquirkProvider(OAuth2Provider):
    def classify(self, response: HttpResponse, ctx: CallContext) -> ProviderError:
        body = response.json_object() or {}
        if body.get("fault") == "gone":
            dead = ProviderErrorKind.REAUTHORIZATION_REQUIRED
            return make_error(dead, response, ctx, "the grant is gone", code="gone")
        return classify_rfc6749(response, ctx)
'''

ENTRY = """
providers:
  zen:
    kind: {kind}
    base_url: {url}
    authorize_url: "{{base_url}}/authorize"
    token_url: "{{base_url}}/token"
"""
MODULE = "tokenbroker.providers.zenquirk"


@pytest.fixture
def scratch_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kinds registered by a test vanish with it (the registry is process-wide)."""
    monkeypatch.setattr(kinds, "_REGISTRY", dict(kinds._REGISTRY))


@pytest.fixture
def zenquirk_in_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch_kinds: None) -> Iterator[None]:
    """``zenquirk.py`` as if dropped into shared/tokenbroker/providers/, without writing there."""
    (tmp_path / "zenquirk.py").write_text(textwrap.dedent(ZENQUIRK_MODULE), encoding="utf-8")
    monkeypatch.setattr(tokenbroker.providers, "__path__", [*tokenbroker.providers.__path__, str(tmp_path)])
    importlib.invalidate_caches()
    yield
    sys.modules.pop(MODULE, None)


def refresh_through(provider_kind: str, server: ScriptedServer, http: HttpClient, clock: ManualClock) -> TokenSet:
    catalog = Catalog.from_yaml(ENTRY.format(kind=provider_kind, url=server.url), include_packaged=False)
    provider = build_provider(catalog.get("zen"), AppCredentials("id", "secret-zen"), http=http, clock=clock)
    assert isinstance(provider, OAuth2Provider)
    return provider.refresh(TokenSet("old", "Bearer", 1, 0, refresh_token="r-old"))


def test_a_quirky_provider_is_one_module_plus_a_catalog_entry(
    zenquirk_in_the_package: None, server: ScriptedServer, http: HttpClient, clock: ManualClock
) -> None:
    assert MODULE not in sys.modules  # nothing imports the module: the catalog entry's kind finds it
    catalog = Catalog.from_yaml(ENTRY.format(kind="zenquirk", url=server.url), include_packaged=False)
    entry = catalog.get("zen")
    assert MODULE in sys.modules
    assert type(build_provider(entry, AppCredentials("id", "s"))).__name__ == "ZenquirkProvider"
    # The kind's defaults fill what the entry left unset, converted like YAML.
    assert (entry.refresh_token_ttl, entry.default_scopes) == (7 * 86_400, ("zen.read",))

    server.script(Reply(200, {"fault": "gone"}))
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as dead:
        refresh_through("zenquirk", server, http, clock)
    assert dead.value.provider_code == "gone"
    # The same answer to a generic entry is a broken answer, not a dead grant: the hook decided.
    server.script(Reply(200, {"fault": "gone"}))
    with raises_kind(ProviderErrorKind.TRANSIENT):
        refresh_through("generic", server, http, clock)


def test_a_kind_default_never_overrides_what_the_entry_wrote(zenquirk_in_the_package: None) -> None:
    text = ENTRY.format(kind="zenquirk", url="https://zen.test") + "    refresh_token_ttl: 1d\n"
    assert Catalog.from_yaml(text, include_packaged=False).get("zen").refresh_token_ttl == 86_400


def test_a_kind_may_default_only_fields_that_are_unset_by_default(scratch_kinds: None) -> None:
    # rotates_refresh_token defaults to false: an entry's explicit false could not be told apart.
    @register_kind("eager", defaults={"rotates_refresh_token": True})
    class EagerProvider(OAuth2Provider):
        pass

    with pytest.raises(CatalogError) as error:
        Catalog.from_yaml(ENTRY.format(kind="eager", url="https://e.test"), include_packaged=False)
    assert (error.value.field, "kind 'eager'" in error.value.problem) == ("rotates_refresh_token", True)


def test_two_classes_cannot_claim_one_kind(scratch_kinds: None) -> None:
    with pytest.raises(ValueError, match="already served by"):

        @register_kind("workly")
        class ImpostorProvider(OAuth2Provider):
            pass

    assert kind_spec("workly").provider_class is WorklyProvider


def test_the_built_in_kinds_and_their_defaults(catalog: Catalog) -> None:
    classes = {name: kind_spec(name).provider_class for name in ("generic", "workly", "worksection")}
    assert classes == {"generic": OAuth2Provider, "workly": WorklyProvider, "worksection": WorksectionProvider}
    # A second Worksection entry, or an extra file resetting the field, trusts Worksection's hosts only.
    second = Catalog.from_yaml(ENTRY.format(kind="worksection", url="https://ws.test")).get("zen")
    reset = catalog.merged_with({"worksection": {"account_url_domains": None}}).get("worksection")
    assert second.account_url_domains == reset.account_url_domains == ("worksection.com",)
