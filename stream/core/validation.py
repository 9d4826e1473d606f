"""Parse and validate one SQS message body into login fields, or say why not.

Pure functions, no I/O. Limits mirror the columns of ``user_logins`` so that a
body that passes here fits the table. Rejection reasons name fields and
kinds of problem, never values: a reason is logged and stored in clear, and
the values may be PII.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, replace

from stream.common.canonical import InvalidAddress, canonical_device_id, canonical_ip
from stream.common.envelopes import KIND_NAMES, EnvelopeError, kind_of, open_envelope
from stream.core.masking import max_value_bytes

# Column limits from the exercise's DDL (varchar lengths).
MAX_USER_ID = 128
MAX_DEVICE_TYPE = 32
MAX_LOCALE = 32
MAX_APP_VERSION = 32
# Masked tokens must fit varchar(256); this bound keeps device id tokens short.
MAX_DEVICE_ID = 64
MAX_IP = 45  # the longest textual IPv6 address
# Tokens of masked fields must fit varchar(256) whatever the characters.
MAX_DEVICE_ID_BYTES = max_value_bytes("device_id")
MAX_MAJOR_VERSION = 2**31 - 1  # Postgres integer

REQUIRED_FIELDS = ("user_id", "app_version", "device_type", "ip", "device_id")
OPTIONAL_FIELDS = ("locale",)
KNOWN_FIELDS = frozenset(REQUIRED_FIELDS + OPTIONAL_FIELDS)

# "2.3.0", "0.96", "3.7": ASCII digits, then one or two more dotted groups
# (re.ASCII: \d would also take fullwidth or Arabic-Indic digits, which int()
# reads but which are no version anyone ships).
VERSION_PATTERN = re.compile(r"\d{1,9}(?:\.\d{1,9}){1,2}", re.ASCII)


class _DuplicateKeys(dict):
    """A JSON object that named some keys more than once (the last value kept)."""

    duplicates: frozenset[str]


def _object(pairs: list[tuple[str, object]]) -> dict:
    """``object_pairs_hook``: a dict, marked when a key repeats.

    Plain ``json.loads`` keeps the last of repeated keys silently, so a body
    with two ``ip`` values would be masked with whichever came last while
    another reader might take the first. Only the marking costs anything,
    and only for such bodies.
    """
    document = dict(pairs)
    if len(document) == len(pairs):
        return document
    marked = _DuplicateKeys(document)
    counts = Counter(key for key, _ in pairs)
    marked.duplicates = frozenset(key for key, count in counts.items() if count > 1)
    return marked


_DECODER = json.JSONDecoder(object_pairs_hook=_object)


class InvalidLogin(ValueError):
    """The body is not a valid login; ``reason`` is safe to log and store."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)  # not frozen: built once per message (see stream.core.records)
class LoginFields:
    """A validated login, PII still in clear: never log or store this as is."""

    user_id: str
    device_type: str
    ip: str
    device_id: str
    locale: str | None
    app_version: str
    extra_fields: int  # unknown keys dropped from the body
    # The envelope the login came in ("sns", "eventbridge") and its own id; None if bare.
    envelope_kind: str | None = None
    envelope_id: str | None = None

    @property
    def app_version_major(self) -> int:
        return int(self.app_version.split(".", 1)[0])


def parse_login(body: bytes, envelope: str = "auto") -> LoginFields:
    """Decode, parse and validate *body*; raise :class:`InvalidLogin` with a reason.

    A body that is an envelope *envelope* unwraps (:mod:`stream.common.envelopes`)
    is validated as the login it holds; the reason of a refusal then says
    where the fault is: in the envelope, or in the login inside it.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidLogin("not UTF-8 text") from None
    if not text.strip():
        raise InvalidLogin("empty body")
    document = _decode(text)
    kind = kind_of(document, envelope)
    if kind is None:
        return _login(document)
    where = KIND_NAMES[kind]
    if isinstance(document, _DuplicateKeys):
        raise InvalidLogin(f"{where}: {_duplicates_reason(document.duplicates)}")
    try:
        opened = open_envelope(document, envelope, _decode_inner)
    except EnvelopeError as exc:
        raise InvalidLogin(str(exc)) from None
    except InvalidLogin as exc:
        raise InvalidLogin(f"{where}: Message is {exc.reason}") from None
    try:
        fields = _login(opened.inner)
    except InvalidLogin as exc:
        raise InvalidLogin(f"inside the {where}: {exc.reason}") from None
    return replace(fields, envelope_kind=opened.kind, envelope_id=opened.envelope_id)


def _decode_inner(text: str) -> object:
    """An SNS Message's JSON value; an empty one is refused as such."""
    if not text.strip():
        raise InvalidLogin("empty")
    return _decode(text)


def _login(document: object) -> LoginFields:
    """Validate a decoded login object."""
    if not isinstance(document, dict):
        raise InvalidLogin(f"not an object (JSON {_json_kind(document)})")
    if not document:
        raise InvalidLogin("empty object")
    if isinstance(document, _DuplicateKeys):
        raise InvalidLogin(_duplicates_reason(document.duplicates))
    if KNOWN_FIELDS.isdisjoint(document):
        raise InvalidLogin("not a login (no login fields)")
    for name in REQUIRED_FIELDS:
        if name not in document:
            raise InvalidLogin(f"missing field {name}")

    locale = document.get("locale")
    fields = LoginFields(
        user_id=_text(document, "user_id", MAX_USER_ID),
        device_type=_text(document, "device_type", MAX_DEVICE_TYPE),
        ip=_ip(document),
        device_id=_device_id(document),
        locale=None if locale is None else _text(document, "locale", MAX_LOCALE),
        app_version=_version(document),
        extra_fields=len(document.keys() - KNOWN_FIELDS),
    )
    return fields


def _decode(text: str) -> object:
    """The JSON value of *text*; every way ``json`` can fail is an :class:`InvalidLogin`.

    Besides syntax errors, ``json`` raises a plain ValueError for an integer
    longer than Python's int digit limit (CVE-2020-10735) and RecursionError
    for deep nesting: bodies are untrusted, so neither may escape.
    """
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError:
        raise InvalidLogin("not JSON") from None
    except RecursionError:
        raise InvalidLogin("not JSON (nested too deeply)") from None
    except ValueError:
        limit = sys.get_int_max_str_digits()
        raise InvalidLogin(f"not JSON (an integer of more than {limit} digits)") from None


def _duplicates_reason(duplicates: frozenset[str]) -> str:
    """Names login fields only: any other key is body text, and may be PII."""
    known = sorted(duplicates & KNOWN_FIELDS)
    if not known:
        return "duplicate field (not a login field)"
    return "duplicate field " + ", ".join(known)


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _string(document: dict, name: str) -> str:
    """The field as a string PostgreSQL can store.

    JSON may escape a lone UTF-16 surrogate (``"\\ud800"``), which Python keeps
    but no UTF-8 encoder (so no database) accepts; and PostgreSQL refuses NUL
    in text. Either would fail the whole batch's insert, so both are refused here.
    """
    value = document[name]
    if not isinstance(value, str):
        raise InvalidLogin(f"{name} must be a string, got {_json_kind(value)}")
    if not value.isascii():  # ASCII (a flag on the str, no scan) always encodes
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidLogin(f"{name} is not valid Unicode (a lone surrogate)") from None
    if "\0" in value:
        raise InvalidLogin(f"{name} contains a NUL character")
    return value


def _bounded(name: str, value: str, max_length: int) -> str:
    if not value.strip():
        raise InvalidLogin(f"{name} is empty")
    if len(value) > max_length:
        raise InvalidLogin(f"{name} longer than {max_length}")
    return value


def _text(document: dict, name: str, max_length: int) -> str:
    return _bounded(name, _string(document, name), max_length)


def _ip(document: dict) -> str:
    """The canonical text of the address, so every spelling of it gets one token."""
    value = _string(document, "ip")
    try:
        return _bounded("ip", canonical_ip(value), MAX_IP)
    except InvalidAddress as exc:
        if not value.strip():
            raise InvalidLogin("ip is empty") from None
        raise InvalidLogin(f"ip {exc}") from None


def _device_id(document: dict) -> str:
    """The canonical device id (the bridge keys by the same form); bounds apply to it."""
    value = canonical_device_id(_string(document, "device_id"))
    _bounded("device_id", value, MAX_DEVICE_ID)
    if not value.isascii() and len(value.encode()) > MAX_DEVICE_ID_BYTES:
        raise InvalidLogin(f"device_id longer than {MAX_DEVICE_ID_BYTES} bytes in UTF-8")
    return value


def _version(document: dict) -> str:
    value = _string(document, "app_version")
    if len(value) > MAX_APP_VERSION:
        raise InvalidLogin(f"app_version longer than {MAX_APP_VERSION}")
    if not VERSION_PATTERN.fullmatch(value):
        raise InvalidLogin("app_version is not a version like 2.3.0, 0.96 or 3.7")
    if int(value.split(".", 1)[0]) > MAX_MAJOR_VERSION:
        raise InvalidLogin("app_version major number too large")
    return value
