"""Successful answers: scopes, expiry from the clock, token types, the account_url whitelist."""

from __future__ import annotations

import logging

import pytest
from tokenbroker.clock import ManualClock
from tokenbroker.providers.parsing import (
    MAX_EXPIRES_IN,
    expires_in_seconds,
    normalise_token_type,
    split_scopes,
    token_set_from_body,
)
from tokenbroker.providers.worksection import account_url_extra, validate_account_url

WORKSECTION = ("worksection.com",)


@pytest.mark.parametrize(
    ("value", "scopes"),
    [
        (
            "v1:list:employee,v1:view:employee,v1:delete:employee",
            ("v1:list:employee", "v1:view:employee", "v1:delete:employee"),
        ),
        ("openid email  profile", ("openid", "email", "profile")),
        ("projects_read, tasks_read,\tusers_read\n", ("projects_read", "tasks_read", "users_read")),
        (",,a,, ,b", ("a", "b")),
        ("a b a", ("a", "b")),
        (["a", "b c", 3, None, "d,e"], ("a", "b", "c", "d", "e")),
        ("", ()),
        (None, ()),
        (42, ()),
        ({"a": 1}, ()),
    ],
)
def test_split_scopes(value: object, scopes: tuple[str, ...]) -> None:
    assert split_scopes(value) == scopes


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (2_592_000, 2_592_000),
        ("86400", 86_400),
        (3599.9, 3599),
        (0.5, 1),  # found by test_properties: int(0.5) made a token expire as it arrived
        (None, 777),
        (0, 777),
        (-5, 777),
        ("soon", 777),
        (True, 777),
        (float("inf"), 777),
        (float("nan"), 777),
        (10**400, 777),
        (10**12, MAX_EXPIRES_IN),
        ([3600], 777),
    ],
)
def test_expires_in_falls_back_to_the_catalog_lifetime_never_to_forever(value: object, seconds: int) -> None:
    assert expires_in_seconds(value, 777) == seconds


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("bearer", "Bearer"),
        ("BEARER", "Bearer"),
        ("Bearer", "Bearer"),
        (None, "Bearer"),
        ("", "Bearer"),
        ("MAC", "MAC"),
    ],
)
def test_token_type_is_compared_case_insensitively(value: object, normalised: str) -> None:
    assert normalise_token_type(value) == normalised


def test_expiry_is_computed_from_the_clock_when_the_answer_arrived() -> None:
    clock = ManualClock(1_800_000_000.5)
    body = {"access_token": "a" * 40, "expires_in": 86_400, "token_type": "bearer", "refresh_token": "r" * 40}
    token = token_set_from_body(body, now=clock.now(), fallback_ttl=60)
    assert token.obtained_at == 1_800_000_000
    assert token.expires_at == 1_800_086_400
    clock.advance(100)
    later = token_set_from_body({"access_token": "b" * 40}, now=clock.now(), fallback_ttl=3600)
    assert later.expires_at == 1_800_003_700
    assert later.refresh_token is None
    assert later.token_type == "Bearer"


def test_scopes_default_to_the_requested_ones_when_the_answer_omits_them() -> None:
    token = token_set_from_body({"access_token": "x"}, now=0, fallback_ttl=1, requested_scopes=("a", "b"))
    assert token.scopes == ("a", "b")
    answered = token_set_from_body({"access_token": "x", "scope": "c"}, now=0, fallback_ttl=1, requested_scopes=("a",))
    assert answered.scopes == ("c",)


def test_a_body_without_access_token_is_not_a_token() -> None:
    for body in ({}, {"access_token": ""}, {"access_token": "  "}, {"access_token": 12}):
        with pytest.raises(ValueError, match="access_token"):
            token_set_from_body(body, now=0, fallback_ttl=1)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("https://acme.worksection.com", "https://acme.worksection.com"),
        ("https://acme.worksection.com/", "https://acme.worksection.com"),
        ("https://ACME.Worksection.com", "https://acme.worksection.com"),
        ("https://a.b.worksection.com:443", "https://a.b.worksection.com"),
        ("https://evil.com", None),
        ("http://x.worksection.com", None),
        ("https://worksection.com.evil.com", None),
        ("https://worksection.com", None),
        ("https://evilworksection.com", None),
        ("https://x.worksection.com:8443", None),
        ("https://user:pw@x.worksection.com", None),
        ("https://x.worksection.com/api", None),
        ("https://x.worksection.com?a=b", None),
        ("https://x.worksection.com#f", None),
        ("https://-bad-.worksection.com", None),
        ("https://a_b.worksection.com", None),
        ("javascript://x.worksection.com", None),
        ("//x.worksection.com", None),
        ("https://x.worksection.com\n.evil.com", None),
        ("https://[::1]", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_account_url_must_be_an_https_subdomain_of_a_configured_domain(value: object, accepted: str | None) -> None:
    assert validate_account_url(value, WORKSECTION) == accepted


def test_account_url_rules_may_name_an_exact_origin_for_sandboxes() -> None:
    rules = ("worksection.com", "http://127.0.0.1:8001")
    assert validate_account_url("http://127.0.0.1:8001", rules) == "http://127.0.0.1:8001"
    assert validate_account_url("http://127.0.0.1:8001/", rules) == "http://127.0.0.1:8001"
    assert validate_account_url("http://127.0.0.1:8002", rules) is None
    assert validate_account_url("https://127.0.0.1:8001", rules) is None
    assert validate_account_url("https://x.worksection.com", rules) == "https://x.worksection.com"


def test_a_bad_account_url_is_dropped_and_noted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tokenbroker.providers.worksection"):
        assert account_url_extra({"account_url": "https://evil.com"}, WORKSECTION, provider="worksection") == {}
    assert any("account_url" in record.getMessage() for record in caplog.records)
    assert account_url_extra({}, WORKSECTION, provider="worksection") == {}
    good = account_url_extra({"account_url": "https://acme.worksection.com"}, WORKSECTION, provider="worksection")
    assert good == {"account_url": "https://acme.worksection.com"}
