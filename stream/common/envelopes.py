"""Envelopes a login may arrive in: an SNS notification or an EventBridge event.

Producers often publish to SNS, with each consumer's queue subscribed (raw
message delivery off), or route events to a queue with an EventBridge rule.
Then the SQS body is the envelope and the login is inside it: the JSON
*string* ``Message`` of an SNS notification, the *object* ``detail`` of an
EventBridge event. The bridge keys a record by the inner login's device id and
the worker validates and masks the inner login; both recognise an envelope
the same way, here.

An envelope is recognised by its shape, never by guessing at a login: an SNS
notification has ``"Type": "Notification"``, a ``TopicArn`` and a
``Message``; an EventBridge event has ``detail-type``, ``source`` and
``detail``. No login has those keys, so a bare login is never unwrapped.

Pure functions; this module imports nothing from the rest of the project.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SNS = "sns"
EVENTBRIDGE = "eventbridge"
# MASKSTREAM_ENVELOPE: unwrap what is recognised (auto), nothing, or one kind.
ENVELOPE_MODES = ("auto", "none", SNS, EVENTBRIDGE)
# What a kind is called in a rejection's reason.
KIND_NAMES = {SNS: "SNS notification", EVENTBRIDGE: "EventBridge event"}
# Longest envelope id kept with a row: SNS and EventBridge ids are UUIDs.
MAX_ENVELOPE_ID = 128


class EnvelopeError(ValueError):
    """A recognised envelope that holds no usable login; the message is the reason."""


@dataclass(frozen=True, slots=True)
class Opened:
    """What an envelope held: its kind and id (None for a bare body), and the inner value."""

    kind: str | None
    envelope_id: str | None
    inner: Any


def kind_of(document: Any, mode: str = "auto") -> str | None:
    """The envelope kind *document* has the shape of, if *mode* unwraps it; else None."""
    if mode == "none" or not isinstance(document, dict):
        return None
    if (
        document.get("Type") == "Notification"
        and "TopicArn" in document
        and "Message" in document
        and mode in ("auto", SNS)
    ):
        return SNS
    if (
        "detail-type" in document
        and "source" in document
        and "detail" in document
        and mode in ("auto", EVENTBRIDGE)
    ):
        return EVENTBRIDGE
    return None


def _envelope_id(document: Mapping[str, Any], key: str) -> str | None:
    value = document.get(key)
    if not isinstance(value, str) or not value:
        return None
    return value[:MAX_ENVELOPE_ID]


def open_envelope(document: Any, mode: str, decode: Callable[[str], Any] = json.loads) -> Opened:
    """The login inside *document* if it is an envelope *mode* unwraps; else *document*.

    *decode* parses an SNS ``Message`` (the worker passes its strict decoder);
    its own exceptions pass through. Raises :class:`EnvelopeError` for an
    envelope without a usable login.
    """
    kind = kind_of(document, mode)
    if kind == SNS:
        message = document["Message"]
        if not isinstance(message, str):
            raise EnvelopeError("SNS notification: Message is not a string")
        return Opened(SNS, _envelope_id(document, "MessageId"), decode(message))
    if kind == EVENTBRIDGE:
        detail = document["detail"]
        if not isinstance(detail, dict):
            raise EnvelopeError("EventBridge event: detail is not an object")
        return Opened(EVENTBRIDGE, _envelope_id(document, "id"), detail)
    return Opened(None, None, document)


def login_document(body: bytes, mode: str) -> Any:
    """The login object of *body*, unwrapped from an envelope, for keying; None if there
    is none. Never raises: the worker decides what a body that fails here is."""
    try:
        return open_envelope(json.loads(body), mode).inner
    except (ValueError, RecursionError, TypeError):
        return None
