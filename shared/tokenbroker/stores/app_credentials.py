"""The OAuth client (app) credentials per provider, from Secrets Manager or the catalog's defaults.

``tokenbroker/<stage>/apps/<provider>`` holds ``{"client_id", "client_secret"}``. When it does not
exist, the catalog entry's ``default_client_id``/``default_client_secret`` apply (Workly documents
public app constants). Answers are cached briefly: app credentials change rarely and every
refresh needs them.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import ClientError

from tokenbroker.clock import Clock, SystemClock
from tokenbroker.credentials import AppCredentials
from tokenbroker.errors import ProviderError, ProviderErrorKind
from tokenbroker.keys import validate_provider_name
from tokenbroker.stores.tokens import NAME_ROOT, error_code, validate_stage

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

DEFAULT_CACHE_SECONDS = 300.0


class DefaultCredentials(Protocol):
    """What this store needs of a catalog entry (``tokenbroker.providers.catalog.CatalogEntry``)."""

    @property
    def default_client_id(self) -> str | None: ...

    @property
    def default_client_secret(self) -> str | None: ...


class CatalogLike(Protocol):
    def get(self, name: str) -> DefaultCredentials:
        """Raises ``UnknownProvider`` for a name the catalog does not know."""
        ...


class AppCredentialsStore:
    def __init__(
        self,
        client: SecretsManagerClient,
        *,
        stage: str,
        catalog: CatalogLike,
        clock: Clock | None = None,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
    ) -> None:
        self._client = client
        self._stage = validate_stage(stage)
        self._catalog = catalog
        self._clock = clock or SystemClock()
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, AppCredentials]] = {}
        self._lock = threading.Lock()

    def secret_name(self, provider: str) -> str:
        return f"{NAME_ROOT}/{self._stage}/apps/{provider}"

    def get(self, provider: str) -> AppCredentials:
        """Raises ``UnknownProvider`` (from the catalog) or a ``configuration`` ``ProviderError``."""
        validate_provider_name(provider)
        now = self._clock.now()
        with self._lock:
            cached = self._cache.get(provider)
        if cached is not None and cached[0] > now:
            return cached[1]
        credentials = self._load(provider)
        with self._lock:
            self._cache[provider] = (now + self._cache_seconds, credentials)
        return credentials

    def invalidate(self, provider: str | None = None) -> None:
        with self._lock:
            if provider is None:
                self._cache.clear()
            else:
                self._cache.pop(provider, None)

    def _load(self, provider: str) -> AppCredentials:
        entry = self._catalog.get(provider)  # unknown provider fails before any AWS call
        try:
            answer = self._client.get_secret_value(SecretId=self.secret_name(provider))
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
            return self._defaults(provider, entry)
        return self._parse(provider, answer.get("SecretString") or "")

    def _defaults(self, provider: str, entry: DefaultCredentials) -> AppCredentials:
        if not entry.default_client_id:
            raise ProviderError(
                ProviderErrorKind.CONFIGURATION,
                f"no app credentials for {provider}: create secret {self.secret_name(provider)}",
                provider=provider,
            )
        return AppCredentials(entry.default_client_id, entry.default_client_secret or "")

    def _parse(self, provider: str, text: str) -> AppCredentials:
        # Never echo the secret's content in an error: it holds the client secret.
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        client_id = data.get("client_id") if isinstance(data, dict) else None
        client_secret = data.get("client_secret", "") if isinstance(data, dict) else None
        if not isinstance(client_id, str) or not client_id or not isinstance(client_secret, str):
            raise ProviderError(
                ProviderErrorKind.CONFIGURATION,
                f'secret {self.secret_name(provider)} must hold JSON {{"client_id": "...", "client_secret": "..."}}',
                provider=provider,
            )
        return AppCredentials(client_id, client_secret)
