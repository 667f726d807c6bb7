"""A connection as the connect flow leaves it: the one way tests seed a connected grant.

``seed_connection`` saves a grant with ``ConnectionRepository.save_connected`` and the schedule
``repository.initial_schedule`` gives it, which is what ``ConnectService`` does once a provider
has answered (without the session, the user info and the event). A change to how the connect
flow saves a grant therefore changes every seeded connection with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from tokenbroker.clock import Clock
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import PasswordLogin
from tokenbroker.providers import CatalogEntry
from tokenbroker.repository import ConnectionRepository, Saved, initial_schedule
from tokenbroker.tokens import TokenSet


class Entries(Protocol):
    """``Catalog.get``: the entry whose refresh-token lifetime schedules the grant."""

    def get(self, name: str) -> CatalogEntry: ...


def seed_connection(
    repository: ConnectionRepository,
    catalog: Entries,
    clock: Clock,
    key: ConnectionKey,
    token: TokenSet,
    *,
    login: PasswordLogin | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Saved:
    """Make ``token`` the current grant of ``key``: the item first, then the secret.

    Returns the repository's answer: ``connection`` (the item) and ``stored`` (the secret).
    """
    entry = catalog.get(key.provider)
    schedule = initial_schedule(token, refresh_token_ttl=entry.refresh_token_ttl, login=login, now=clock.now())
    return repository.save_connected(
        key, token, metadata=dict(metadata or {}), scopes=token.scopes, login=login, schedule=schedule
    )
