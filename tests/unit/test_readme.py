"""The README's catalog example is what a newcomer copies: it must load as written."""

from __future__ import annotations

import re
from pathlib import Path

from tokenbroker.providers import AuthMode, Catalog

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_catalog_example_loads_and_means_what_it_says(tmp_path: Path) -> None:
    match = re.search(r"```yaml\n(# my-providers\.yaml\n.*?)```", README.read_text(), re.S)
    assert match, "README lost its catalog example"
    extra = tmp_path / "my-providers.yaml"
    extra.write_text(match.group(1))
    catalog = Catalog.load(extra, environ={})
    acme = catalog.get("acme")
    assert acme.auth_mode is AuthMode.AUTHORIZATION_CODE
    assert acme.pkce and acme.rotates_refresh_token
    assert acme.access_token_ttl == 3600
    assert catalog.get("workly").token_url == "https://api.workly.uz/v1/oauth/token"
