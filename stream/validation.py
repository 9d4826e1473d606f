"""Parse and validate one SQS message body into login fields, or say why not.

Pure functions, no I/O. Limits mirror the columns of ``user_logins`` so that a
body that passes here fits the table. Rejection reasons name fields and
kinds of problem, never values: a reason is logged and stored in clear, and
the values may be PII.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass

from stream.masking import max_value_bytes

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

# "2.3.0", "0.96", "3.7": digits, then one or two more dotted groups.
VERSION_PATTERN = re.compile(r"\d{1,9}(?:\.\d{1,9}){1,2}")


class InvalidLogin(ValueError):
    """The body is not a valid login; ``reason`` is safe to log and store."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LoginFields:
    """A validated login, PII still in clear: never log or store this as is."""

    user_id: str
    device_type: str
    ip: str
    device_id: str
    locale: str | None
    app_version: str
    extra_fields: int  # unknown keys dropped from the body

    @property
    def app_version_major(self) -> int:
        return int(self.app_version.split(".", 1)[0])


def parse_login(body: bytes) -> LoginFields:
    """Decode, parse and validate *body*; raise :class:`InvalidLogin` with a reason."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidLogin("not UTF-8 text") from None
    if not text.strip():
        raise InvalidLogin("empty body")
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise InvalidLogin("not JSON") from None
    if not isinstance(document, dict):
        raise InvalidLogin(f"not an object (JSON {_json_kind(document)})")
    if not document:
        raise InvalidLogin("empty object")
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


def _text(document: dict, name: str, max_length: int) -> str:
    value = document[name]
    if not isinstance(value, str):
        raise InvalidLogin(f"{name} must be a string, got {_json_kind(value)}")
    if not value.strip():
        raise InvalidLogin(f"{name} is empty")
    if len(value) > max_length:
        raise InvalidLogin(f"{name} longer than {max_length}")
    return value


def _ip(document: dict) -> str:
    value = _text(document, "ip", MAX_IP)
    try:
        if not value.isascii():  # e.g. an IPv6 scope id in another script
            raise ValueError
        ipaddress.ip_address(value)
    except ValueError:
        raise InvalidLogin("ip is not an IPv4 or IPv6 address") from None
    return value


def _device_id(document: dict) -> str:
    value = _text(document, "device_id", MAX_DEVICE_ID)
    if len(value.encode("utf-8", "surrogatepass")) > MAX_DEVICE_ID_BYTES:
        raise InvalidLogin(f"device_id longer than {MAX_DEVICE_ID_BYTES} bytes in UTF-8")
    return value


def _version(document: dict) -> str:
    value = document["app_version"]
    if not isinstance(value, str):
        raise InvalidLogin(f"app_version must be a string, got {_json_kind(value)}")
    if len(value) > MAX_APP_VERSION:
        raise InvalidLogin(f"app_version longer than {MAX_APP_VERSION}")
    if not VERSION_PATTERN.fullmatch(value):
        raise InvalidLogin("app_version is not a version like 2.3.0, 0.96 or 3.7")
    if int(value.split(".", 1)[0]) > MAX_MAJOR_VERSION:
        raise InvalidLogin("app_version major number too large")
    return value
