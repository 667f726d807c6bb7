"""The packaged catalog, the extra file merged field by field, and clear validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenbroker.errors import InvalidInput, UnknownProvider
from tokenbroker.keys import ConnectionKey
from tokenbroker.providers import AuthMode, Catalog, CatalogEntry, CatalogError, ClientAuth
from tokenbroker.providers.catalog import PROVIDERS_FILE_ENV, parse_duration


def write(tmp_path: Path, text: str, name: str = "extra.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_packaged_catalog_has_workly_and_worksection(catalog: Catalog) -> None:
    assert catalog.names() == ("workly", "worksection")
    assert "workly" in catalog and "github" not in catalog
    assert len(catalog) == 2
    assert [entry.name for entry in catalog] == ["workly", "worksection"]


def test_workly_entry(catalog: Catalog) -> None:
    workly = catalog.get("workly")
    assert workly.kind == "workly"
    assert workly.auth_mode is AuthMode.PASSWORD
    assert workly.token_url == "https://api.workly.io/v1/oauth/token"
    assert workly.refresh_url == workly.token_url  # refresh on the same URL
    assert workly.password_reset_url == "https://api.workly.io/v1/sign-in/password-reset"
    assert workly.scope_separator == ","
    assert workly.access_token_ttl == 30 * 86_400
    assert workly.refresh_token_ttl == 60 * 86_400
    assert workly.rotates_refresh_token is True
    assert workly.pkce is False  # a password grant has no code to protect
    defaults = workly.default_credentials()
    assert defaults is not None and defaults.client_id == "6779ef20e75817b79602"
    assert defaults.client_secret == ""  # not in our material: configuration must supply it


def test_worksection_entry(catalog: Catalog) -> None:
    worksection = catalog.get("worksection")
    assert worksection.kind == "worksection"
    assert worksection.auth_mode is AuthMode.AUTHORIZATION_CODE
    assert worksection.authorize_url == "https://worksection.com/oauth2/authorize"
    assert worksection.token_url == "https://worksection.com/oauth2/token"
    assert worksection.refresh_url == "https://worksection.com/oauth2/refresh"
    assert worksection.userinfo_url == "https://worksection.com/oauth2/resource"
    assert worksection.account_url_domains == ("worksection.com",)
    assert worksection.access_token_ttl == 86_400
    assert worksection.default_credentials() is None
    assert worksection.label == "Worksection"
    # league/oauth2-server checks a code_verifier whenever a challenge was sent: PKCE on.
    assert worksection.pkce is True


def test_unknown_provider_raises_unknown_provider(catalog: Catalog) -> None:
    with pytest.raises(UnknownProvider, match="nope"):
        catalog.get("nope")


def test_extra_file_merges_field_by_field(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  workly:\n    base_url: https://api.workly.uz/v1\n")
    workly = Catalog.load(path, environ={}).get("workly")
    assert workly.token_url == "https://api.workly.uz/v1/oauth/token"
    assert workly.refresh_url == "https://api.workly.uz/v1/oauth/token"
    assert workly.password_reset_url == "https://api.workly.uz/v1/sign-in/password-reset"
    # Untouched fields keep the packaged values.
    assert workly.access_token_ttl == 30 * 86_400
    assert workly.default_client_id == "6779ef20e75817b79602"


def test_environment_names_the_extra_file_and_an_argument_wins(tmp_path: Path) -> None:
    from_env = write(tmp_path, "providers:\n  worksection:\n    access_token_ttl: 2h\n", "env.yaml")
    from_arg = write(tmp_path, "providers:\n  worksection:\n    access_token_ttl: 3h\n", "arg.yaml")
    env = {PROVIDERS_FILE_ENV: str(from_env)}
    assert Catalog.load(environ=env).get("worksection").access_token_ttl == 7200
    assert Catalog.load(from_arg, environ=env).get("worksection").access_token_ttl == 10_800
    assert Catalog.load(environ={PROVIDERS_FILE_ENV: ""}).get("worksection").access_token_ttl == 86_400


def test_new_generic_provider_with_every_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
providers:
  acme:
    display_name: ACME Cloud
    auth_mode: authorization_code
    authorize_url: https://id.acme.test/authorize?audience=api
    token_url: https://id.acme.test/token
    userinfo_url: https://id.acme.test/userinfo
    scope_separator: " "
    default_scopes: openid email offline_access
    authorize_params: {access_type: offline, prompt: consent, max_age: 0, include_granted: true}
    pkce: true
    client_auth: basic
    access_token_ttl: 900
    refresh_token_ttl: 2w
    rotates_refresh_token: false
    client_id: 12345
    client_secret: local-secret-value
""",
    )
    acme = Catalog.load(path, environ={}).get("acme")
    assert acme.kind == "generic"
    assert acme.client_auth is ClientAuth.BASIC
    assert acme.refresh_url == "https://id.acme.test/token"
    assert acme.default_scopes == ("openid", "email", "offline_access")
    assert acme.authorize_params == {
        "access_type": "offline",
        "prompt": "consent",
        "max_age": "0",
        "include_granted": "true",
    }
    assert acme.pkce is True
    assert acme.refresh_token_ttl == 14 * 86_400
    credentials = acme.default_credentials()
    assert credentials is not None and credentials.client_id == "12345"
    assert credentials.client_secret == "local-secret-value"
    assert "local-secret-value" not in repr(acme)
    assert acme.label == "ACME Cloud"


def test_null_resets_a_field_and_removes_an_entry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n  worksection:\n    default_scopes: null\n    refresh_url: null\n  workly: null\n",
    )
    catalog = Catalog.load(path, environ={})
    assert catalog.names() == ("worksection",)
    worksection = catalog.get("worksection")
    assert worksection.default_scopes == ()
    assert worksection.refresh_url == worksection.token_url


def test_merged_with_and_with_base_url(catalog: Catalog) -> None:
    moved = catalog.merged_with({"worksection": {"base_url": "http://127.0.0.1:8001/"}})
    worksection = moved.get("worksection")
    assert worksection.base_url == "http://127.0.0.1:8001"
    assert worksection.refresh_url == "http://127.0.0.1:8001/oauth2/refresh"
    assert catalog.get("worksection").base_url == "https://worksection.com"  # immutable
    again = worksection.with_base_url("https://worksection.com")
    assert again == catalog.get("worksection")
    assert catalog.get("workly").with_base_url("https://api.workly.uz/v1").refresh_url == (
        "https://api.workly.uz/v1/oauth/token"
    )


def test_direct_construction_resolves_templates_and_defaults() -> None:
    entry = CatalogEntry(
        name="peer",
        base_url="http://127.0.0.1:9000/o",
        token_url="{base_url}/token/",
        authorize_url="{base_url}/authorize/",
    )
    assert entry.token_url == "http://127.0.0.1:9000/o/token/"
    assert entry.refresh_url == entry.token_url
    assert entry.auth_mode is AuthMode.AUTHORIZATION_CODE
    assert entry.access_token_ttl == 3600
    assert entry.with_base_url("http://127.0.0.1:9001/o").refresh_url == "http://127.0.0.1:9001/o/token/"


def test_pkce_is_on_by_default_for_authorization_code_only() -> None:
    code_flow = CatalogEntry(name="peer", token_url="https://p.test/token", authorize_url="https://p.test/auth")
    assert code_flow.pkce is True
    password = CatalogEntry(name="pw", token_url="https://p.test/token", auth_mode=AuthMode.PASSWORD)
    assert password.pkce is False
    service = CatalogEntry(name="svc", token_url="https://p.test/token", auth_mode=AuthMode.CLIENT_CREDENTIALS)
    assert service.pkce is False
    assert code_flow.with_base_url("https://q.test").pkce is True


def test_an_entry_turns_pkce_off_and_null_restores_the_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n"
        "  worksection:\n"
        "    pkce: false\n"
        "  acme:\n"
        "    authorize_url: https://id.acme.test/authorize\n"
        "    token_url: https://id.acme.test/token\n",
    )
    catalog = Catalog.load(path, environ={})
    assert catalog.get("worksection").pkce is False
    assert catalog.get("acme").pkce is True  # a new entry that says nothing gets PKCE
    restored = catalog.merged_with({"worksection": {"pkce": None}})
    assert restored.get("worksection").pkce is True


@pytest.mark.parametrize(
    ("entry_yaml", "field", "problem"),
    [
        ("    colour: blue\n", "colour", "unknown field"),
        ("    auth_mode: implicit\n", "auth_mode", "authorization_code | password | client_credentials"),
        ("    client_auth: jwt\n", "client_auth", "body | basic"),
        ("    kind: magic\n", "kind", "generic | workly | worksection"),
        ("    pkce: yes please\n", "pkce", "true or false"),
        ("    access_token_ttl: soon\n", "access_token_ttl", "positive duration"),
        ("    access_token_ttl: 0\n", "access_token_ttl", "positive duration"),
        ("    refresh_token_ttl: -5\n", "refresh_token_ttl", "positive duration"),
        ("    token_url: ftp://files.test/token\n", "token_url", "absolute http"),
        ("    token_url: /relative/token\n", "token_url", "absolute http"),
        ("    token_url: 42\n", "token_url", "must be a string"),
        ("    userinfo_url: '{host}/me'\n", "userinfo_url", "only {base_url}"),
        ("    default_scopes: {a: b}\n", "default_scopes", "list of strings"),
        ("    authorize_params: [a, b]\n", "authorize_params", "mapping"),
        ("    scope_separator: '    '\n", "scope_separator", "1 to 3 characters"),
        ("    account_url_domains: [not a domain]\n", "account_url_domains", "base domains"),
        ("    client_id: x\n    default_client_id: y\n", "default_client_id", "given twice"),
    ],
)
def test_bad_fields_name_the_file_provider_and_field(tmp_path: Path, entry_yaml: str, field: str, problem: str) -> None:
    path = write(tmp_path, "providers:\n  worksection:\n" + entry_yaml)
    with pytest.raises(CatalogError) as caught:
        Catalog.load(path, environ={})
    error = caught.value
    assert error.source == str(path)
    assert error.provider == "worksection"
    assert error.field == field
    assert f"{path}: providers.worksection.{field}: " in str(error)
    assert problem in str(error)


def test_cross_field_rules(tmp_path: Path) -> None:
    no_token = write(tmp_path, "providers:\n  acme:\n    auth_mode: password\n")
    with pytest.raises(CatalogError, match=r"providers\.acme\.token_url: is required") as caught:
        Catalog.load(no_token, environ={})
    assert caught.value.source == str(no_token)

    no_authorize = write(tmp_path, "providers:\n  acme:\n    token_url: https://a.test/t\n")
    with pytest.raises(CatalogError, match=r"authorize_url: authorization_code providers need"):
        Catalog.load(no_authorize, environ={})

    no_base = write(tmp_path, "providers:\n  acme:\n    auth_mode: password\n    token_url: '{base_url}/t'\n")
    with pytest.raises(CatalogError, match=r"token_url: uses \{base_url\} but base_url is not set"):
        Catalog.load(no_base, environ={})

    # Removing base_url from a packaged entry breaks its templates: blame the file that did it.
    removed = write(tmp_path, "providers:\n  workly:\n    base_url: null\n")
    with pytest.raises(CatalogError, match="base_url is not set") as caught:
        Catalog.load(removed, environ={})
    assert caught.value.source == str(removed)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("providers: [a, b]\n", "'providers' must map"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("provider:\n  x: {}\n", "unknown top-level key(s) provider"),
        ("providers:\n  Bad Name:\n    token_url: https://x.test\n", "lower-case"),
        ("providers:\n  acme: [1]\n", "an entry must be a mapping"),
        ("providers:\n  acme: {token_url: https://x.test\n", "invalid YAML at line"),
    ],
)
def test_malformed_documents(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CatalogError, match=str(path)) as caught:
        Catalog.load(path, environ={})
    assert problem in str(caught.value)


def test_a_secret_never_appears_in_a_catalog_error(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  acme:\n    client_secret: hunter2-super-secret\n    pkce: maybe\n")
    with pytest.raises(CatalogError) as caught:
        Catalog.load(path, environ={})
    assert "hunter2" not in str(caught.value)
    broken = write(tmp_path, "providers:\n  acme:\n    client_secret: 'hunter2-super-secret\n", "broken.yaml")
    with pytest.raises(CatalogError) as caught:
        Catalog.load(broken, environ={})
    assert "hunter2" not in str(caught.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(CatalogError, match=r"absent\.yaml: cannot read the providers file"):
        Catalog.load(missing, environ={})


def test_empty_extra_file_changes_nothing(tmp_path: Path, catalog: Catalog) -> None:
    assert Catalog.load(write(tmp_path, ""), environ={}).names() == catalog.names()
    assert Catalog.from_yaml("providers: {}\n").get("workly") == catalog.get("workly")
    assert Catalog.from_yaml("", include_packaged=False).names() == ()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(60, 60), ("60", 60), ("90m", 5400), ("24h", 86_400), ("30d", 2_592_000), ("2w", 1_209_600), (" 5 s ", 5)],
)
def test_durations(value: object, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "1y", "", "h", None, [1]])
def test_bad_durations(value: object) -> None:
    assert parse_duration(value) is None


def test_the_app_credentials_prefix_cannot_name_a_provider(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("providers:\n  apps:\n    auth_mode: password\n    token_url: https://x.example/token\n")
    with pytest.raises(CatalogError, match="reserved"):
        Catalog.load(extra)
    with pytest.raises(InvalidInput, match="reserved"):
        ConnectionKey("apps", "c-1")
