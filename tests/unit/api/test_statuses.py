"""Every error the library can raise has a deliberate HTTP status, decided at the edge only."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import tokenbroker
from tokenbroker.api.statuses import STATUS_BY_CODE, STATUS_BY_PROVIDER_KIND, UNAVAILABLE, http_status
from tokenbroker.errors import NeedsReauthorization, ProviderError, ProviderErrorKind, TokenBrokerError

# Errors only the SDK raises, about the broker's own answer: they never reach an edge of ours.
SDK_ONLY = {"tokenbroker.client.AccessDenied", "tokenbroker.client.BrokerError"}


def _all_error_classes() -> list[type[TokenBrokerError]]:
    for module in pkgutil.walk_packages(tokenbroker.__path__, "tokenbroker."):
        importlib.import_module(module.name)
    found: list[type[TokenBrokerError]] = []
    pending: list[type[TokenBrokerError]] = [TokenBrokerError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls for cls in found if f"{cls.__module__}.{cls.__qualname__}" not in SDK_ONLY]


ERROR_CLASSES = [cls for cls in _all_error_classes() if cls is not ProviderError]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__qualname__)
def test_every_error_code_has_a_status(cls: type[TokenBrokerError]) -> None:
    assert cls.code in STATUS_BY_CODE, f"{cls.__qualname__} ({cls.code}) would silently be a 500"


def test_provider_errors_are_never_subclassed() -> None:
    # One taxonomy: a provider failure is a kind, not a class (issue 14).
    assert ProviderError.__subclasses__() == []


@pytest.mark.parametrize("kind", list(ProviderErrorKind))
def test_a_provider_failure_is_a_gateway_error_or_unavailable(kind: ProviderErrorKind) -> None:
    status = http_status(ProviderError(kind, "x", provider="acme"))
    assert status == STATUS_BY_PROVIDER_KIND[kind]
    assert status == (UNAVAILABLE if kind in (ProviderErrorKind.TRANSIENT, ProviderErrorKind.OUTCOME_UNKNOWN) else 502)


def test_a_dead_grant_reads_differently_from_the_provider_and_from_the_connection() -> None:
    # The same code, two places: the provider refused a grant (a gateway error on the connect page)
    # versus a stored connection that needs the end user (the vend API's 409).
    provider_said = ProviderError(ProviderErrorKind.REAUTHORIZATION_REQUIRED, "x", provider="acme")
    assert provider_said.code == NeedsReauthorization.code == "needs_reauth"
    assert http_status(provider_said) == 502
    assert http_status(NeedsReauthorization("x")) == 409


def test_an_unknown_code_is_an_internal_error() -> None:
    class Surprise(TokenBrokerError):
        code = "surprise"

    assert http_status(Surprise("x")) == 500
