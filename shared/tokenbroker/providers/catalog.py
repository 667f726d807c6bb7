"""The declarative provider catalog: packaged ``catalog.yaml`` plus an optional extra file.

The extra file (``TOKENBROKER_PROVIDERS_FILE`` or ``Catalog.load(extra_file)``) is merged field by
field: an entry for a packaged provider changes only the fields it names (``base_url`` alone moves
Workly to ``api.workly.uz``), a new name adds a provider, ``null`` for a field restores its default
and ``null`` for a whole entry removes the provider. URL fields may use ``{base_url}``; templates are
resolved after merging, so overriding ``base_url`` moves every URL that uses it.

Every mistake is a ``CatalogError`` naming the file, the provider and the field.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import yaml

from tokenbroker.errors import TokenBrokerError, UnknownProvider
from tokenbroker.keys import PROVIDER_NAME_PATTERN, RESERVED_PROVIDER_NAMES
from tokenbroker.providers.base import AppCredentials
from tokenbroker.providers.kinds import GENERIC_KIND, KindSpec, UnknownKind, kind_spec, known_kinds
from tokenbroker.providers.parsing import split_scopes

PROVIDERS_FILE_ENV = "TOKENBROKER_PROVIDERS_FILE"
PACKAGED_SOURCE = "tokenbroker/providers/catalog.yaml"
BASE_URL_PLACEHOLDER = "{base_url}"
URL_FIELDS = ("authorize_url", "token_url", "refresh_url", "userinfo_url", "password_reset_url")
DEFAULT_ACCESS_TOKEN_TTL = 3600
_DOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?\.[a-z]{2,}")
_DURATION = re.compile(r"\s*(\d+)\s*([smhdw]?)\s*")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
# Accepted in the extra file for local use (`make run --providers FILE`); same as the default_* fields.
FIELD_ALIASES = {"client_id": "default_client_id", "client_secret": "default_client_secret"}


class CatalogError(TokenBrokerError):
    """The catalog cannot be used as written. Never shows a field's value: it may be a secret."""

    code = "catalog_invalid"

    def __init__(self, problem: str, *, source: str, provider: str | None = None, field: str | None = None) -> None:
        where = source
        if provider is not None:
            where += f": providers.{provider}" + (f".{field}" if field else "")
        super().__init__(f"{where}: {problem}")
        self.problem = problem
        self.source = source
        self.provider = provider
        self.field = field


class AuthMode(enum.StrEnum):
    AUTHORIZATION_CODE = "authorization_code"
    PASSWORD = "password"  # noqa: S105 - a grant name
    CLIENT_CREDENTIALS = "client_credentials"


class ClientAuth(enum.StrEnum):
    BODY = "body"  # client_id and client_secret in the form body
    BASIC = "basic"  # HTTP Basic, RFC 6749 section 2.3.1


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One provider, resolved: URLs are absolute, ``refresh_url`` is set, durations are seconds."""

    name: str
    token_url: str
    auth_mode: AuthMode = AuthMode.AUTHORIZATION_CODE
    kind: str = GENERIC_KIND  # a registered kind (tokenbroker.providers.kinds): the class and its defaults
    display_name: str | None = None
    base_url: str | None = None
    authorize_url: str | None = None
    refresh_url: str | None = None  # None -> token_url
    userinfo_url: str | None = None
    password_reset_url: str | None = None
    scope_separator: str = " "
    default_scopes: tuple[str, ...] = ()
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    # None: on for authorization_code (RFC 9700 section 2.1.1), off otherwise; resolved in __post_init__.
    pkce: bool | None = None
    client_auth: ClientAuth = ClientAuth.BODY
    access_token_ttl: int = DEFAULT_ACCESS_TOKEN_TTL
    refresh_token_ttl: int | None = None  # None: unknown, no estimate
    rotates_refresh_token: bool = False
    account_url_domains: tuple[str, ...] = ()
    default_client_id: str | None = None
    default_client_secret: str | None = field(default=None, repr=False)
    # The URL fields as written, before {base_url} was resolved (so with_base_url can redo it).
    url_templates: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    SOURCE: ClassVar[str] = "<CatalogEntry>"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not PROVIDER_NAME_PATTERN.fullmatch(self.name):
            raise CatalogError(
                "provider names are lower-case [a-z0-9_-], at most 64 characters",
                source=self.SOURCE,
                provider=str(self.name)[:64],
            )
        self._set("auth_mode", _enum(AuthMode, self.auth_mode, self._fail, "auth_mode"))
        self._set("client_auth", _enum(ClientAuth, self.client_auth, self._fail, "client_auth"))
        self._apply_kind_defaults(self._kind())
        self._resolve_urls()
        self._check_values()
        if self.pkce is None:
            self._set("pkce", self.auth_mode is AuthMode.AUTHORIZATION_CODE)

    def _kind(self) -> KindSpec:
        if isinstance(self.kind, str):
            with contextlib.suppress(UnknownKind):
                return kind_spec(self.kind)  # may import tokenbroker.providers.<kind>
        raise self._fail(f"must be one of {' | '.join(known_kinds())}", "kind")

    def _apply_kind_defaults(self, kind: KindSpec) -> None:
        """The kind's defaults fill fields the entry left unset (None or empty)."""
        for field_name, value in kind.defaults.items():
            if field_name not in UNSET_DEFAULTS:
                # Only "unset" is told apart from "set": a kind default for false or 3600 would
                # silently override an entry that wrote exactly that.
                raise self._fail(f"kind {kind.name!r} may default only fields that are unset by default", field_name)
            if getattr(self, field_name) == UNSET_DEFAULTS[field_name]:
                self._set(field_name, _convert(self.name, field_name, value, self.SOURCE))

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)  # frozen: normalising happens once, here

    def _fail(self, problem: str, field_name: str | None) -> CatalogError:
        return CatalogError(problem, source=self.SOURCE, provider=self.name, field=field_name)

    def _resolve_urls(self) -> None:
        base_url = self.base_url.rstrip("/") if isinstance(self.base_url, str) and self.base_url else None
        if base_url is not None:
            _check_url(base_url, self._fail, "base_url")
        self._set("base_url", base_url)
        templates = dict(self.url_templates)
        if self.refresh_url is None:
            self._set("refresh_url", self.token_url)
            if isinstance(self.token_url, str) and BASE_URL_PLACEHOLDER in self.token_url:
                templates["refresh_url"] = self.token_url
        for name in URL_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str) and BASE_URL_PLACEHOLDER in value:
                if base_url is None:
                    raise self._fail("uses {base_url} but base_url is not set", name)
                templates[name] = value
                value = value.replace(BASE_URL_PLACEHOLDER, base_url)
                self._set(name, value)
            _check_url(value, self._fail, name)
        self._set("url_templates", templates)

    def _check_values(self) -> None:
        if self.auth_mode is AuthMode.AUTHORIZATION_CODE and not self.authorize_url:
            raise self._fail("authorization_code providers need an authorize_url", "authorize_url")
        if not isinstance(self.scope_separator, str) or not 1 <= len(self.scope_separator) <= 3:
            raise self._fail("must be 1 to 3 characters, e.g. ' ' or ','", "scope_separator")
        if isinstance(self.access_token_ttl, bool) or not isinstance(self.access_token_ttl, int):
            raise self._fail("must be a positive number of seconds", "access_token_ttl")
        if self.access_token_ttl <= 0:
            raise self._fail("must be a positive number of seconds", "access_token_ttl")
        ttl = self.refresh_token_ttl
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
            raise self._fail("must be a positive number of seconds or null", "refresh_token_ttl")
        for rule in self.account_url_domains:
            if "://" in rule:
                _check_url(rule, self._fail, "account_url_domains")
            elif not _DOMAIN.fullmatch(rule.lower()):
                raise self._fail(
                    "entries are base domains (example.com) or origins (http://127.0.0.1:8001)",
                    "account_url_domains",
                )

    @property
    def label(self) -> str:
        """A human name for pages."""
        return self.display_name or self.name.replace("_", " ").replace("-", " ").title()

    def default_credentials(self) -> AppCredentials | None:
        """The documented app constants, if the catalog has them; configuration overrides these."""
        if not self.default_client_id:
            return None
        return AppCredentials(self.default_client_id, self.default_client_secret or "")

    def with_base_url(self, base_url: str) -> CatalogEntry:
        """The same entry against another host (e.g. ``api.workly.uz`` or a sandbox)."""
        changes: dict[str, Any] = {**self.url_templates, "base_url": base_url}
        return replace(self, **changes)


Fail = Callable[[str, str | None], CatalogError]


def _enum[E: enum.StrEnum](cls: type[E], value: object, fail: Fail, field_name: str) -> E:
    allowed = " | ".join(member.value for member in cls)
    if not isinstance(value, str):
        raise fail(f"must be one of {allowed}", field_name)
    try:
        return cls(value)
    except ValueError:
        raise fail(f"must be one of {allowed}", field_name) from None


def _check_url(value: object, fail: Fail, field_name: str) -> None:
    if not isinstance(value, str):
        raise fail("must be a URL string", field_name)
    if "{" in value or "}" in value:
        raise fail("has an unknown {placeholder}; only {base_url} is supported", field_name)
    try:
        parts = urlsplit(value)
    except ValueError:
        raise fail("is not a valid URL", field_name) from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise fail("must be an absolute http:// or https:// URL", field_name)


# --- YAML -> entries -----------------------------------------------------------------------------------

_STRING_FIELDS = frozenset(
    {"display_name", "base_url", "default_client_id", "default_client_secret", *URL_FIELDS, "token_url"}
)
_ENUM_FIELDS = frozenset({"auth_mode", "kind", "client_auth"})
_BOOL_FIELDS = frozenset({"pkce", "rotates_refresh_token"})
_DURATION_FIELDS = frozenset({"access_token_ttl", "refresh_token_ttl"})
_LIST_FIELDS = frozenset({"default_scopes", "account_url_domains"})
ENTRY_FIELDS = frozenset(f.name for f in fields(CatalogEntry) if f.name not in ("name", "url_templates"))
_FIELD_DEFAULTS: dict[str, object] = {
    f.name: f.default_factory() if f.default_factory is not MISSING else f.default
    for f in fields(CatalogEntry)
    if f.name in ENTRY_FIELDS
}
# Fields whose default means "not given" (None or empty): the ones a kind may default.
UNSET_DEFAULTS = {name: value for name, value in _FIELD_DEFAULTS.items() if value in (None, (), {}, "")}


def parse_duration(value: object) -> int | None:
    """Seconds from an integer or a string such as ``3600``, ``90m``, ``24h``, ``30d``; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
            return seconds if seconds > 0 else None
    return None


def _as_string(value: Any, field_name: str) -> str:
    if field_name in ("default_client_id", "default_client_secret") and isinstance(value, int | float):
        value = str(value)  # YAML reads an all-digit client id as a number
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value.strip()


def _as_bool(value: Any, field_name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _as_duration(value: Any, field_name: str) -> int:
    seconds = parse_duration(value)
    if seconds is None:
        raise ValueError("must be a positive duration: seconds, or a number with s, m, h, d or w (e.g. 30d)")
    return seconds


def _as_list(value: Any, field_name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return split_scopes(value)
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise ValueError("must be a list of strings")
    return tuple(item.strip() for item in value if item.strip())


def _as_separator(value: Any, field_name: str) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string, e.g. ' ' or ','")
    return value


def _as_params(value: Any, field_name: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str | int | bool) for k, v in value.items()
    ):
        raise ValueError("must be a mapping of parameter names to strings")
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}


_CONVERTERS: dict[str, Callable[[Any, str], Any]] = {
    **dict.fromkeys(_STRING_FIELDS | _ENUM_FIELDS, _as_string),
    **dict.fromkeys(_BOOL_FIELDS, _as_bool),
    **dict.fromkeys(_DURATION_FIELDS, _as_duration),
    **dict.fromkeys(_LIST_FIELDS, _as_list),
    "scope_separator": _as_separator,
    "authorize_params": _as_params,
}


def _convert(name: str, field_name: str, value: Any, source: str) -> Any:
    try:
        return _CONVERTERS[field_name](value, field_name)
    except ValueError as error:
        raise CatalogError(str(error), source=source, provider=name, field=field_name) from None


def _read_document(text: str, source: str) -> dict[str, dict[str, Any] | None]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        document = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        raise CatalogError(f"invalid YAML at {where}: {error.problem}", source=source) from None
    except yaml.YAMLError:
        raise CatalogError("invalid YAML", source=source) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise CatalogError("the top level must be a mapping with a 'providers' key", source=source)
    unknown = sorted(str(key) for key in document if key != "providers")
    if unknown:
        raise CatalogError(f"unknown top-level key(s) {', '.join(unknown)}; expected 'providers'", source=source)
    providers = document.get("providers") or {}
    if not isinstance(providers, dict):
        raise CatalogError("'providers' must map provider names to entries", source=source)
    result: dict[str, dict[str, Any] | None] = {}
    for name, entry in providers.items():
        if not isinstance(name, str) or not PROVIDER_NAME_PATTERN.fullmatch(name):
            raise CatalogError(
                "provider names are lower-case [a-z0-9_-], at most 64 characters",
                source=source,
                provider=str(name)[:64],
            )
        if name in RESERVED_PROVIDER_NAMES:
            raise CatalogError("this name is reserved (app credentials live under it)", source=source, provider=name)
        if entry is None:
            result[name] = None
            continue
        result[name] = _entry_fields(name, entry, source)
    return result


def _entry_fields(name: str, entry: object, source: str) -> dict[str, Any]:
    """One entry's fields, names checked and values converted (None kept: it resets a field)."""
    if not isinstance(entry, Mapping):
        raise CatalogError("an entry must be a mapping of fields", source=source, provider=name)
    fields_seen: dict[str, Any] = {}
    for key, value in entry.items():
        field_name = FIELD_ALIASES.get(str(key), str(key))
        if field_name not in ENTRY_FIELDS:
            raise CatalogError(
                f"unknown field; known fields: {', '.join(sorted(ENTRY_FIELDS | set(FIELD_ALIASES)))}",
                source=source,
                provider=name,
                field=str(key)[:64],
            )
        if field_name in fields_seen:
            raise CatalogError(f"given twice (also as {field_name})", source=source, provider=name, field=str(key))
        fields_seen[field_name] = None if value is None else _convert(name, field_name, value, source)
    return fields_seen


@dataclass(frozen=True, slots=True)
class _Layer:
    source: str
    entries: Mapping[str, Mapping[str, Any] | None]


class Catalog:
    """Named provider entries. Immutable; ``merged_with`` returns a new catalog."""

    def __init__(self, layers: tuple[_Layer, ...]) -> None:
        self._layers = layers
        merged: dict[str, dict[str, Any]] = {}
        sources: dict[str, dict[str, str]] = {}
        for layer in layers:
            for name, overrides in layer.entries.items():
                if overrides is None:
                    merged.pop(name, None)
                    sources.pop(name, None)
                    continue
                current = merged.setdefault(name, {})
                where = sources.setdefault(name, {})
                for key, value in overrides.items():
                    if value is None:
                        current.pop(key, None)
                    else:
                        current[key] = value
                    where[key] = layer.source  # who set or removed it, to blame in errors
        order = [layer.source for layer in layers]
        self._entries = {name: _build(name, values, sources[name], order) for name, values in merged.items()}

    @classmethod
    def load(cls, extra_file: str | Path | None = None, *, environ: Mapping[str, str] | None = None) -> Catalog:
        """The packaged catalog merged with ``extra_file`` (default: ``$TOKENBROKER_PROVIDERS_FILE``)."""
        env = os.environ if environ is None else environ
        layers = [packaged_layer()]
        chosen = extra_file if extra_file is not None else (env.get(PROVIDERS_FILE_ENV) or None)
        if chosen is not None:
            path = Path(chosen)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise CatalogError(
                    f"cannot read the providers file ({type(error).__name__})", source=str(path)
                ) from None
            layers.append(_Layer(str(path), _read_document(text, str(path))))
        return cls(tuple(layers))

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<yaml>", include_packaged: bool = True) -> Catalog:
        """A catalog from YAML text, on top of the packaged one unless told otherwise."""
        layers = [packaged_layer()] if include_packaged else []
        layers.append(_Layer(source, _read_document(text, source)))
        return cls(tuple(layers))

    def merged_with(self, overrides: Mapping[str, Mapping[str, Any] | None], *, source: str = "<overrides>") -> Catalog:
        """This catalog with ``{"provider": {"field": value}}`` merged on top, like an extra file."""
        entries: dict[str, dict[str, Any] | None] = {}
        for name, fields_given in overrides.items():
            if not isinstance(name, str) or not PROVIDER_NAME_PATTERN.fullmatch(name):
                raise CatalogError("provider names are lower-case [a-z0-9_-]", source=source, provider=str(name)[:64])
            entries[name] = None if fields_given is None else _entry_fields(name, fields_given, source)
        return Catalog((*self._layers, _Layer(source, entries)))

    def get(self, name: str) -> CatalogEntry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownProvider(f"unknown provider {str(name)[:64]!r}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self._entries[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Catalog({', '.join(self.names())})"


def _build(name: str, values: Mapping[str, Any], sources: Mapping[str, str], order: list[str]) -> CatalogEntry:
    """An entry from merged fields; an error names the file that set (or removed) the offending field."""
    if "token_url" not in values:
        raise CatalogError(
            "is required", source=_blame(sources, ["token_url"], order), provider=name, field="token_url"
        )
    try:
        return CatalogEntry(name=name, **values)
    except CatalogError as error:
        # A template breaks when its own field or base_url changed: blame the later of the two.
        suspects = [error.field or "", "base_url"] if "base_url" in error.problem else [error.field or ""]
        source = _blame(sources, suspects, order)
        raise CatalogError(error.problem, source=source, provider=name, field=error.field) from None


def _blame(sources: Mapping[str, str], suspects: list[str], order: list[str]) -> str:
    found = [sources[field_name] for field_name in suspects if field_name in sources]
    if not found:
        found = list(sources.values())
    if not found:
        return "<catalog>"
    return max(found, key=lambda source: order.index(source) if source in order else -1)


_PACKAGED: _Layer | None = None


def packaged_layer() -> _Layer:
    global _PACKAGED  # noqa: PLW0603 - parsed once per process (Lambda cold start)
    if _PACKAGED is None:
        text = resources.files("tokenbroker.providers").joinpath("catalog.yaml").read_text(encoding="utf-8")
        _PACKAGED = _Layer(PACKAGED_SOURCE, _read_document(text, PACKAGED_SOURCE))
    return _PACKAGED
