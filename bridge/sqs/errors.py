"""The client's errors: worth retrying (SQS busy or unreachable) or not (the request is wrong).

Every message is built from the server's error code and text with the
request's receipt handles and bodies cut out, so no body or receipt handle
reaches a log line through an exception.
"""

from __future__ import annotations

from collections.abc import Iterable

from bridge.ports import QueueRefused

# Error codes that mean "slow down", whatever the HTTP status.
THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "KmsThrottled",
        "KMS.ThrottlingException",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# Longest server message kept in an exception text.
MAX_MESSAGE_CHARS = 300


def redact(text: str, secrets: Iterable[str]) -> str:
    """*text* without any of *secrets* (receipt handles, bodies) and at most a few lines long."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "<redacted>")
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


class SqsError(Exception):
    """An SQS call failed; ``code`` is the server's error code or the failure's kind."""

    def __init__(self, action: str, code: str, detail: str = "", status: int | None = None):
        self.action = action
        self.code = code
        self.status = status
        text = f"{action}: {code}"
        if detail:
            text += f": {detail}"
        if status is not None:
            text += f" (HTTP {status})"
        super().__init__(text)


class SqsUnavailable(SqsError):
    """SQS did not answer, or answered busy: the same call may succeed later."""


class SqsRequestError(SqsError, QueueRefused):
    """SQS refused the request itself (access denied, no such queue, a malformed answer):
    retrying the same call cannot help."""


def is_retryable(status: int, code: str) -> bool:
    """Throttling and server-side failures are worth retrying; a refused request is not."""
    return status == 429 or status >= 500 or code in THROTTLING_CODES
