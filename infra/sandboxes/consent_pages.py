"""The Worksection sandbox's authorisation pages: plain HTML forms, usable by keyboard, screen
reader and ``requests`` alike (labels, fieldset/legend, alerts with role="alert").

Nothing secret is ever echoed: the password field is always empty, the login between the two
steps is carried by a one-time server-side ticket.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from werkzeug.wrappers import Response

from infra.sandboxes.server import html_page

FORM_ACTION = "/oauth2/authorize"


def _hidden(params: Mapping[str, str]) -> str:
    return "\n".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items()
    )


def _alert(message: str | None) -> str:
    if not message:
        return ""
    return f'<p role="alert" id="form-error"><strong>{html.escape(message)}</strong></p>'


def _scopes(scopes: Sequence[str]) -> str:
    if not scopes:
        return "<p>The application asks for basic access to your account.</p>"
    items = "\n".join(f"<li>{html.escape(s)}</li>" for s in scopes)
    return f"<p>The application asks for:</p>\n<ul>\n{items}\n</ul>"


def _buttons() -> str:
    # Deny must work without filling the form in, hence formnovalidate.
    return (
        "<p>\n"
        '<button type="submit" name="decision" value="approve">Approve</button>\n'
        '<button type="submit" name="decision" value="deny" formnovalidate>Deny</button>\n'
        "</p>"
    )


def login_page(
    *,
    client_name: str,
    params: Mapping[str, str],
    scopes: Sequence[str],
    email: str = "",
    error: str | None = None,
) -> Response:
    described = ' aria-describedby="form-error"' if error else ""
    body = f"""<p>{html.escape(client_name)} wants to connect to your Worksection account.</p>
{_scopes(scopes)}
{_alert(error)}
<form method="post" action="{FORM_ACTION}" id="authorize">
{_hidden(params)}
<p><label for="email">E-mail</label><br>
<input type="email" id="email" name="email" value="{html.escape(email)}" autocomplete="username"
 required{described}></p>
<p><label for="password">Password</label><br>
<input type="password" id="password" name="password" value="" autocomplete="current-password"
 required{described}></p>
{_buttons()}
</form>"""
    return html_page("Sign in to Worksection", body)


def account_page(
    *,
    client_name: str,
    params: Mapping[str, str],
    accounts: Sequence[str],
    account_label: Mapping[str, str],
    error: str | None = None,
) -> Response:
    choices = "\n".join(
        f'<p><input type="radio" id="account-{i}" name="account" value="{html.escape(a)}" required>\n'
        f'<label for="account-{i}">{html.escape(account_label[a])}</label></p>'
        for i, a in enumerate(accounts)
    )
    body = f"""<p>{html.escape(client_name)} wants to connect to your Worksection account.</p>
{_alert(error)}
<form method="post" action="{FORM_ACTION}" id="authorize">
{_hidden(params)}
<fieldset>
<legend>Choose the account to connect</legend>
{choices}
</fieldset>
{_buttons()}
</form>"""
    return html_page("Choose a Worksection account", body)


def error_page(message: str, status: int) -> Response:
    """Shown instead of redirecting when the client or redirect URI cannot be trusted."""
    return html_page(
        "Authorization error",
        f'<p role="alert">{html.escape(message)}</p>\n<p>Return to the application and try again.</p>',
        status,
    )
