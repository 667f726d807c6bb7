"""Provider kinds: which class serves a catalog entry's ``kind``, and the defaults that kind brings.

A provider module registers itself, ``@register_kind("worksection", defaults={...})`` on its class,
so a quirky provider is that one module plus a catalog entry. A kind that nobody has registered
yet is looked for in ``tokenbroker.providers.<kind>``: importing that module registers it, so a new
module needs no import line elsewhere, and a process imports only the kinds its catalog names.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # oauth2 imports the catalog, which imports this module
    from tokenbroker.providers.oauth2 import OAuth2Provider

GENERIC_KIND = "generic"
_KIND_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class KindSpec:
    """One registered kind: the class that implements it and catalog fields it fills when unset."""

    name: str
    provider_class: type[OAuth2Provider]
    # Values as an entry would write them in YAML; only fields whose catalog default means "unset".
    defaults: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))


_REGISTRY: dict[str, KindSpec] = {}


class UnknownKind(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no provider kind {name[:64]!r}; known: {', '.join(known_kinds())}")
        self.name = name


def register_kind[P: OAuth2Provider](
    name: str, *, defaults: Mapping[str, object] | None = None
) -> Callable[[type[P]], type[P]]:
    """Class decorator: entries with ``kind: <name>`` are served by the decorated class."""
    if not _KIND_NAME.fullmatch(name):
        raise ValueError(f"a kind name is [a-z][a-z0-9_]*, at most 64 characters: {name!r}")

    def register(cls: type[P]) -> type[P]:
        current = _REGISTRY.get(name)
        # Two classes claiming one kind is a copy-paste slip; re-importing the same module is not.
        if current is not None and _qualified(current.provider_class) != _qualified(cls):
            raise ValueError(f"kind {name!r} is already served by {_qualified(current.provider_class)}")
        _REGISTRY[name] = KindSpec(name, cls, MappingProxyType(dict(defaults or {})))
        return cls

    return register


def kind_spec(name: str) -> KindSpec:
    """The kind ``name``, importing ``tokenbroker.providers.<name>`` once if it is not registered yet."""
    spec = _REGISTRY.get(name)
    if spec is None and _KIND_NAME.fullmatch(name):
        _import_provider_module(name)
        spec = _REGISTRY.get(name)
    if spec is None:
        raise UnknownKind(name)
    return spec


def known_kinds() -> tuple[str, ...]:
    """The registered kinds, sorted (modules not imported yet are not listed)."""
    return tuple(sorted(_REGISTRY))


def _import_provider_module(name: str) -> None:
    module = f"{__package__}.{name}"
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:  # the module exists but a dependency of it is missing: say so
            raise


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
