"""Providers: the catalog, one small interface, and the classes behind it.

``build_provider(catalog.get("worksection"), credentials)`` is all a handler needs; it gets a
``Provider`` whose calls return a normalised ``TokenSet`` or raise a ``ProviderError`` of a kind.
Each quirky provider is one module here that registers its kind (``kinds.register_kind``).
"""

from __future__ import annotations

from tokenbroker.clock import Clock
from tokenbroker.http import HttpClient
from tokenbroker.providers.base import AppCredentials, Provider
from tokenbroker.providers.catalog import (
    PROVIDERS_FILE_ENV,
    AuthMode,
    Catalog,
    CatalogEntry,
    CatalogError,
    ClientAuth,
)
from tokenbroker.providers.kinds import KindSpec, kind_spec, register_kind
from tokenbroker.providers.oauth2 import OAuth2Provider
from tokenbroker.providers.pkce import new_pkce_pair, pkce_challenge

# The built-in kinds, imported for their names; a new provider module needs no line here.
from tokenbroker.providers.workly import WorklyProvider
from tokenbroker.providers.worksection import WorksectionProvider


def build_provider(
    entry: CatalogEntry,
    credentials: AppCredentials,
    *,
    http: HttpClient | None = None,
    clock: Clock | None = None,
) -> Provider:
    """The provider for a catalog entry; without ``http`` it shares the process-wide session."""
    return kind_spec(entry.kind).provider_class(entry, credentials, http=http, clock=clock)


__all__ = [
    "PROVIDERS_FILE_ENV",
    "AppCredentials",
    "AuthMode",
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "ClientAuth",
    "KindSpec",
    "OAuth2Provider",
    "Provider",
    "WorklyProvider",
    "WorksectionProvider",
    "build_provider",
    "kind_spec",
    "new_pkce_pair",
    "pkce_challenge",
    "register_kind",
]
