"""SQS's AWS JSON 1.0 protocol: a JSON body, the action in ``X-Amz-Target``.

Spoken by AWS since 2023, current boto3, LocalStack 3 and ElasticMQ 1.4 on.
The parameters and answers are already in the shapes the client uses.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.sqs.wire import (
    UNUNDERSTOOD_CODES,
    HttpAnswer,
    HttpRequest,
    MalformedAnswer,
    ServerError,
    status_code,
)

CONTENT_TYPE = "application/x-amz-json-1.0"
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class JsonProtocol:
    name = "json"

    def encode(self, endpoint: str, action: str, params: dict[str, Any]) -> HttpRequest:
        return HttpRequest(
            url=endpoint + "/",
            headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": f"AmazonSQS.{action}"},
            body=_dumps(params).encode("utf-8"),
        )

    def decode(self, action: str, answer: HttpAnswer) -> dict[str, Any]:
        document = _json_object(answer.body)
        if answer.status == 200:
            if document is None and not answer.body.strip():
                return {}  # calls that return nothing (DeleteQueue) may send no body
            if document is None:
                raise MalformedAnswer(f"{action}: the answer is not a JSON object")
            return document
        raise error_of(answer, document)


def _json_object(body: bytes) -> dict[str, Any] | None:
    if body.lstrip()[:1] != b"{":
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def error_of(answer: HttpAnswer, document: dict[str, Any] | None = None) -> ServerError:
    """The error an answer carries: ``__type`` (namespace cut off), or the status alone."""
    if document is None:
        document = _json_object(answer.body)
    if document is None or not isinstance(document.get("__type"), str):
        return ServerError(status_code(answer.status), "", answer.status, answer.status < 500)
    code = document["__type"].rpartition("#")[2]
    message = document.get("message") or document.get("Message") or ""
    fault = answer.query_error.rpartition(";")[2]
    sender = fault == "Sender" if fault else answer.status < 500
    return ServerError(code, str(message), answer.status, sender)


def understood(answer: HttpAnswer) -> bool:
    """Did the server take this for a JSON-protocol request (whatever it answered)?

    A proper answer, or an error in the protocol's own format that is not a
    refusal to parse the request.
    """
    document = _json_object(answer.body)
    if document is None:
        return False
    if answer.status == 200:
        return True
    error = error_of(answer, document)
    return answer.status < 500 and error.code not in UNUNDERSTOOD_CODES
