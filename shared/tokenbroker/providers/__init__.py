"""Providers: the catalog, one small interface, and the classes behind it.

``build_provider(catalog.get("worksection"), credentials)`` is all a handler needs; it gets a
``Provider`` whose calls return a normalised ``TokenSet`` or raise a ``ProviderError`` subclass.
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
    ProviderKind,
)
from tokenbroker.providers.oauth2 import OAuth2Provider
from tokenbroker.providers.pkce import new_pkce_pair, pkce_challenge
from tokenbroker.providers.workly import WorklyProvider
from tokenbroker.providers.worksection import WorksectionProvider

PROVIDER_CLASSES: dict[ProviderKind, type[OAuth2Provider]] = {
    ProviderKind.GENERIC: OAuth2Provider,
    ProviderKind.WORKLY: WorklyProvider,
    ProviderKind.WORKSECTION: WorksectionProvider,
}


def build_provider(
    entry: CatalogEntry,
    credentials: AppCredentials,
    *,
    http: HttpClient | None = None,
    clock: Clock | None = None,
) -> Provider:
    """The provider for a catalog entry; without ``http`` it shares the process-wide session."""
    return PROVIDER_CLASSES[entry.kind](entry, credentials, http=http, clock=clock)


__all__ = [
    "PROVIDERS_FILE_ENV",
    "AppCredentials",
    "AuthMode",
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "ClientAuth",
    "OAuth2Provider",
    "Provider",
    "ProviderKind",
    "WorklyProvider",
    "WorksectionProvider",
    "build_provider",
    "new_pkce_pair",
    "pkce_challenge",
]
