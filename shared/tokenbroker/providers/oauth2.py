"""The generic RFC 6749 provider (kind ``generic``); provider modules subclass it for their quirks only."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from tokenbroker.clock import Clock, SystemClock
from tokenbroker.errors import ProviderError, ProviderErrorKind, UnsupportedOperation
from tokenbroker.http import HttpClient, HttpResponse, TransportError
from tokenbroker.providers.base import AppCredentials, Provider
from tokenbroker.providers.catalog import AuthMode, CatalogEntry, ClientAuth
from tokenbroker.providers.classify import CallContext, Operation, classify_rfc6749, clean_text, sanitize
from tokenbroker.providers.kinds import GENERIC_KIND, register_kind
from tokenbroker.providers.parsing import access_token_of, join_scopes, token_set_from_body
from tokenbroker.redaction import remember_secret
from tokenbroker.tokens import TokenSet, UserInfo

_SECRET_FORM_FIELDS = ("client_secret", "code", "code_verifier", "password", "refresh_token", "access_token")
_default_http: HttpClient | None = None


def default_http_client() -> HttpClient:
    """One session per process, so a warm Lambda reuses its TLS connections."""
    global _default_http  # noqa: PLW0603 - process-wide pool by design
    if _default_http is None:
        _default_http = HttpClient()
    return _default_http


@register_kind(GENERIC_KIND)
class OAuth2Provider(Provider):
    """RFC 6749 as declared by a catalog entry: authorization code (+PKCE), password, client credentials."""

    # Confidential clients of providers that require a secret fail early and clearly without one.
    requires_client_secret: ClassVar[bool] = False

    def __init__(
        self,
        entry: CatalogEntry,
        credentials: AppCredentials,
        *,
        http: HttpClient | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.entry = entry
        self.name = entry.name
        self.credentials = credentials
        self.http = http if http is not None else default_http_client()
        self.clock: Clock = clock if clock is not None else SystemClock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, client_id={self.credentials.client_id!r})"

    # --- the Provider interface -------------------------------------------------------------------------

    def authorization_url(
        self,
        *,
        state: str,
        redirect_uri: str,
        scopes: Sequence[str] | None = None,
        code_challenge: str | None = None,
    ) -> str:
        self._require_mode(AuthMode.AUTHORIZATION_CODE, "the authorization-code flow")
        if self.entry.pkce and not code_challenge:
            raise ValueError(f"{self.name} uses PKCE: pass the S256 challenge of a new_pkce_pair()")
        assert self.entry.authorize_url is not None  # guaranteed by CatalogEntry for this auth_mode
        params: dict[str, str] = {
            "response_type": "code",
            "client_id": self.credentials.client_id,
            "redirect_uri": redirect_uri,
            "state": state,
        }
        scope = join_scopes(self._scopes(scopes), self.entry.scope_separator)
        if scope:
            params["scope"] = scope
        if code_challenge:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        return _with_query(self.entry.authorize_url, {**self.entry.authorize_params, **params})

    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None = None) -> TokenSet:
        self._require_mode(AuthMode.AUTHORIZATION_CODE, "the authorization-code flow")
        remember_secret(code, code_verifier)
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            form["code_verifier"] = code_verifier
        return self._token_request(self.entry.token_url, form, Operation.AUTHORIZATION_CODE)

    def password_grant(self, *, username: str, password: str, scopes: Sequence[str] | None = None) -> TokenSet:
        self._require_mode(AuthMode.PASSWORD, "password login")
        remember_secret(password)
        requested = self._scopes(scopes)
        form = {"grant_type": "password", "username": username, "password": password}
        scope = join_scopes(requested, self.entry.scope_separator)
        if scope:
            form["scope"] = scope
        return self._token_request(self.entry.token_url, form, Operation.PASSWORD, requested)

    def client_credentials_grant(self, scopes: Sequence[str] | None = None) -> TokenSet:
        self._require_mode(AuthMode.CLIENT_CREDENTIALS, "the client-credentials grant")
        requested = self._scopes(scopes)
        form = {"grant_type": "client_credentials"}
        scope = join_scopes(requested, self.entry.scope_separator)
        if scope:
            form["scope"] = scope
        return self._token_request(self.entry.token_url, form, Operation.CLIENT_CREDENTIALS, requested)

    def refresh(self, token: TokenSet) -> TokenSet:
        if not token.refresh_token:
            if self.entry.auth_mode is AuthMode.CLIENT_CREDENTIALS:
                # No refresh token by design: "refreshing" is asking again with the app credentials.
                return self.client_credentials_grant(token.scopes or None).merged_over(token)
            raise ProviderError(
                ProviderErrorKind.REAUTHORIZATION_REQUIRED,
                "token refresh impossible: no refresh token is stored",
                provider=self.name,
                provider_code=None,
            )
        form = {"grant_type": "refresh_token", "refresh_token": token.refresh_token}
        assert self.entry.refresh_url is not None  # CatalogEntry defaults it to token_url
        fresh = self._token_request(self.entry.refresh_url, form, Operation.REFRESH, token.scopes)
        return fresh.merged_over(token)

    def user_info(self, token: TokenSet) -> UserInfo:
        if not self.entry.userinfo_url:
            return UserInfo()
        headers = {"Authorization": f"Bearer {token.access_token}"}
        response = self._send("GET", self.entry.userinfo_url, Operation.USERINFO, headers=headers)
        return self.user_info_from_response(
            response, self._context(Operation.USERINFO, {"access_token": token.access_token})
        )

    def request_password_reset(self, email: str) -> str:
        if not self.entry.password_reset_url:
            return super().request_password_reset(email)
        response = self._send("POST", self.entry.password_reset_url, Operation.PASSWORD_RESET, form={"email": email})
        body = response.json_object()
        if 200 <= response.status < 300 and body is not None and not self.is_error_body(body):
            message = sanitize(body.get("message"), limit=500)
            return message or "If the address is registered, a password reset e-mail is on its way."
        raise self.classify(response, self._context(Operation.PASSWORD_RESET, {}))

    # --- answers -> results (pure: no I/O, so every shape is unit-testable) -----------------------------

    def token_from_response(
        self, response: HttpResponse, ctx: CallContext, requested_scopes: Sequence[str] = ()
    ) -> TokenSet:
        """The token in an answer, or the classified error: any body without an access token is a failure."""
        body = response.json_object()
        if 200 <= response.status < 300 and body is not None and access_token_of(body) is not None:
            return token_set_from_body(
                body,
                now=ctx.now,
                fallback_ttl=self.entry.access_token_ttl,
                requested_scopes=requested_scopes,
                extra=self.token_extras(body),
            )
        raise self.classify(response, ctx)

    def user_info_from_response(self, response: HttpResponse, ctx: CallContext) -> UserInfo:
        body = response.json_object()
        if 200 <= response.status < 300 and body is not None and not self.is_error_body(body):
            return user_info_from_body(body)
        raise self.classify(response, ctx)

    # --- hooks for provider quirks ----------------------------------------------------------------------

    def classify(self, response: HttpResponse, ctx: CallContext) -> ProviderError:
        """Turn a failed answer into the error taxonomy."""
        return classify_rfc6749(response, ctx)

    def is_error_body(self, body: Mapping[str, Any]) -> bool:
        """Whether a 2xx JSON answer (other than a token answer) is really an error report."""
        return body.get("error") not in (None, "", False)

    def token_extras(self, body: Mapping[str, Any]) -> dict[str, str]:
        """Provider fields worth keeping with the token (a whitelist; nothing for generic providers)."""
        return {}

    def client_auth_form(self) -> dict[str, str]:
        if self.entry.client_auth is ClientAuth.BASIC:
            return {}
        form = {"client_id": self.credentials.client_id}
        if self.credentials.client_secret:
            form["client_secret"] = self.credentials.client_secret
        return form

    def client_auth_headers(self) -> dict[str, str]:
        if self.entry.client_auth is not ClientAuth.BASIC:
            return {}
        # RFC 6749 2.3.1: form-urlencode each part before Base64.
        pair = f"{quote(self.credentials.client_id, safe='')}:{quote(self.credentials.client_secret, safe='')}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}

    # --- plumbing -------------------------------------------------------------------------------------

    def _token_request(
        self,
        url: str,
        form: Mapping[str, str],
        operation: Operation,
        requested_scopes: Sequence[str] = (),
    ) -> TokenSet:
        self._require_client_secret(operation)
        full_form = {**form, **self.client_auth_form()}
        response = self._send("POST", url, operation, form=full_form, headers=self.client_auth_headers())
        # Expiry counts from when the answer arrived.
        return self.token_from_response(response, self._context(operation, full_form), requested_scopes)

    def _send(
        self,
        method: str,
        url: str,
        operation: Operation,
        *,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        try:
            if method == "POST":
                return self.http.post_form(url, form or {}, headers=headers)
            return self.http.get(url, headers=headers)
        except TransportError as error:
            if error.sent and method == "POST":
                raise ProviderError(
                    ProviderErrorKind.OUTCOME_UNKNOWN,
                    f"{operation.label}: no answer after the request was sent ({error.message})",
                    provider=self.name,
                ) from None
            raise ProviderError(
                ProviderErrorKind.TRANSIENT, f"{operation.label}: {error.message}", provider=self.name
            ) from None

    def _context(self, operation: Operation, sent: Mapping[str, str], *, now: float | None = None) -> CallContext:
        secrets = tuple(v for k, v in sent.items() if k in _SECRET_FORM_FIELDS and v)
        return CallContext(
            provider=self.name,
            operation=operation,
            now=self.clock.now() if now is None else now,
            secrets=(*secrets, self.credentials.client_secret),
        )

    def _scopes(self, scopes: Sequence[str] | None) -> tuple[str, ...]:
        return tuple(self.entry.default_scopes if scopes is None else scopes)

    def _require_mode(self, mode: AuthMode, what: str) -> None:
        if self.entry.auth_mode is not mode:
            raise UnsupportedOperation(f"{self.name} does not use {what} (auth_mode {self.entry.auth_mode})")

    def _require_client_secret(self, operation: Operation) -> None:
        if self.requires_client_secret and not self.credentials.client_secret:
            raise ProviderError(
                ProviderErrorKind.CONFIGURATION,
                f"{operation.label}: no client secret configured for {self.name}; "
                f"store it in the app secret tokenbroker/<stage>/apps/{self.name}",
                provider=self.name,
            )


def user_info_from_body(body: Mapping[str, Any]) -> UserInfo:
    """OpenID Connect / common user-info fields; missing ones stay None."""

    def text(*keys: str) -> str | None:
        for key in keys:
            value = body.get(key)
            if isinstance(value, bool):
                continue
            if (isinstance(value, int) and abs(value) < 10**30) or (isinstance(value, str) and value.strip()):
                return clean_text(str(value), limit=200) or None
        return None

    name = text("name", "display_name")
    if name is None:
        parts = [text("given_name", "first_name"), text("family_name", "last_name")]
        name = " ".join(p for p in parts if p) or text("preferred_username", "login", "username")
    return UserInfo(id=text("sub", "id", "user_id"), name=name, email=text("email"))


def _with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    existing = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query = urlencode([*existing, *params.items()], quote_via=quote)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
