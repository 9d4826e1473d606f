"""What both SQS wire protocols share: the answer as received, and its errors.

A protocol module turns an action and its parameters (in the JSON protocol's
shapes: ``{"QueueUrl": ..., "Entries": [...]}``) into an HTTP request, and an
answer back into the same shapes, so the client above never sees which
protocol carried a call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

# Codes a server uses to refuse a request it did not understand at all: the
# sign of a query-only server receiving a JSON request (or the reverse).
UNUNDERSTOOD_CODES = frozenset(
    {
        "MissingAction",
        "InvalidAction",
        "UnknownOperation",
        "UnknownOperationException",
        "UnsupportedOperation",
        "InvalidQueryParameter",
        "MissingParameter",
        "SerializationException",
        "InternalFailure",
        "InternalError",
        "NotImplemented",
    }
)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One POST: where, which headers (before signing), what body."""

    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A server's answer as it came: status, content type and body."""

    status: int
    content_type: str
    body: bytes
    query_error: str = ""  # the JSON protocol's x-amzn-query-error header, if any


class ServerError(Exception):
    """The server answered with an error; ``code`` as the protocol names it."""

    def __init__(self, code: str, message: str, status: int, sender_fault: bool) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status
        self.sender_fault = sender_fault


class MalformedAnswer(Exception):
    """The answer is not what the protocol promises (wrong format, missing fields)."""


class WireProtocol(Protocol):
    """How one protocol encodes a call and decodes its answer."""

    name: str

    def encode(self, endpoint: str, action: str, params: dict[str, Any]) -> HttpRequest: ...

    def decode(self, action: str, answer: HttpAnswer) -> dict[str, Any]:
        """The answer's fields; raises :class:`ServerError` or :class:`MalformedAnswer`."""
        ...


def status_code(status: int) -> str:
    """An error code for an answer whose body names none."""
    return f"HTTP{status}"
