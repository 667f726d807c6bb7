"""Client-side SigV4 for tests: botocore's signer with an optional fixed signing time."""

from __future__ import annotations

import time
from collections.abc import Mapping

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SERVICE = "execute-api"


def signed_headers(
    method: str,
    url: str,
    *,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    access_key: str = "testing",
    secret_key: str = "testing",
    region: str = "us-east-1",
    at: float | None = None,
) -> dict[str, str]:
    """The headers (including Authorization and X-Amz-Date) of a request signed at ``at``."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    signer = SigV4Auth(Credentials(access_key, secret_key), SERVICE, region)
    if at is None:
        signer.add_auth(request)
    else:
        # add_auth always signs "now"; these are its steps with a chosen timestamp.
        request.context["timestamp"] = time.strftime(SIGV4_TIMESTAMP, time.gmtime(at))
        signer._modify_request_before_signing(request)  # type: ignore[attr-defined]
        canonical = signer.canonical_request(request)
        signature = signer.signature(signer.string_to_sign(request, canonical), request)
        signer._inject_signature_to_request(request, signature)  # type: ignore[attr-defined]
    return dict(request.headers.items())


def presigned_url(
    method: str,
    url: str,
    *,
    expires: int = 60,
    access_key: str = "testing",
    secret_key: str = "testing",
    region: str = "us-east-1",
) -> str:
    request = AWSRequest(method=method, url=url)
    SigV4QueryAuth(Credentials(access_key, secret_key), SERVICE, region, expires=expires).add_auth(request)
    return str(request.url)
