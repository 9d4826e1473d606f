"""SQS's query protocol: form-encoded ``Action=...`` requests, XML answers.

The protocol SQS began with, which AWS still accepts and which LocalStack
before 3.0 (the exercise's own image), ElasticMQ before 1.4 and other
emulators speak exclusively. Parameters arrive in the JSON protocol's shapes
and are flattened to the query names (``Entries[0].Id`` becomes
``DeleteMessageBatchRequestEntry.1.Id``); answers are parsed back into the
JSON shapes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

from bridge.sqs.wire import (
    UNUNDERSTOOD_CODES,
    HttpAnswer,
    HttpRequest,
    MalformedAnswer,
    ServerError,
    status_code,
)

API_VERSION = "2012-11-05"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"

# JSON list parameters and the member name the query protocol numbers them by.
LIST_MEMBERS = {
    "AttributeNames": "AttributeName",
    "MessageSystemAttributeNames": "AttributeName",
    "MessageAttributeNames": "MessageAttributeName",
}
# JSON maps of name -> value and the query member of each pair.
MAP_MEMBERS = {"Attributes": "Attribute", "MessageAttributes": "MessageAttribute", "tags": "Tag"}
MAP_VALUE = {"Attribute": "Value", "MessageAttribute": "Value", "Tag": "Value"}
MAP_KEY = {"Attribute": "Name", "MessageAttribute": "Name", "Tag": "Key"}


def flatten(action: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """The form fields of a call, in the query protocol's names."""
    fields = [("Action", action), ("Version", API_VERSION)]
    _flatten_into(fields, "", params, f"{action}RequestEntry")
    return fields


def _flatten_into(fields: list[tuple[str, str]], prefix: str, params: dict, entry: str) -> None:
    for name, value in params.items():
        if value is None:
            continue
        if name == "Entries":
            for i, item in enumerate(value, start=1):
                _flatten_into(fields, f"{prefix}{entry}.{i}.", item, entry)
        elif name in LIST_MEMBERS:
            member = LIST_MEMBERS[name]
            fields.extend((f"{prefix}{member}.{i}", str(v)) for i, v in enumerate(value, start=1))
        elif name in MAP_MEMBERS:
            member = MAP_MEMBERS[name]
            for i, (key, item) in enumerate(value.items(), start=1):
                fields.append((f"{prefix}{member}.{i}.{MAP_KEY[member]}", key))
                path = f"{prefix}{member}.{i}.{MAP_VALUE[member]}"
                if isinstance(item, dict):
                    _flatten_into(fields, f"{path}.", item, entry)
                else:
                    fields.append((path, str(item)))
        elif isinstance(value, bool):
            fields.append((prefix + name, "true" if value else "false"))
        else:
            fields.append((prefix + name, str(value)))


def form_encode(fields: list[tuple[str, str]]) -> bytes:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='-_.~')}" for k, v in fields).encode()


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _text(element: ElementTree.Element, name: str, default: str = "") -> str:
    for child in element:
        if _local(child.tag) == name:
            return child.text or ""
    return default


def _children(element: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [child for child in element if _local(child.tag) == name]


def _find_all(root: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [element for element in root.iter() if _local(element.tag) == name]


def _name_values(element: ElementTree.Element, member: str) -> dict[str, str]:
    return {_text(pair, "Name"): _text(pair, "Value") for pair in _children(element, member)}


def _message_attributes(element: ElementTree.Element) -> dict[str, dict[str, str]]:
    attributes = {}
    for pair in _children(element, "MessageAttribute"):
        value = next(iter(_children(pair, "Value")), None)
        if value is None:
            continue
        attributes[_text(pair, "Name")] = {_local(child.tag): child.text or "" for child in value}
    return attributes


def _message(element: ElementTree.Element) -> dict[str, Any]:
    return {
        "MessageId": _text(element, "MessageId"),
        "ReceiptHandle": _text(element, "ReceiptHandle"),
        "MD5OfBody": _text(element, "MD5OfBody"),
        "Body": _text(element, "Body"),
        "Attributes": _name_values(element, "Attribute"),
        "MessageAttributes": _message_attributes(element),
    }


def _batch(root: ElementTree.Element, action: str) -> dict[str, Any]:
    successful = [
        {_local(child.tag): child.text or "" for child in entry}
        for entry in _find_all(root, f"{action}ResultEntry")
    ]
    failed = [
        {
            "Id": _text(entry, "Id"),
            "Code": _text(entry, "Code"),
            "Message": _text(entry, "Message"),
            "SenderFault": _text(entry, "SenderFault").lower() == "true",
        }
        for entry in _find_all(root, "BatchResultErrorEntry")
    ]
    return {"Successful": successful, "Failed": failed}


def _result(root: ElementTree.Element, action: str) -> dict[str, Any]:
    results = _find_all(root, f"{action}Result")
    result = results[0] if results else root
    if action == "ReceiveMessage":
        return {"Messages": [_message(m) for m in _children(result, "Message")]}
    if action.endswith("Batch"):
        return _batch(root, action)
    if action == "GetQueueAttributes":
        return {"Attributes": _name_values(result, "Attribute")}
    if action in ("GetQueueUrl", "CreateQueue"):
        return {"QueueUrl": _text(result, "QueueUrl")}
    if action == "ListQueues":
        return {"QueueUrls": [q.text or "" for q in _children(result, "QueueUrl")]}
    if action == "SendMessage":
        return {child: _text(result, child) for child in ("MessageId", "MD5OfMessageBody")}
    return {}


def _parse(body: bytes) -> ElementTree.Element | None:
    if body.lstrip()[:1] != b"<":
        return None
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None


class QueryProtocol:
    name = "query"

    def encode(self, endpoint: str, action: str, params: dict[str, Any]) -> HttpRequest:
        return HttpRequest(
            url=endpoint + "/",
            headers={"Content-Type": CONTENT_TYPE},
            body=form_encode(flatten(action, params)),
        )

    def decode(self, action: str, answer: HttpAnswer) -> dict[str, Any]:
        root = _parse(answer.body)
        if answer.status == 200 and root is not None and _local(root.tag) != "ErrorResponse":
            if _local(root.tag) != f"{action}Response":
                raise MalformedAnswer(f"{action}: the answer is a {_local(root.tag)}")
            return _result(root, action)
        if answer.status == 200 and root is None:
            raise MalformedAnswer(f"{action}: the answer is not XML")
        raise error_of(answer, root)


def error_of(answer: HttpAnswer, root: ElementTree.Element | None = None) -> ServerError:
    """The error an XML answer carries (``<ErrorResponse><Error>``), or the status alone."""
    if root is None:
        root = _parse(answer.body)
    errors = _find_all(root, "Error") if root is not None else []
    if not errors:
        return ServerError(status_code(answer.status), "", answer.status, answer.status < 500)
    error = errors[0]
    code = _text(error, "Code") or status_code(answer.status)
    fault = _text(error, "Type")
    sender = fault == "Sender" if fault else answer.status < 500
    return ServerError(code, _text(error, "Message"), answer.status, sender)


def understood(answer: HttpAnswer, action: str) -> bool:
    """Did the server take this for a query-protocol request (whatever it answered)?"""
    root = _parse(answer.body)
    if root is None:
        return False
    if answer.status == 200:
        return _local(root.tag) == f"{action}Response"
    error = error_of(answer, root)
    return answer.status < 500 and error.code not in UNUNDERSTOOD_CODES
