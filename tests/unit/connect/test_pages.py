"""The HTML pages: escaping, headers, branding, and error pages that say what happened and what to do."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import subprocess
import sys
from collections.abc import Callable

import pytest
from tokenbroker import pages
from tokenbroker.connect import (
    AuthorizationDenied,
    BrowserMismatch,
    ConnectSessionExpired,
    ConnectSessionNotCompleted,
    EndUserMismatch,
    ForbiddenRequest,
    InvalidState,
    LinkUsedUp,
    SessionNotFound,
)
from tokenbroker.errors import (
    ConfigurationError,
    InvalidInput,
    ProviderError,
    ProviderErrorKind,
    TokenBrokerError,
    UnknownProvider,
)
from tokenbroker.pages import Branding
from tokenbroker.settings import Settings

EVIL = "<script>alert('x')</script>\"&"
ACME = Branding.of("Acme CRM", None, None)
LOGO = "https://cdn.acme.example:8443/brand/logo.png?v=2"
BRANDED = Branding.of("Acme CRM", LOGO, "#ffcc00")
GENERIC = Branding.of(None, None, None)
RETURN = "https://app.example.com/settings?tab=integrations"
RUSSIAN = "Ссылка для восстановления пароля отправлена на вашу почту"


def every_page(branding: Branding) -> list[pages.HtmlResponse]:
    return [
        pages.login_page(branding=branding, provider="Workly"),
        pages.success_page(branding=branding, provider="Worksection"),
        pages.success_page(branding=branding, provider="Worksection", pending=True),
        pages.error_page(SessionNotFound("gone"), branding=branding),
        pages.error_page(LinkUsedUp("x"), branding=branding, return_to="https://app.example.com/settings"),
        pages.not_found_page(branding=branding),
    ]


def served_style(page: pages.HtmlResponse) -> str:
    style = re.search(r"<style>(.*?)</style>", page.body, re.S)
    assert style is not None
    return style.group(1)


def visible_text(page: pages.HtmlResponse) -> str:
    body = page.body.split("<main>", 1)[1]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


# --- headers and policy ----------------------------------------------------------------------------


@pytest.mark.parametrize("branding", [GENERIC, ACME, BRANDED], ids=["generic", "named", "logo+accent"])
def test_every_page_carries_the_security_headers(branding: Branding) -> None:
    for response in every_page(branding):
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


@pytest.mark.parametrize("branding", [GENERIC, ACME, BRANDED], ids=["generic", "named", "logo+accent"])
def test_the_style_hash_in_the_policy_matches_the_served_style(branding: Branding) -> None:
    for page in every_page(branding):
        digest = base64.b64encode(hashlib.sha256(served_style(page).encode()).digest()).decode()
        assert f"style-src 'sha256-{digest}';" in page.headers["Content-Security-Policy"]


def test_an_accent_colour_changes_the_style_and_so_its_hash() -> None:
    plain = pages.success_page(branding=ACME, provider="Workly")
    accented = pages.success_page(branding=Branding.of("Acme CRM", None, "#2e7d32"), provider="Workly")
    assert served_style(plain) != served_style(accented)
    assert "#2e7d32" in served_style(accented)
    policy = re.compile(r"style-src '([^']+)'")
    plain_hash = policy.search(plain.headers["Content-Security-Policy"])
    accented_hash = policy.search(accented.headers["Content-Security-Policy"])
    assert plain_hash is not None and accented_hash is not None
    assert plain_hash.group(1) != accented_hash.group(1)


def test_without_a_logo_pages_may_load_no_image_at_all() -> None:
    for page in every_page(ACME):
        assert "img-src" not in page.headers["Content-Security-Policy"]
        assert "<img" not in page.body


def test_a_logo_is_shown_and_allowed_from_its_exact_origin_only() -> None:
    for page in every_page(BRANDED):
        csp = page.headers["Content-Security-Policy"]
        assert re.findall(r"img-src [^;]*;", csp) == ["img-src https://cdn.acme.example:8443;"]
        assert '<img src="https://cdn.acme.example:8443/brand/logo.png?v=2" alt="Acme CRM">' in page.body
    default_port = Branding.of("Acme CRM", "https://cdn.acme.example:443/logo.svg", None)
    csp = pages.not_found_page(branding=default_port).headers["Content-Security-Policy"]
    assert "img-src https://cdn.acme.example;" in csp


def test_pages_load_nothing_but_the_logo() -> None:
    for page in every_page(BRANDED):
        body = page.body.lower()
        assert "<script" not in body and "<link" not in body and "@import" not in body and "url(" not in body
        assert "<iframe" not in body and "<object" not in body
        assert body.count("<img") == 1


def test_redirects_carry_the_headers_too() -> None:
    response = pages.redirect("https://app.example.com/done?status=connected")
    assert response.status == 302
    assert response.headers["Location"] == "https://app.example.com/done?status=connected"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"


# --- naming the application ------------------------------------------------------------------------


def test_every_page_names_the_application() -> None:
    for page in every_page(ACME):
        assert "Acme CRM" in visible_text(page), page.body
        assert "Acme CRM" in page.body.split("<title>", 1)[1].split("</title>", 1)[0]
        assert "the application" not in page.body.lower()


def test_the_login_page_says_who_wants_to_connect_in_title_and_heading() -> None:
    page = pages.login_page(branding=ACME, provider="Workly")
    assert "<title>Acme CRM wants to connect your Workly account</title>" in page.body
    assert "<h1>Acme CRM wants to connect your Workly account</h1>" in page.body
    assert pages.connect_heading(ACME, "Worksection") == "Acme CRM wants to connect your Worksection account"


def test_the_generic_name_still_reads_as_a_sentence() -> None:
    page = pages.login_page(branding=GENERIC, provider="Workly")
    assert "<h1>The application wants to connect your Workly account</h1>" in page.body


def test_the_login_page_says_where_the_password_goes_and_when_it_is_kept() -> None:
    page = pages.login_page(branding=ACME, provider="Workly", provider_host="api.workly.io")
    text = visible_text(page)
    assert "Acme CRM uses your Workly sign-in" in text
    assert "sends your e-mail and password to Workly (host api.workly.io)" in text
    assert "Acme CRM never sees your password" in text
    assert "stored only if you tick this" in text
    assert "(host" not in visible_text(pages.login_page(branding=ACME, provider="Workly"))


def test_the_success_page_names_the_application_and_links_back() -> None:
    page = pages.success_page(
        branding=ACME, provider="Worksection", account="acme-team", return_to="https://app.example.com/settings"
    )
    assert "<h1>Your Worksection account is connected to Acme CRM</h1>" in page.body
    assert "The Worksection account acme-team is now connected" in page.body
    assert '<a class="button" href="https://app.example.com/settings">Back to Acme CRM</a>' in page.body
    assert "<a " not in pages.success_page(branding=ACME, provider="Worksection").body


def test_a_pending_connection_sends_the_user_back_to_the_application_to_finish() -> None:
    page = pages.success_page(
        branding=ACME, provider="Worksection", pending=True, return_to="https://app.example.com/settings"
    )
    assert "<h1>Almost done: go back to Acme CRM to finish connecting</h1>" in page.body
    assert "is connected" not in page.body and "now connected" not in page.body
    assert '<a class="button" href="https://app.example.com/settings">Back to Acme CRM</a>' in page.body


@pytest.mark.parametrize(
    ("make", "heading"),
    [
        (lambda b: pages.error_page(LinkUsedUp("x"), branding=b, return_to=RETURN), "This connect link is used up"),
        (lambda b: pages.error_page(InvalidState("x"), branding=b, return_to=RETURN), "cannot be completed"),
    ],
)
def test_error_pages_link_back_to_the_application_when_return_to_is_known(
    make: Callable[[Branding], pages.HtmlResponse], heading: str
) -> None:
    page = make(ACME)
    assert heading in page.body
    assert f'<a class="button" href="{RETURN}">Back to Acme CRM</a>' in page.body


def test_error_pages_without_return_to_tell_the_user_to_go_back_to_the_app_by_name() -> None:
    page = pages.error_page(SessionNotFound("x"), branding=ACME)
    assert "<a " not in page.body
    assert "Go back to Acme CRM and start connecting again." in page.body
    assert "Go back to the application" in pages.error_page(SessionNotFound("x"), branding=GENERIC).body


# --- escaping --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", '"Acme" & Co', "</title><style>*{}</style>"])
def test_a_hostile_app_name_renders_inert_everywhere(name: str) -> None:
    branding = Branding.of(name, LOGO, None)
    for page in every_page(branding):
        assert "<script>" not in page.body
        assert page.body.count("<style>") == 1 and page.body.count("</title>") == 1
        assert '"Acme"' not in page.body
        assert html.escape(name) in page.body


@pytest.mark.parametrize(
    "return_to",
    ['https://app.example.com/x?a="><script>alert(1)</script>', "javascript:alert(1)", "data:text/html,hi"],
)
def test_a_hostile_return_to_never_becomes_markup_or_a_script_link(return_to: str) -> None:
    for page in (
        pages.error_page(SessionNotFound("x"), branding=ACME, return_to=return_to),
        pages.success_page(branding=ACME, provider="Workly", pending=True, return_to=return_to),
    ):
        assert "<script>" not in page.body
        assert "javascript:" not in page.body and "data:" not in page.body
        assert 'href="https://app.example.com/x?a="' not in page.body


def test_login_page_escapes_everything_it_echoes() -> None:
    page = pages.login_page(
        branding=ACME,
        provider=EVIL,
        provider_host=EVIL,
        email=EVIL,
        error=EVIL,
        notice=EVIL,
        notice_original=EVIL,
        status=401,
    )
    assert page.status == 401
    assert "<script>" not in page.body
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;&amp;" in page.body
    assert page.body.count('role="alert"') == 1
    assert page.body.count('role="status"') == 1


def test_success_page_escapes_the_account() -> None:
    page = pages.success_page(branding=ACME, provider="Workly", account=EVIL, reauthorized=True)
    assert "<script>" not in page.body
    assert "reconnected" in page.body


# --- the password form -----------------------------------------------------------------------------


def test_login_page_lists_the_return_origin_as_a_form_target() -> None:
    page = pages.login_page(branding=ACME, provider="Workly", form_targets=("https://app.example.com",))
    assert "form-action 'self' https://app.example.com;" in page.headers["Content-Security-Policy"]


def test_remember_is_unchecked_unless_asked() -> None:
    assert " checked" not in pages.login_page(branding=ACME, provider="Workly").body
    assert (
        'value="yes" aria-describedby="remember-help" checked>'
        in pages.login_page(branding=ACME, provider="Workly", remember=True).body
    )


def test_the_providers_russian_notice_is_quoted_beside_our_summary() -> None:
    summary = "If the e-mail belongs to a Workly account, Workly has sent a link to reset the password."
    page = pages.login_page(branding=ACME, provider="Workly", notice=summary, notice_original=RUSSIAN)
    assert f'<p class="notice" role="status">{summary}</p>' in page.body
    quote = re.search(r"<figure><figcaption>(.*?)</figcaption><blockquote([^>]*)><p>(.*?)</p>", page.body)
    assert quote is not None
    assert quote.group(1) == "Workly&rsquo;s own message:"
    assert quote.group(2) == ' lang="ru"'
    assert quote.group(3) == RUSSIAN
    assert page.body.index(summary) < page.body.index(RUSSIAN)


def test_a_latin_provider_message_gets_no_russian_language_tag() -> None:
    page = pages.login_page(branding=ACME, provider="Workly", notice="Sent.", notice_original="Reset link sent")
    assert "<blockquote><p>Reset link sent</p></blockquote>" in page.body
    assert "<figure>" not in pages.login_page(branding=ACME, provider="Workly", notice="Sent.").body


@pytest.mark.parametrize(
    ("attempts_left", "phrase"),
    [(None, None), (5, None), (4, "4 more sign-in attempts"), (1, "1 more sign-in attempt."), (0, "no sign-in")],
)
def test_the_form_says_how_many_attempts_the_link_has_left(attempts_left: int | None, phrase: str | None) -> None:
    text = visible_text(pages.login_page(branding=ACME, provider="Workly", attempts_left=attempts_left))
    if phrase is None:
        assert "attempt" not in text
    else:
        assert phrase in text


# --- contrast --------------------------------------------------------------------------------------


def test_contrast_ratio_matches_wcag_reference_values() -> None:
    assert pages.contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert pages.contrast_ratio("#ffffff", "#ffffff") == pytest.approx(1.0)
    assert pages.contrast_ratio("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)  # the classic AA grey


ACCENTS = [f"#{r:02x}{g:02x}{b:02x}" for r in range(0, 256, 51) for g in range(0, 256, 51) for b in range(0, 256, 51)]
ACCENTS += ["#767676", "#777777", "#ff6600", "#ffcc00", "#00a3e0", "#1a5fb4", "#e01b24", "#808080", "#949494"]


@pytest.mark.parametrize("accent", ACCENTS)
def test_text_on_the_accent_and_accent_links_reach_aa(accent: str) -> None:
    style = served_style(pages.success_page(branding=Branding.of("Acme", None, accent), provider="Workly"))
    button = re.search(r"button,a\.button\{[^}]*background:(#[0-9a-f]{6});color:(#[0-9a-f]{6})\}", style)
    link = re.search(r"(?:^|\})a\{color:(#[0-9a-f]{6})\}", style)
    assert button is not None and link is not None
    assert button.group(1) == accent
    assert pages.contrast_ratio(button.group(2), accent) >= 4.5
    assert pages.contrast_ratio(link.group(1), "#ffffff") >= 4.5
    assert f"outline:3px solid {link.group(1)}" in style


def test_dark_accents_get_white_text_and_light_ones_black() -> None:
    assert pages.text_on("#1a5fb4") == "#ffffff"
    assert pages.text_on("#ffcc00") == "#000000"
    assert pages.readable_on_white("#1a5fb4") == "#1a5fb4"  # already readable: kept as chosen
    assert pages.readable_on_white("#ffcc00") != "#ffcc00"


# --- a phone screen --------------------------------------------------------------------------------


def test_pages_fit_a_390px_viewport() -> None:
    # No browser here (tests/e2e/browser has one): the rules that keep a 390 px screen from
    # scrolling sideways are present: viewport meta, bounded width, wrapping of long words and
    # logos scaled to the column.
    for page in every_page(BRANDED):
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page.body
        style = served_style(page)
        assert "main{max-width:32rem;" in style
        assert "overflow-wrap:anywhere" in style
        assert ".brand img{display:block;max-width:100%;" in style
        assert "flex-wrap:wrap" in style
        assert not re.search(r"(?<![-\w])width:\s*\d{3,}px", style)


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.acme.example/logo.png",
        "ftp://cdn.acme.example/logo.png",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "//cdn.acme.example/logo.png",
        "https://user:pass@cdn.acme.example/logo.png",
        "https://user@cdn.acme.example/logo.png",
        "https://cdn.acme.example/lo'go.png",
        'https://cdn.acme.example/lo"go.png',
        "https://cdn.acme.example/lo go.png",
        "https://cdn.acme.example/logo.png\n",
        "https://cdn.acme.example/" + "a" * 2048,
        "HTTPS://cdn.acme.example/logo.png",
        "https://cdn.acme.example;img-src=*/logo.png",
        "https://cdn.acmé.example/logo.png",
    ],
)
def test_a_bad_logo_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Branding.of("Acme", url, None)
    assert url not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    ["https://cdn.acme.example/logo.png", "http://127.0.0.1:4566/logo.png", "http://localhost:8000/l.svg"],
)
def test_https_and_local_logo_urls_are_accepted(url: str) -> None:
    assert Branding.of("Acme", url, None).logo_url == url


@pytest.mark.parametrize("colour", ["red", "#fff", "#ggggggg", "#12345", "#1234567", "1a5fb4", "#1a5fb4;x"])
def test_a_bad_accent_colour_is_refused(colour: str) -> None:
    with pytest.raises(ConfigurationError):
        Branding.of("Acme", None, colour)


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "Acme\nCRM", "Acme\u202eMRC", "Acme\x00"])
def test_a_bad_app_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigurationError):
        Branding.of(name, None, None)


def test_branding_is_normalised() -> None:
    branding = Branding.of("  Acme CRM  ", "", "#1A5FB4")
    assert branding == Branding("Acme CRM", None, "#1a5fb4")
    assert Branding.of("x" * 64, None, None).app_name == "x" * 64


def test_branding_comes_from_the_settings() -> None:
    settings = Settings.from_env(
        {
            "TABLE_NAME": "t",
            "APP_NAME": "Acme CRM",
            "APP_LOGO_URL": LOGO,
            "APP_ACCENT_COLOR": "#ffcc00",
        }
    )
    assert (settings.app_name, settings.app_logo_url, settings.app_accent_color) == ("Acme CRM", LOGO, "#ffcc00")
    assert pages.branding_from_settings(settings) == BRANDED
    bare = Settings.from_env({"TABLE_NAME": "t", "APP_LOGO_URL": "", "APP_ACCENT_COLOR": ""})
    assert pages.branding_from_settings(bare) == GENERIC


def test_pages_add_no_third_party_import_to_the_handler() -> None:
    """The callback handler imports tokenbroker.connect anyway; pages may add only stdlib and ours."""
    script = (
        "import sys, tokenbroker.connect; before = set(sys.modules); import tokenbroker.pages; "
        "print(sorted(m for m in set(sys.modules) - before "
        "if m.split('.')[0] not in sys.stdlib_module_names and m.split('.')[0] != 'tokenbroker'))"
    )
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == "[]"


# --- error texts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "phrase"),
    [
        (SessionNotFound("x"), 404, "connect link cannot be used"),
        (InvalidState("x"), 400, "cannot be completed"),
        (AuthorizationDenied("x"), 403, "Access was not granted"),
        (ForbiddenRequest("x"), 403, "another site"),
        (BrowserMismatch("x"), 400, "another browser or in a private window"),
        (LinkUsedUp("x"), 429, "too many failed sign-in attempts"),
        (ConnectSessionExpired("x"), 410, "has expired"),
        (ConnectSessionNotCompleted("x"), 409, "not been completed"),
        (EndUserMismatch("x"), 403, "was discarded"),
        (UnknownProvider("x"), 404, "Unknown service"),
        (InvalidInput("connection_id is bad"), 400, "connection_id is bad"),
        (
            ProviderError(ProviderErrorKind.REAUTHORIZATION_REQUIRED, "x", provider="worksection"),
            502,
            "could not complete",
        ),
        (ProviderError(ProviderErrorKind.CONFIGURATION, "x", provider="workly"), 502, "support team"),
        (ProviderError(ProviderErrorKind.ACCOUNT, "x", provider="workly"), 502, "subscription"),
        (ProviderError(ProviderErrorKind.TRANSIENT, "x", provider="workly", retry_after=30), 503, "not answering"),
        (TokenBrokerError("boom"), 500, "problem on our side"),
    ],
)
def test_error_pages_say_what_happened_and_what_to_do(error: TokenBrokerError, status: int, phrase: str) -> None:
    page = pages.error_page(error, branding=ACME)
    assert page.status == status
    assert phrase in page.body
    assert "Acme CRM" in visible_text(page)  # and where to go: the application, by name
    assert "again" in page.body or "support team" in page.body or "new link" in page.body


def test_the_new_error_kinds_have_their_own_texts() -> None:
    generic = pages.error_page(TokenBrokerError("boom"), branding=ACME).body
    for error in (
        BrowserMismatch("x"),
        LinkUsedUp("x"),
        ConnectSessionExpired("x"),
        ConnectSessionNotCompleted("x"),
        EndUserMismatch("x"),
    ):
        body = pages.error_page(error, branding=ACME).body
        assert "problem on our side" not in body, error.code
        assert body != generic
    used_up = visible_text(pages.error_page(LinkUsedUp("x"), branding=ACME))
    assert "Go back to Acme CRM to get a new link." in used_up
    mismatch = visible_text(pages.error_page(BrowserMismatch("x"), branding=ACME))
    assert "Nothing was stored" in mismatch and "in this browser" in mismatch


def test_an_app_name_is_not_a_template() -> None:
    page = pages.error_page(LinkUsedUp("x"), branding=Branding.of("{app} Inc", None, None))
    assert "Go back to {app} Inc to get a new link." in page.body
    message = pages.error_page(InvalidInput("field {app} is bad"), branding=ACME)
    assert "field {app} is bad" in message.body


def test_transient_errors_say_when_to_retry() -> None:
    page = pages.error_page(
        ProviderError(ProviderErrorKind.TRANSIENT, "x", provider="workly", retry_after=12.4), branding=ACME
    )
    assert page.headers["Retry-After"] == "12"


def test_provider_details_are_escaped() -> None:
    page = pages.error_page(
        ProviderError(ProviderErrorKind.REFUSED, EVIL, provider="workly", provider_code=EVIL), branding=ACME
    )
    assert "<script>" not in page.body
    assert EVIL not in page.body  # the provider's message itself is not shown at all
