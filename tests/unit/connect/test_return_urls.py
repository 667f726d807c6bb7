"""return_to allow-list: exact scheme, host and port; path prefix on a "/" boundary; nothing clever."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenbroker.api.statuses import http_status
from tokenbroker.errors import (
    InvalidInput,
)
from tokenbroker.return_urls import ReturnUrlPolicy, origin_of, with_query

POLICY = ReturnUrlPolicy(
    [
        "https://app.example.com/integrations",
        "https://admin.example.com/",
        "http://localhost:8080/cb/",
    ]
)

ALLOWED = [
    "https://app.example.com/integrations",
    "https://app.example.com/integrations/",
    "https://app.example.com/integrations/done?x=1&y=%20z#frag",
    "https://app.example.com:443/integrations/done",
    "https://APP.example.com/integrations",  # host names are case-insensitive
    "https://admin.example.com/",
    "https://admin.example.com",
    "https://admin.example.com/anything/at/all",
    "https://admin.example.com/users/@me",  # "@" in the path is not userinfo
    "http://localhost:8080/cb/",
    "http://localhost:8080/cb",
    "http://localhost:8080/cb/done",
]

# Open-redirect payloads: every one must be refused.
REFUSED = [
    "https://evil.com/integrations",
    "https://app.example.com.evil.com/integrations",
    "https://app.example.com@evil.com/integrations",  # userinfo trick
    "https://app.example.com:443@evil.com/integrations",
    "https://user:pass@app.example.com/integrations",
    "https://app.example.com\\@evil.com/integrations",  # backslash
    "https:\\\\evil.com/integrations",
    "https:/\\evil.com",
    "//evil.com/integrations",  # scheme-relative
    "///evil.com",
    "/integrations",  # relative
    "evil.com",
    "javascript:alert(1)",
    "JavaScript:alert(1)//https://app.example.com/integrations",
    "jAvAsCrIpT://app.example.com/integrations",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "HTTPS://app.example.com/integrations",  # mixed-case scheme
    "Https://app.example.com/integrations",
    "http://app.example.com/integrations",  # scheme downgrade
    "https://app.example.com:8443/integrations",  # other port
    "https://app.example.com/integrationsX",  # not on a "/" boundary
    "https://app.example.com/integrations-evil",
    "https://app.example.com/integrations/../admin",  # dot segments
    "https://app.example.com/integrations/%2e%2e/admin",
    "https://app.example.com/integrations/%2E%2E",
    "https://app.example.com/integrations/.",
    "https://app.example.com/integrations%2f..%2fadmin",  # encoded separators
    "https://app.example.com/integrations/%5c..%5cadmin",
    "https://app.example.com/integrations/%00",
    "https://app.example.com/integrations/%zz",  # broken percent-encoding
    "https://\u0430pp.example.com/integrations",  # Cyrillic a: IDN homograph
    "https://xn--pp-8kc.example.com/integrations",  # its punycode form is just another host
    "https://app.example.com/integrations/é",
    " https://app.example.com/integrations",  # whitespace
    "https://app.example.com/integrations ",
    "https://app.example.com/integ rations",
    "https://app.example.com/integrations\n",
    "https://app.example.com/integrations\r\nSet-Cookie:x=1",
    "https://app.example.com/integrations\t",
    "https://app.example.com\x00.evil.com/integrations",
    "https://app.example.com/integrations\x7f",
    "https://app.example.com./integrations",  # trailing dot is another name
    "https://[::1]/integrations",
    "https://127.0.0.1/integrations",
    "https://app.example.com/integrations<script>",
    'https://app.example.com/integrations"onmouseover="alert(1)',
    "https://app.example.com:99999/integrations",
    "https://app.example.com:/integrations",
    "https://app.example.com/" + "a" * 2100,
    "",
    "https://localhost:8080/cb/",  # https is not http
    "http://localhost:8081/cb/",
    "http://localhost:8080/c",
]


# The prefix of GitHub issue 13, and paths under it that servers decode or normalise into something
# else. Each one was accepted before segments were read the way Tomcat, Spring or IIS read them.
DONE = ReturnUrlPolicy(["https://app.example.com/done"])

DONE_ALLOWED = [
    "https://app.example.com/done/step-2?x=1",
    "https://app.example.com/done",
    "https://app.example.com/done/.well-known/x",  # starts with a dot, but is a name
    "https://app.example.com/done/v1.2..3/a...b",
    "https://app.example.com/done/step;v=1/x",  # path parameters on an ordinary segment
    "https://app.example.com/done/%7Euser/caf%C3%A9",  # decodes to ordinary UTF-8 names
    "https://app.example.com/done/100%25",  # a literal percent sign
    "https://app.example.com/done/a%2520b",  # double-encoded space: still a name
    "https://app.example.com/done/x?next=/../../admin",  # the query is not a path
]

DONE_REFUSED = [
    "https://app.example.com/done/..;/x",  # Tomcat/Spring: "..;" is ".."
    "https://app.example.com/done/..;jsessionid=abc/x",
    "https://app.example.com/done/..;",
    "https://app.example.com/done/.;x/y",
    "https://app.example.com/done/%2e%2e;/x",
    "https://app.example.com/done/..%3b/x",  # the ";" itself encoded
    "https://app.example.com/done/%252e%252e/x",  # double-encoded ".."
    "https://app.example.com/done/%252E%252E",
    "https://app.example.com/done/%252e/x",  # double-encoded "."
    "https://app.example.com/done/.%252e/x",  # mixed levels
    "https://app.example.com/done/%25252e%25252e/x",  # triple-encoded
    "https://app.example.com/done/%252e%252e%253b/x",
    "https://app.example.com/done/%c0%ae%c0%ae/x",  # overlong UTF-8 dots (old Java, IIS)
    "https://app.example.com/done/%EF%BC%8E%EF%BC%8E/x",  # full-width dots, NFKC-folded to ".."
    "https://app.example.com/done/..%20/x",  # a trailing space some servers trim
    "https://app.example.com/done/x%252f..%252fadmin",  # double-encoded "/"
    "https://app.example.com/done/x%255c..%255cadmin",  # double-encoded "\\"
    "https://app.example.com/done/x%25252f..",  # triple-encoded "/"
    "https://app.example.com/done/x%2500",  # double-encoded NUL
    "https://app.example.com/done/%EF%BC%8Fadmin",  # full-width "/"
    "https://app.example.com/done/%25u002e%25u002e/x",  # IIS %u escape, once encoded
    "https://app.example.com/done/x%0a",  # control characters once decoded
    "https://app.example.com/done/%" + "25" * 8 + "2e",  # "." encoded 9 times: deeper than any honest URL
]


@pytest.mark.parametrize("url", DONE_ALLOWED)
def test_ordinary_paths_under_the_prefix_are_allowed(url: str) -> None:
    assert DONE.check(url) == url


@pytest.mark.parametrize("url", DONE_REFUSED)
def test_segments_that_decode_or_normalise_to_dots_or_separators_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        DONE.check(url)
    assert "dot segments or encoded separators" in raised.value.message
    assert url not in raised.value.message


def fully_decoded_segments(path: str) -> list[str]:
    """Decode until nothing changes, as a server decoding over and over would, then split."""
    for _ in range(20):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    return [segment.split(";", 1)[0] for segment in path.split("/")]


@given(st.text(alphabet=[".", "%", "2", "5", "e", "E", "f", "3", "b", "B", ";", "/", "a"], max_size=24))
def test_nothing_accepted_decodes_to_a_dot_segment(tail: str) -> None:
    url = "https://app.example.com/done/" + tail
    try:
        DONE.check(url)
    except InvalidInput:
        return
    assert not {".", ".."} & set(fully_decoded_segments("/done/" + tail))


@pytest.mark.parametrize("url", ALLOWED)
def test_allowed(url: str) -> None:
    assert POLICY.check(url) == url


@pytest.mark.parametrize("url", REFUSED)
def test_refused(url: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        POLICY.check(url)
    assert raised.value.field == "return_to"
    assert http_status(raised.value) == 400
    if len(url) > 12:
        assert url not in raised.value.message  # never echoed


def test_an_empty_allow_list_refuses_everything() -> None:
    with pytest.raises(InvalidInput):
        ReturnUrlPolicy([]).check("https://app.example.com/")


@pytest.mark.parametrize(
    "prefix", ["javascript:alert(1)", "https://x.example.com/?q=1", "//x.example.com", "https://u@x.example.com/"]
)
def test_bad_allow_list_entries_are_configuration_errors(prefix: str) -> None:
    with pytest.raises(InvalidInput):
        ReturnUrlPolicy([prefix])


def test_origin_of() -> None:
    assert origin_of("https://app.example.com:443/x?y#z") == "https://app.example.com"
    assert origin_of("http://localhost:8080/cb") == "http://localhost:8080"
    assert POLICY.origins == ("https://app.example.com", "https://admin.example.com", "http://localhost:8080")


def test_with_query_appends_and_keeps_the_callers_query_and_fragment() -> None:
    url = with_query("https://app.example.com/done?a=b%20c&status=evil#top", {"status": "connected", "provider": "w"})
    assert url == "https://app.example.com/done?a=b%20c&status=connected&provider=w#top"
    assert with_query("https://app.example.com/done", {"connection_id": "a b"}) == (
        "https://app.example.com/done?connection_id=a+b"
    )


@given(st.text(max_size=60))
def test_arbitrary_suffixes_never_escape_the_allowed_origin(suffix: str) -> None:
    url = "https://app.example.com/integrations" + suffix
    try:
        POLICY.check(url)
    except InvalidInput:
        return
    # Whatever was accepted really is on the allowed origin, under the allowed path.
    assert origin_of(url) == "https://app.example.com"
    assert "\\" not in url and "@" not in url.split("/", 3)[2]
    path = url.split("/", 3)[3].split("?")[0].split("#")[0]
    assert path == "integrations" or path.startswith("integrations/")
    assert "/../" not in "/" + path + "/" and "/./" not in "/" + path + "/"


@given(st.one_of(st.text(max_size=80), st.text(max_size=40).map(lambda t: t + "app.example.com/integrations")))
def test_whatever_is_accepted_starts_on_an_allowed_origin(url: str) -> None:
    try:
        POLICY.check(url)
    except InvalidInput:
        return
    origins = ("https://app.example.com", "https://admin.example.com", "http://localhost:8080")
    lowered = url.lower()
    assert any(
        lowered.startswith(origin) and lowered[len(origin) : len(origin) + 1] in ("", "/", ":") for origin in origins
    )
