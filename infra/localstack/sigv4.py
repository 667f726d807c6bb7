"""SigV4 verification for the IAM routes of the local gateway.

API Gateway checks the caller's signature before a handler runs; locally we do the same by
recomputing the signature with botocore's own ``SigV4Auth`` (the code every AWS SDK for Python
signs with) over the request as received, for the one set of local credentials, and comparing in
constant time. Both the ``Authorization`` header form and the presigned query-string form work.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from botocore.auth import SIGV4_TIMESTAMP, UNSIGNED_PAYLOAD, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "execute-api"
MAX_SKEW_SECONDS = 300.0
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600

_AUTH_PARAM = re.compile(r"(\w+)=([^,\s]*)")
_TIMESTAMP = re.compile(r"\d{8}T\d{6}Z")


class SignatureError(Exception):
    """Why a request is refused. The message is safe to return: it never contains a secret."""


@dataclass(frozen=True, slots=True)
class LocalCredentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = "us-east-1"
    account_id: str = "123456789012"
    user_name: str = "local-developer"


@dataclass(frozen=True, slots=True)
class Caller:
    """What API Gateway puts in ``requestContext.authorizer.iam`` for a verified caller."""

    access_key: str
    account_id: str
    user_arn: str
    user_id: str

    def to_authorizer(self) -> dict[str, Any]:
        return {
            "iam": {
                "accessKey": self.access_key,
                "accountId": self.account_id,
                "callerId": self.user_id,
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": self.user_arn,
                "userId": self.user_id,
            }
        }


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The parts of an HTTP request a signature covers, exactly as they arrived."""

    method: str
    raw_path: str  # percent-encoded, as on the request line
    raw_query: str
    headers: list[tuple[str, str]]  # every header, original case, repeated names kept
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return ",".join(values) if values else None

    def header_values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]


class _ExactHeadersSigV4(SigV4Auth):
    """SigV4Auth that canonicalises exactly the headers the client said it signed."""

    def __init__(self, credentials: Credentials, region: str, signed: Iterable[str]) -> None:
        super().__init__(credentials, SERVICE, region)
        self._signed = [name.lower() for name in signed]

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        chosen = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or []:
                chosen[name] = value
        return chosen


@dataclass(frozen=True, slots=True)
class _Claims:
    access_key: str
    date: str
    region: str
    service: str
    terminator: str
    timestamp: str
    signed_headers: list[str]
    signature: str
    presigned_expires: int | None


class SigV4Verifier:
    def __init__(
        self,
        credentials: LocalCredentials,
        *,
        max_skew: float = MAX_SKEW_SECONDS,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._credentials = credentials
        self._max_skew = max_skew
        self._now = now

    @property
    def credentials(self) -> LocalCredentials:
        return self._credentials

    def verify(self, request: SignedRequest) -> Caller:
        """The verified caller, or ``SignatureError`` saying why not (never which bytes differed)."""
        claims = self._claims(request)
        self._check_scope(claims)
        self._check_time(claims)
        try:
            expected = self._signature(request, claims)
        except ValueError:
            # A Host header no URL can carry (e.g. "a[b"): API Gateway refuses such a request too.
            raise SignatureError("The request could not be canonicalised for signing.") from None
        if not hmac.compare_digest(expected.encode(), claims.signature.encode()):
            raise SignatureError(
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method."
            )
        creds = self._credentials
        return Caller(
            access_key=claims.access_key,
            account_id=creds.account_id,
            user_arn=f"arn:aws:iam::{creds.account_id}:user/{creds.user_name}",
            user_id=f"AIDALOCAL{hashlib.sha256(creds.user_name.encode()).hexdigest()[:12].upper()}",
        )

    # --- parsing -------------------------------------------------------------------------------

    def _claims(self, request: SignedRequest) -> _Claims:
        authorization = request.header("authorization")
        query = _query_pairs(request.raw_query)
        if authorization is None:
            if any(name == "X-Amz-Signature" for name, _ in query):
                return _presigned_claims(query)
            raise SignatureError("Missing Authentication Token")
        algorithm, _, params_text = authorization.strip().partition(" ")
        if algorithm != ALGORITHM:
            raise SignatureError(f"Unsupported authorization type; expected {ALGORITHM}")
        params = dict(_AUTH_PARAM.findall(params_text))
        missing = [name for name in ("Credential", "SignedHeaders", "Signature") if not params.get(name)]
        if missing:
            raise SignatureError(f"Authorization header is missing {', '.join(missing)}")
        timestamp = request.header("x-amz-date")
        if timestamp is None:
            raise SignatureError("Missing X-Amz-Date header")
        signed = params["SignedHeaders"].split(";")
        if "x-amz-date" not in signed:
            raise SignatureError("X-Amz-Date must be a signed header")
        return _claims_from(params["Credential"], timestamp.strip(), signed, params["Signature"], None)

    def _check_scope(self, claims: _Claims) -> None:
        creds = self._credentials
        if claims.access_key != creds.access_key_id:
            raise SignatureError("The security token included in the request is invalid")
        if claims.terminator != "aws4_request" or claims.service != SERVICE:
            raise SignatureError(f"Credential scope must end in {SERVICE}/aws4_request")
        if claims.region != creds.region:
            raise SignatureError(f"Credential should be scoped to a valid region, {creds.region}")
        if claims.date != claims.timestamp[:8]:
            raise SignatureError("Credential scope date does not match X-Amz-Date")
        if "host" not in claims.signed_headers:
            raise SignatureError("The host header must be signed")

    def _check_time(self, claims: _Claims) -> None:
        signed_at = calendar.timegm(time.strptime(claims.timestamp, SIGV4_TIMESTAMP))
        now = self._now()
        if claims.presigned_expires is not None:
            if now > signed_at + claims.presigned_expires or signed_at > now + self._max_skew:
                raise SignatureError("Signature expired")
        elif abs(now - signed_at) > self._max_skew:
            raise SignatureError("Signature expired: the request time is more than 5 minutes from the server time")

    # --- recomputation -------------------------------------------------------------------------

    def _signature(self, request: SignedRequest, claims: _Claims) -> str:
        host = request.header("host") or ""
        query = request.raw_query
        if claims.presigned_expires is not None:
            # The canonical query string covers every parameter except the signature itself.
            query = "&".join(pair for pair in query.split("&") if not pair.startswith("X-Amz-Signature="))
        url = f"http://{host}{request.raw_path}" + (f"?{query}" if query else "")
        aws_request = AWSRequest(method=request.method.upper(), url=url, data=request.body)
        for name, value in request.headers:
            if name.lower() in claims.signed_headers:
                aws_request.headers.add_header(name.lower(), value)
        content_sha = request.header("x-amz-content-sha256")
        if content_sha is not None:
            if content_sha != UNSIGNED_PAYLOAD and content_sha != hashlib.sha256(request.body).hexdigest():
                raise SignatureError("The provided X-Amz-Content-SHA256 does not match the request body")
            if "x-amz-content-sha256" not in claims.signed_headers:
                # botocore then uses this value as the payload hash, as AWS does.
                aws_request.headers["X-Amz-Content-SHA256"] = content_sha
        aws_request.context["timestamp"] = claims.timestamp
        creds = self._credentials
        signer = _ExactHeadersSigV4(
            Credentials(creds.access_key_id, creds.secret_access_key), creds.region, claims.signed_headers
        )
        canonical = signer.canonical_request(aws_request)
        string_to_sign = signer.string_to_sign(aws_request, canonical)
        return str(signer.signature(string_to_sign, aws_request))


def _query_pairs(raw_query: str) -> list[tuple[str, str]]:
    pairs = []
    for pair in raw_query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def _presigned_claims(query: list[tuple[str, str]]) -> _Claims:
    params = dict(query)
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise SignatureError(f"X-Amz-Algorithm must be {ALGORITHM}")
    missing = [n for n in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders") if not params.get(n)]
    if missing:
        raise SignatureError(f"Presigned URL is missing {', '.join(missing)}")
    expires_text = params.get("X-Amz-Expires", "")
    if not expires_text.isdigit() or not 0 < int(expires_text) <= MAX_PRESIGN_EXPIRES:
        raise SignatureError("X-Amz-Expires must be between 1 second and 7 days")
    return _claims_from(
        params["X-Amz-Credential"],
        params["X-Amz-Date"],
        params["X-Amz-SignedHeaders"].split(";"),
        params["X-Amz-Signature"],
        int(expires_text),
    )


def _claims_from(credential: str, timestamp: str, signed: list[str], signature: str, expires: int | None) -> _Claims:
    parts = credential.split("/")
    if len(parts) != 5:
        raise SignatureError("Credential must be <access key>/<date>/<region>/<service>/aws4_request")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("X-Amz-Date must look like 20240101T000000Z")
    if not re.fullmatch(r"[0-9a-f]{64}", signature):
        raise SignatureError("Signature must be 64 lower-case hex digits")
    access_key, date, region, service, terminator = parts
    return _Claims(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        terminator=terminator,
        timestamp=timestamp,
        signed_headers=[name.strip().lower() for name in signed if name.strip()],
        signature=signature,
        presigned_expires=expires,
    )
