"""Layering the design asks for: storage does not need the providers, the connect flow does not
need the settings module, and the names callers know keep working."""

from __future__ import annotations

import subprocess
import sys


def imported_by(module: str) -> set[str]:
    """The tokenbroker modules a fresh interpreter loads to import ``module``."""
    script = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('tokenbroker')))"
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(answer.stdout.split())


def test_the_app_credentials_store_does_not_import_the_providers() -> None:
    loaded = imported_by("tokenbroker.stores.app_credentials")
    assert "tokenbroker.credentials" in loaded
    assert not {m for m in loaded if m.startswith("tokenbroker.providers")}


def test_the_connect_flow_does_not_import_the_settings() -> None:
    loaded = imported_by("tokenbroker.connect")
    assert "tokenbroker.connect" in loaded
    assert "tokenbroker.settings" not in loaded


def test_moved_names_are_still_importable_from_their_old_homes() -> None:
    from tokenbroker import credentials, errors, providers, settings  # noqa: PLC0415
    from tokenbroker.providers import base  # noqa: PLC0415

    assert providers.AppCredentials is base.AppCredentials is credentials.AppCredentials
    assert settings.ConfigurationError is errors.ConfigurationError
