"""Asserting a provider's failure by its kind: the one taxonomy has no subclasses to catch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from tokenbroker.errors import ProviderError, ProviderErrorKind


@contextmanager
def raises_kind(kind: ProviderErrorKind, *, match: str | None = None) -> Iterator[pytest.ExceptionInfo[ProviderError]]:
    """Like ``pytest.raises(ProviderError)``, and the error must be of ``kind``."""
    with pytest.raises(ProviderError, match=match) as caught:
        yield caught
    assert caught.value.kind is kind, f"expected a {kind} error, got {caught.value!r}"
