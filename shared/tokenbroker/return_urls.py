"""Where a finished connect flow may send the end user's browser: an allow-list of URL prefixes.

A return URL is an open-redirect vector, so it is parsed strictly by hand rather than with
``urllib.parse`` (which is lenient by design): lower-case ``http``/``https`` scheme, an ASCII
host name without userinfo, an optional numeric port, and only URL characters (no whitespace,
controls, backslashes or non-ASCII, so no IDN look-alikes; callers punycode-encode themselves).
A URL matches a prefix when scheme, host and port are equal and its path starts with the
prefix's path on a ``/`` boundary.

The prefix check compares the path as written, but the application behind it may decode and
normalise it first, so each path segment is also read the ways such servers read it: percent-decoded
once and again (``%252e`` -> ``%2e`` -> ``.``), NFKC-folded (full-width dots), and with ``;`` path
parameters dropped (Tomcat and Spring read ``..;x`` as ``..``). A segment that any of these readings
turns into ``.`` or ``..``, a ``/``, a backslash, NUL or other control character, invalid UTF-8 (overlong
dots) or an IIS ``%u`` escape is refused, so ``/app/..;/admin`` cannot escape ``/app``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus, unquote_to_bytes, urlencode

from tokenbroker.errors import InvalidInput

MAX_RETURN_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}

# RFC 3986 characters only: unreserved, reserved and '%'. Excludes space, controls, '\', '"',
# '<', '>', '`', '{', '|', '}', '^' and everything outside ASCII.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_URL = re.compile(
    rf"(?P<scheme>https?)://(?P<host>{_HOST_LABEL}(?:\.{_HOST_LABEL})*)(?::(?P<port>[0-9]{{1,5}}))?"
    r"(?P<path>/[^?#]*)?(?P<query>\?[^#]*)?(?P<fragment>#.*)?",
    re.IGNORECASE,
)
# Characters that, once a server has decoded a segment, would break it into a path or authority.
_SEPARATOR_OR_CONTROL = re.compile(r"[/\\\x00-\x1f\x7f]")
# IIS decodes %u002e as "."; no legitimate return URL needs it at any decoding depth.
_IIS_ESCAPE = re.compile(r"%u[0-9a-f]{4}", re.IGNORECASE)
# Deeper nesting than this is not an honest URL; refusing it bounds the work.
_MAX_DECODE_ROUNDS = 5


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    scheme: str
    host: str
    port: int
    path: str
    rest: str  # query and fragment, verbatim

    @property
    def origin(self) -> str:
        if self.port == DEFAULT_PORTS[self.scheme]:
            return f"{self.scheme}://{self.host}"
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_strict(url: str, *, what: str = "return_to") -> ParsedUrl:
    """Parse an absolute http(s) URL or raise InvalidInput; the message never echoes the URL."""

    def refuse(reason: str) -> InvalidInput:
        return InvalidInput(f"{what} {reason}", field=what)

    if not isinstance(url, str) or not url:
        raise refuse("must be an absolute https URL")
    if len(url) > MAX_RETURN_URL_LENGTH:
        raise refuse(f"must be at most {MAX_RETURN_URL_LENGTH} characters")
    if not _URL_CHARS.fullmatch(url) or _BAD_PERCENT.search(url):
        raise refuse("contains characters that are not allowed in a URL")
    match = _URL.fullmatch(url)
    # The scheme must be literally lower case: "JaVaScRiPt:" and "HTTPS:" games are refused early.
    if match is None or not url.startswith(("http://", "https://")):
        raise refuse("must be an absolute http(s) URL with a plain host name")
    scheme = match["scheme"]
    port = int(match["port"]) if match["port"] else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise refuse("has an invalid port")
    path = match["path"] or "/"
    if not all(_segment_is_plain(segment) for segment in path.split("/")):
        raise refuse("must not contain dot segments or encoded separators")
    rest = (match["query"] or "") + (match["fragment"] or "")
    return ParsedUrl(scheme=scheme, host=match["host"].lower(), port=port, path=path, rest=rest)


def _segment_is_plain(segment: str) -> bool:
    """False when a server that decodes or normalises ``segment`` could read a dot segment or a
    separator in it (see the module docstring); True when every reading is an ordinary name."""
    current = segment
    for _ in range(_MAX_DECODE_ROUNDS + 1):
        if _IIS_ESCAPE.search(current):
            return False
        folded = unicodedata.normalize("NFKC", current)  # full-width and other compatibility dots
        if _SEPARATOR_OR_CONTROL.search(folded):
            return False
        # Servlet containers drop ";parameters" before resolving dot segments; some trim spaces.
        if folded.split(";", 1)[0].strip() in (".", ".."):
            return False
        try:
            decoded = unquote_to_bytes(current).decode("utf-8")  # strict: overlong dots fail here
        except UnicodeDecodeError:
            return False
        if decoded == current:
            return True
        current = decoded
    return False


def _path_within(path: str, prefix: str) -> bool:
    if prefix in ("", "/"):
        return True
    if prefix.endswith("/"):
        return path.startswith(prefix) or path == prefix[:-1]
    return path == prefix or path.startswith(prefix + "/")


class ReturnUrlPolicy:
    """The stack's AllowedReturnUrls. An empty list allows no return URL at all."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        self._prefixes: tuple[ParsedUrl, ...] = tuple(
            parse_strict(prefix, what="AllowedReturnUrls entry") for prefix in prefixes
        )
        for prefix in self._prefixes:
            if prefix.rest:
                raise InvalidInput("AllowedReturnUrls entries must not have a query or fragment")

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(prefix.origin for prefix in self._prefixes))

    def check(self, url: str) -> str:
        """Return ``url`` unchanged when allowed, else raise InvalidInput (HTTP 400)."""
        parsed = parse_strict(url)
        for prefix in self._prefixes:
            if (
                parsed.scheme == prefix.scheme
                and parsed.host == prefix.host
                and parsed.port == prefix.port
                and _path_within(parsed.path, prefix.path)
            ):
                return url
        raise InvalidInput("return_to is not in this stack's AllowedReturnUrls", field="return_to")


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of an already validated URL (for Content-Security-Policy)."""
    return parse_strict(url).origin


def with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` appended to its query, fragment kept.

    The caller's own query is kept byte for byte, except pairs whose name we set (so a
    ``status=`` already in the return URL cannot contradict ours).
    """
    base, hash_mark, fragment = url.partition("#")
    path, _, query = base.partition("?")
    kept = [pair for pair in query.split("&") if pair and unquote_plus(pair.split("=", 1)[0]) not in params]
    new_query = "&".join([*kept, urlencode(list(params.items()))])
    return f"{path}?{new_query}{hash_mark}{fragment}"
