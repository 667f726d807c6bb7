"""SigV4 for requests (service execute-api): how a backend calls the IAM routes of the local stack.

A ``requests.auth.AuthBase``, so any requests-based client (the fuzzer included) can sign every
request it sends exactly as it goes out: method, URL, headers and body.
"""

from __future__ import annotations

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from requests import PreparedRequest
from requests.auth import AuthBase

SERVICE = "execute-api"


class SigV4RequestsAuth(AuthBase):
    def __init__(self, access_key: str, secret_key: str, region: str = "us-east-1") -> None:
        self._credentials = Credentials(access_key, secret_key)
        self._region = region

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("connection", "user-agent")}
        aws = AWSRequest(method=request.method, url=request.url, data=body, headers=headers)
        SigV4Auth(self._credentials, SERVICE, self._region).add_auth(aws)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in aws.headers:
                request.headers[name] = aws.headers[name]
        return request
