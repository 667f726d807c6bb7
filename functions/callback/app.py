"""Public routes an end user's browser visits while connecting an account.

GET /connect/{session}    start: set the browser-binding cookie, redirect to the provider or show the form
POST /connect/{session}   the password form (action=login) or "forgot password?" (action=reset)
GET /callback/{provider}  the provider's redirect back with ?code&state (or ?error)

Thin: parse the API Gateway v2 event, call one ``ConnectService`` method, render HTML. Every
answer is a page or a redirect with strict security headers; every failure is a plain page.
The event is never logged (its body holds the password, its query the authorization code).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.shared.cookies import Cookie
from tokenbroker import base_url, browser_binding, pages
from tokenbroker.connect import Connected, ConnectService, ForbiddenRequest, LoginForm, LoginSubmission, Redirect
from tokenbroker.errors import InvalidInput, TokenBrokerError
from tokenbroker.lazy import Lazy
from tokenbroker.observability import logger, tracer
from tokenbroker.redaction import remember_secret
from tokenbroker.return_urls import origin_of

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

MAX_FORM_BYTES = 16_384
# Strict-Transport-Security on HTTPS answers: a year, the usual preload-grade value.
HSTS_SECONDS = 31_536_000
MAX_FORM_FIELDS = 16
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

app = APIGatewayHttpResolver()

# --- collaborators: built on first use (cheap cold start), replaceable by tests ----------------


def _service_from_env() -> ConnectService:
    from tokenbroker.wiring import Runtime  # noqa: PLC0415 - first request, not import time

    return Runtime.from_env().connect


_service: Lazy[ConnectService] = Lazy(_service_from_env)


def use_service(service: ConnectService | None) -> None:
    """Inject a ready service (tests, the local stack); None rebuilds it from the environment."""
    _service.use(service)


def get_service() -> ConnectService:
    return _service.get()


def _branding_from_env() -> pages.Branding:
    from tokenbroker.settings import ConfigurationError, Settings  # noqa: PLC0415 - first page, not import time

    try:
        return pages.branding_from_settings(Settings.from_env())
    except ConfigurationError as error:
        # An error page must still render: fall back to the unbranded pages, loudly in the log.
        logger.error("page branding is not configured correctly", extra={"error": str(error)})
        return pages.Branding.of(None, None, None)


_branding: Lazy[pages.Branding] = Lazy(_branding_from_env)


def branding() -> pages.Branding:
    """The application's name, logo and colour for every page (AppName, AppLogoUrl, AppAccentColor)."""
    return _branding.get()


# --- request helpers -----------------------------------------------------------------------------


def request_base_url() -> str | None:
    """Where this request came in: used only when PUBLIC_BASE_URL is not configured."""
    return base_url.request_base_url(app.current_event)


def query_parameters() -> dict[str, str]:
    """The query string, strictly: a repeated parameter is refused rather than guessed at."""
    raw = app.current_event.raw_query_string or ""
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:
        raise InvalidInput("the address has too many parameters") from None
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in values:
            raise InvalidInput(f"the parameter {name[:32]} was given twice", field=name[:32])
        values[name] = value
    return values


def form_fields() -> dict[str, str]:
    headers = app.current_event.headers
    content_type = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if content_type != FORM_CONTENT_TYPE:
        raise InvalidInput("the form must be sent as application/x-www-form-urlencoded")
    try:
        body = app.current_event.decoded_body or ""
    except UnicodeDecodeError:
        # A browser posts this form as UTF-8; anything else is not ours to guess at.
        raise InvalidInput("the form must be UTF-8 text") from None
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput("the form is too large")
    try:
        pairs = parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:
        raise InvalidInput("the form has too many fields") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    # Masked in every log line from here on, whatever happens next.
    remember_secret(fields.get("password"))
    return fields


def check_same_origin(service: ConnectService) -> None:
    """Refuse form posts from other sites (defence in depth; the session id is the real secret).

    With Referrer-Policy no-referrer browsers send ``Origin: null`` even for our own form, so
    "null" and a missing header pass; a foreign origin or ``Sec-Fetch-Site: cross-site`` do not.
    """
    headers = app.current_event.headers
    if (headers.get("sec-fetch-site") or "").lower() == "cross-site":
        raise ForbiddenRequest("cross-site form post")
    origin = headers.get("origin")
    if not origin or origin == "null":
        return
    here = request_base_url()
    allowed = {origin_of(here)} if here else set()
    # No configured base URL and no request domain: only the request's own origin counts.
    with contextlib.suppress(TokenBrokerError):
        allowed.add(origin_of(service.base_url(here)))
    if origin not in allowed:
        raise ForbiddenRequest("form post from another origin")


def is_secure() -> bool:
    """HTTPS as the browser sees it (API Gateway: always): the cookie's ``__Host-``/Secure form, HSTS."""
    return (request_base_url() or "").startswith("https://")


def binding_of_request() -> str | None:
    return browser_binding.read_binding(app.current_event.cookies, secure=is_secure())


def respond(page: pages.HtmlResponse, *, cookies: list[Cookie] | None = None) -> Response[str]:
    headers = dict(page.headers)
    content_type = headers.pop("Content-Type", None)
    if is_secure():
        headers["Strict-Transport-Security"] = f"max-age={HSTS_SECONDS}"
    return Response(
        status_code=page.status, content_type=content_type, body=page.body, headers=headers, cookies=cookies
    )


def render_form(form: LoginForm, *, cookies: list[Cookie] | None = None) -> Response[str]:
    return respond(
        pages.login_page(
            branding=branding(),
            provider=form.provider_label,
            provider_host=form.provider_host,
            email=form.email,
            remember=form.remember,
            error=form.error,
            notice=form.notice,
            notice_original=form.notice_original,
            status=form.status,
            form_targets=form.form_targets,
            attempts_left=form.attempts_left,
        ),
        cookies=cookies,
    )


def render_connected(done: Connected) -> Response[str]:
    if done.redirect_to:
        return respond(pages.redirect(done.redirect_to))
    return respond(
        pages.success_page(
            branding=branding(),
            provider=done.provider_label,
            account=done.account,
            reauthorized=done.reauthorized,
            pending=done.pending,
        )
    )


# --- routes --------------------------------------------------------------------------------------


@app.get("/connect/<session>")
def show_connect(session: str) -> Response[str]:
    service = get_service()
    secure = is_secure()
    # Reuse this browser's binding while it lives: two links opened in one browser both work.
    binding = binding_of_request() or browser_binding.new_binding()
    cookies = [browser_binding.binding_cookie(binding, secure=secure)]
    result = service.begin(session, binding=binding, request_base_url=request_base_url())
    if isinstance(result, Redirect):
        return respond(pages.redirect(result.location), cookies=cookies)
    return render_form(result, cookies=cookies)


@app.post("/connect/<session>")
def submit_connect(session: str) -> Response[str]:
    service = get_service()
    check_same_origin(service)
    fields = form_fields()
    binding = binding_of_request()
    action = fields.get("action") or "login"
    if action == "reset":
        return render_form(service.password_reset(session, fields.get("email", ""), binding=binding))
    if action != "login":
        raise InvalidInput("unknown form action", field="action")
    submission = LoginSubmission(
        email=fields.get("email", ""),
        password=fields.get("password", ""),
        remember=fields.get("remember", "").lower() in ("yes", "on", "true", "1"),
    )
    result = service.submit_login(session, submission, binding=binding)
    if isinstance(result, LoginForm):
        return render_form(result)
    return render_connected(result)


@app.get("/callback/<provider>")
def callback(provider: str) -> Response[str]:
    query = query_parameters()
    remember_secret(query.get("code"))
    return render_connected(get_service().complete_callback(provider, query, binding=binding_of_request()))


# --- failures: always a plain page, never a stack trace or an echoed secret ----------------------


@app.not_found
def not_found(_: NotFoundError) -> Response[str]:
    return respond(pages.not_found_page(branding=branding()))


def domain_error(error: TokenBrokerError) -> Response[str]:
    page = pages.error_page(error, branding=branding(), return_to=error.return_to)
    log = logger.warning if page.status >= 500 else logger.info
    log("connect request failed", extra={"error_code": error.code, "status": page.status, "error": str(error)})
    return respond(page)


def unexpected_error(error: Exception) -> Response[str]:
    logger.exception("connect request crashed", extra={"error_type": type(error).__name__})
    return respond(pages.error_page(TokenBrokerError("internal error"), branding=branding(), return_to=None))


# Registered without the decorator, which Powertools leaves untyped. Lookup walks the MRO.
app.exception_handler_manager.update_exception_handlers({TokenBrokerError: domain_error, Exception: unexpected_error})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)  # redirects carry codes and states
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
