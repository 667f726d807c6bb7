"""The HTML pages: escaping, headers, and error pages that say what happened and what to do."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from tokenbroker import pages
from tokenbroker.connect import AuthorizationDenied, ForbiddenRequest, InvalidState, SessionNotFound
from tokenbroker.errors import (
    AccountProblem,
    InvalidInput,
    ProviderConfigurationError,
    ProviderError,
    ReauthorizationRequired,
    TokenBrokerError,
    TransientProviderError,
    UnknownProvider,
)

EVIL = "<script>alert('x')</script>\"&"


def test_every_page_carries_the_security_headers() -> None:
    for response in (
        pages.login_page(provider="Workly"),
        pages.success_page(provider="Worksection"),
        pages.error_page(SessionNotFound("gone")),
        pages.not_found_page(),
    ):
        headers = response.headers
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"
        csp = headers["Content-Security-Policy"]
        assert csp.startswith("default-src 'none'; ")
        assert "form-action 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "script-src" not in csp and "unsafe" not in csp


def test_the_style_hash_in_the_policy_matches_the_inline_style() -> None:
    page = pages.success_page(provider="Workly")
    style = re.search(r"<style>(.*?)</style>", page.body, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in page.headers["Content-Security-Policy"]


def test_redirects_carry_the_headers_too() -> None:
    response = pages.redirect("https://app.example.com/done?status=connected")
    assert response.status == 302
    assert response.headers["Location"] == "https://app.example.com/done?status=connected"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"


def test_login_page_escapes_everything_it_echoes() -> None:
    page = pages.login_page(provider=EVIL, email=EVIL, error=EVIL, notice=EVIL, status=401)
    assert page.status == 401
    assert "<script>" not in page.body
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;&amp;" in page.body
    assert page.body.count('role="alert"') == 1
    assert page.body.count('role="status"') == 1


def test_login_page_lists_the_return_origin_as_a_form_target() -> None:
    page = pages.login_page(provider="Workly", form_targets=("https://app.example.com",))
    assert "form-action 'self' https://app.example.com;" in page.headers["Content-Security-Policy"]


def test_remember_is_unchecked_unless_asked() -> None:
    assert " checked" not in pages.login_page(provider="Workly").body
    assert (
        'value="yes" aria-describedby="remember-help" checked>'
        in pages.login_page(provider="Workly", remember=True).body
    )


def test_success_page_escapes_the_account() -> None:
    page = pages.success_page(provider="Workly", account=EVIL, reauthorized=True)
    assert "<script>" not in page.body
    assert "reconnected" in page.body


@pytest.mark.parametrize(
    ("error", "status", "phrase"),
    [
        (SessionNotFound("x"), 404, "connect link cannot be used"),
        (InvalidState("x"), 400, "cannot be completed"),
        (AuthorizationDenied("x"), 403, "Access was not granted"),
        (ForbiddenRequest("x"), 403, "another site"),
        (UnknownProvider("x"), 404, "Unknown service"),
        (InvalidInput("connection_id is bad"), 400, "connection_id is bad"),
        (ReauthorizationRequired("x", provider="worksection"), 502, "could not complete"),
        (ProviderConfigurationError("x", provider="workly"), 502, "support team"),
        (AccountProblem("x", provider="workly"), 502, "subscription"),
        (TransientProviderError("x", provider="workly", retry_after=30), 503, "not answering"),
        (TokenBrokerError("boom"), 500, "problem on our side"),
    ],
)
def test_error_pages_say_what_happened_and_what_to_do(error: TokenBrokerError, status: int, phrase: str) -> None:
    page = pages.error_page(error)
    assert page.status == status
    assert phrase in page.body
    assert "again" in page.body or "support team" in page.body  # and what to do about it


def test_transient_errors_say_when_to_retry() -> None:
    page = pages.error_page(TransientProviderError("x", provider="workly", retry_after=12.4))
    assert page.headers["Retry-After"] == "12"


def test_provider_details_are_escaped() -> None:
    page = pages.error_page(ProviderError(EVIL, provider="workly", provider_code=EVIL))
    assert "<script>" not in page.body
    assert EVIL not in page.body  # the provider's message itself is not shown at all
