"""What an IAM API caller sees of a failure, the same for both transports: ``ErrorAnswer``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tokenbroker.api.contract import ErrorAnswer, error_answer
from tokenbroker.api.statuses import UNAVAILABLE, http_status
from tokenbroker.aws import is_transient_aws_error
from tokenbroker.errors import AwsUnavailable, TokenBrokerError
from tokenbroker.observability import logger

# Throttling or an AWS 5xx that outlived botocore's retries: nothing changed, the caller may retry.
AWS_UNAVAILABLE = AwsUnavailable("AWS is throttling or unavailable; retry after the indicated delay")


@dataclass(frozen=True, slots=True)
class Failure:
    status: int
    answer: ErrorAnswer

    @property
    def retry_after(self) -> int | None:
        return self.answer.get("retry_after")


def domain_failure(error: TokenBrokerError) -> Failure:
    status = http_status(error)
    return Failure(status, error_answer(error.code, error.message, _retry_after(error, status)))


def unexpected_failure(error: Exception, *, action: str | None = None) -> Failure:
    """A crash or an AWS outage: logged here (with the stack), answered without details."""
    extra = {"action": action} if action is not None else None
    if is_transient_aws_error(error):
        logger.warning("AWS throttled or failed after retries", extra=extra, exc_info=True)
        return domain_failure(AWS_UNAVAILABLE)
    logger.exception("unexpected error", extra=extra)
    return Failure(500, error_answer("internal_error", "internal error"))


def _retry_after(error: TokenBrokerError, status: int) -> int | None:
    seconds = getattr(error, "retry_after", None)
    if status != UNAVAILABLE and seconds is None:
        return None
    return max(1, math.ceil(seconds or 1))
