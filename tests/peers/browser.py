"""The end user's browser, played with ``requests``: follow an authorization flow to the redirect.

Good enough for oidc-provider's development interactions (a login form, then a consent form):
GET the authorize URL, follow redirects, submit every form found with the values the form itself
carries plus the login fields, and stop at the first redirect to ``redirect_uri`` — which is never
requested, only read from the Location header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests

TIMEOUT = (3.05, 10.0)


@dataclass(frozen=True)
class AuthorizationResponse:
    """The query of the redirect back to the client. ``repr`` hides the code."""

    code: str = field(repr=False)
    state: str | None
    issuer: str | None


@dataclass
class _Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    """Collects <form>s with their <input name value> pairs (the first form is the one to submit)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self._open: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._open = _Form(values.get("action", ""), values.get("method", "get").lower())
            self.forms.append(self._open)
        elif tag == "input" and self._open is not None and values.get("name"):
            self._open.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def _is_redirect_to(url: str, redirect_uri: str) -> bool:
    target, expected = urlsplit(url), urlsplit(redirect_uri)
    return (target.scheme, target.netloc, target.path) == (expected.scheme, expected.netloc, expected.path)


def authorize_as(
    authorize_url: str, *, redirect_uri: str, login: str, password: str = "any password", max_steps: int = 12
) -> AuthorizationResponse:
    """Log in as ``login`` (any login works on the dev pages), consent, return the redirect's query."""
    with requests.Session() as browser:
        response = browser.get(authorize_url, allow_redirects=False, timeout=TIMEOUT)
        for _ in range(max_steps):
            url = response.url
            if response.is_redirect:
                location = urljoin(url, response.headers["location"])
                if _is_redirect_to(location, redirect_uri):
                    query = dict(parse_qsl(urlsplit(location).query))
                    if "error" in query:
                        raise AssertionError(f"authorization refused: {query}")
                    return AuthorizationResponse(query["code"], query.get("state"), query.get("iss"))
                response = browser.get(location, allow_redirects=False, timeout=TIMEOUT)
                continue
            assert response.status_code == 200, f"unexpected {response.status_code} from {urlsplit(url).path}"
            parser = _FormParser()
            parser.feed(response.text)
            assert parser.forms, f"no form on the interaction page {urlsplit(url).path}"
            form = parser.forms[0]
            data = dict(form.fields)
            if "login" in data or data.get("prompt") == "login":
                data.update(login=login, password=password)
            assert form.method == "post", f"unexpected form method {form.method}"
            response = browser.post(urljoin(url, form.action), data=data, allow_redirects=False, timeout=TIMEOUT)
    raise AssertionError(f"no redirect to the client after {max_steps} steps")
