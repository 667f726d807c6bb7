"""Drive the Worksection consent pages without a browser: parse the real HTML form, fill it in
like a person would, and return where the provider redirects to (without following it).

Pytest-free so that integration, reliability and e2e tests can all use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

import requests


class ConsentFailed(Exception):
    """The provider did not redirect; ``message`` is the page's alert text (never a secret)."""


@dataclass(slots=True)
class HtmlForm:
    action: str
    method: str
    values: dict[str, str] = field(default_factory=dict)  # hidden and pre-filled inputs
    inputs: list[str] = field(default_factory=list)  # every named input, in page order
    radios: dict[str, list[str]] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[HtmlForm] = []
        self.alerts: list[str] = []
        self._in_alert = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if a.get("role") == "alert":
            self._in_alert += 1
            self.alerts.append("")
        if tag == "form":
            self.forms.append(HtmlForm(action=a.get("action", ""), method=a.get("method", "get").lower()))
            return
        if not self.forms or "name" not in a:
            return
        form, name = self.forms[-1], a["name"]
        if tag == "button":
            form.buttons.append((name, a.get("value", "")))
        elif tag == "input":
            kind = a.get("type", "text").lower()
            form.inputs.append(name)
            if kind == "radio":
                form.radios.setdefault(name, []).append(a.get("value", ""))
            elif kind == "submit":
                form.buttons.append((name, a.get("value", "")))
            else:
                form.values[name] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "div") and self._in_alert:
            self._in_alert -= 1

    def handle_data(self, data: str) -> None:
        if self._in_alert and self.alerts:
            self.alerts[-1] += data.strip()


def parse_forms(page: str) -> tuple[list[HtmlForm], list[str]]:
    """The forms of ``page`` and the texts of its ``role="alert"`` elements."""
    parser = _FormParser()
    parser.feed(page)
    return parser.forms, parser.alerts


def submit_consent(
    session: requests.Session,
    authorize_url: str,
    *,
    email: str,
    password: str,
    account: str | None = None,
    approve: bool = True,
    timeout: float = 5.0,
) -> str:
    """Open ``authorize_url``, sign in, pick ``account`` if asked, press Approve (or Deny).

    Returns the ``Location`` the provider redirects to (the client's callback with ``code`` and
    ``state``, or ``error``). Raises ``ConsentFailed`` when the provider shows a page instead.
    """
    response = session.get(authorize_url, timeout=timeout, allow_redirects=False)
    for step in range(3):  # sign-in page, then at most the account choice
        if response.status_code in (301, 302, 303, 307):
            return str(response.headers["Location"])
        forms, alerts = parse_forms(response.text)
        if not forms:
            raise ConsentFailed("; ".join(alerts) or f"no form on the page (HTTP {response.status_code})")
        if step > 0 and alerts:
            raise ConsentFailed("; ".join(alerts))  # the provider refused what we submitted
        form = forms[0]
        data = dict(form.values)
        if "email" in form.inputs:
            if step > 0:
                raise ConsentFailed("the provider asked to sign in again")
            data["email"], data["password"] = email, password
        if "account" in form.radios:
            if account is None:
                raise ConsentFailed(f"the provider asks to choose an account: {form.radios['account']}")
            data["account"] = account
        decision = "approve" if approve else "deny"
        if ("decision", decision) not in form.buttons:
            raise ConsentFailed(f"no {decision} button on the page")
        data["decision"] = decision
        response = session.post(urljoin(response.url, form.action), data=data, timeout=timeout, allow_redirects=False)
    raise ConsentFailed("the provider kept showing forms")
