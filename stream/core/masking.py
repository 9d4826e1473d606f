"""Deterministic PII tokens: the same value under the same key always gives the same token.

Determinism is the point: duplicates of a device or an IP stay visible
(``GROUP BY masked_device_id``) without the value being stored. Two modes:

``siv`` (default, recoverable)
    AES-SIV (RFC 5297), deterministic authenticated encryption. A key holder
    can recover the exact original, and any change to a token is detected.
``hmac`` (irreversible)
    HMAC-SHA256 under a secret key, for deployments that must never recover
    PII. Keyed, so tokens of the small IPv4 space cannot be brute-forced
    without the key.

A token is ``MODE:KEYID:FIELD:PAYLOAD``, e.g. ``siv:q4m7zk:ip:3kX...Q==``,
with PAYLOAD in URL-safe base64. The field is bound into the cryptography
(AES-SIV associated data; for HMAC, the prefix is the start of the message),
so the same text in ``ip`` and ``device_id`` gives different tokens and a
token moved to another column fails to open; a token relabelled with another
key id is opened with that other key, and fails too. Tokens start with
letters and contain ``:``, so they never parse as an IP address or look like
a device id.

Nothing here performs I/O, and no exception message ever contains a clear
value (or the token, since a mistyped "token" may be a clear value).
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import re
from binascii import b2a_base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from stream.common.canonical import canonical_value
from stream.core.keyring import KEY_ID_PATTERN, MODES, KeyRing

SEPARATOR = ":"
SIV_TAG_BYTES = 16

# Field names live in the token prefix: no separator, nothing that needs quoting.
FIELD_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")

_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_MODE_NAMES = frozenset(MODES)

# How many recent values per field mask_recurring remembers the tokens of:
# at most a few MiB a field (validated ips and device ids are short).
RECENT_TOKENS = 16_384
# (token prefix, context passed to seal, seal(data, context) -> raw token bytes)
FieldState = tuple[str, Any, Callable[[bytes, Any], bytes]]


class MaskingError(Exception):
    """A value could not be masked or a token could not be opened."""


class InvalidFieldError(MaskingError):
    """The field name cannot appear in a token."""


class MalformedTokenError(MaskingError):
    """The text is not a maskstream token at all."""


class UnknownKeyError(MaskingError):
    """The token was made with a key this key ring does not hold."""


class TamperedTokenError(MaskingError):
    """The token failed authentication: altered, moved to another field, or wrong key."""


class IrreversibleTokenError(MaskingError):
    """An HMAC token: by design, nothing can recover its value."""


@dataclass(frozen=True)
class TokenParts:
    """A token split into its prefix fields and its (still encoded) payload."""

    mode: str
    key_id: str
    field: str
    payload: str

    @property
    def prefix(self) -> str:
        return token_prefix(self.mode, self.key_id, self.field)


def key_prefix(mode: str, key_id: str) -> str:
    """``MODE:KEYID:``, how every token made with one key starts (for SQL filters)."""
    return f"{mode}{SEPARATOR}{key_id}{SEPARATOR}"


def token_prefix(mode: str, key_id: str, field: str) -> str:
    """``MODE:KEYID:FIELD:``, everything in a token but the payload."""
    return f"{key_prefix(mode, key_id)}{field}{SEPARATOR}"


def b64encode(data: bytes) -> str:
    """URL-safe base64 with padding (kept so decoding needs no arithmetic)."""
    return b2a_base64(data, newline=False).translate(_TO_URLSAFE).decode()


def b64decode(text: str) -> bytes:
    """Inverse of :func:`b64encode`; only the canonical encoding is accepted."""
    try:
        raw = text.encode("ascii")
        data = binascii.a2b_base64(raw.translate(_FROM_URLSAFE), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        raise MalformedTokenError("token payload is not URL-safe base64") from None
    if b64encode(data) != text:
        raise MalformedTokenError("token payload is not canonical URL-safe base64")
    return data


def encode_value(value: str) -> bytes:
    """UTF-8, keeping lone surrogates (JSON can carry them) so every str round-trips."""
    try:
        return value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def decode_value(data: bytes) -> str:
    """Inverse of :func:`encode_value`."""
    return data.decode("utf-8", "surrogatepass")


def parse_token(token: str) -> TokenParts:
    """Split *token* into its parts, checking the shape but not the cryptography."""
    parts = token.split(SEPARATOR, 3) if isinstance(token, str) else []
    if (
        len(parts) != 4
        or parts[0] not in _MODE_NAMES
        or not KEY_ID_PATTERN.match(parts[1])
        or not FIELD_PATTERN.match(parts[2])
    ):
        raise MalformedTokenError(
            "not a maskstream token (expected MODE:KEYID:FIELD:PAYLOAD, MODE siv or hmac)"
        )
    return TokenParts(*parts)


def token_key_id(token: str) -> str:
    """The id of the key that made *token*."""
    return parse_token(token).key_id


def check_field(field: str) -> None:
    """Refuse field names that could not be parsed back out of a token."""
    if not isinstance(field, str) or not FIELD_PATTERN.match(field):
        raise InvalidFieldError(
            f"invalid field name {field!r}: use 1-32 lower-case letters, digits and '_'"
        )


def associated_data(field: str) -> list[bytes]:
    """AES-SIV associated data: the field name, so a token only opens in its own field.

    The key id needs no binding: a token relabelled with another id is opened
    with that other key, and fails. The mode needs none either: an HMAC token
    is never decrypted.
    """
    return [field.encode()]


def hmac_seal(data: bytes, keyed: hmac.HMAC) -> bytes:
    """HMAC of *data*, continuing from a state already keyed and fed the token prefix.

    Copying that state skips the key setup a one-shot HMAC repeats every time.
    """
    mac = keyed.copy()
    mac.update(data)
    return mac.digest()


def max_value_bytes(field: str, column_chars: int = 256) -> int:
    """The longest value (in UTF-8 bytes) whose token of *field* fits *column_chars*.

    Worst case over modes and key ids (up to 16 characters), so validation
    can bound values once: a 64-character device id always fits if it is
    ASCII, but 64 four-byte characters would not fit ``varchar(256)``.
    """
    longest_key_id = "k" * 16
    prefix = max(len(token_prefix(mode, longest_key_id, field)) for mode in MODES)
    payload_bytes = (column_chars - prefix) // 4 * 3
    return payload_bytes - SIV_TAG_BYTES


def field_state(ring: KeyRing, cipher: AESSIV | None, field: str) -> FieldState:
    """What masking values of *field* under the ring's active key needs, computed once.

    ``(prefix, context, seal)``: ``seal(data, context)`` returns the token's
    raw bytes. For AES-SIV, *seal* is the cipher's own ``encrypt`` and the
    context its associated data; for HMAC, the context is the
    HMAC state after the key and the prefix.
    """
    check_field(field)
    prefix = token_prefix(ring.mode, ring.active_id, field)
    if cipher is not None:
        return prefix, associated_data(field), cipher.encrypt
    return prefix, hmac.new(ring.active_key, prefix.encode(), hashlib.sha256), hmac_seal


class Masker:
    """Masks values with the active key of a ring and opens tokens made with any of its keys."""

    def __init__(self, keyring: KeyRing) -> None:
        self._ring = keyring
        self._ciphers: dict[str, AESSIV] = (
            {key_id: AESSIV(key.secret) for key_id, key in keyring.keys.items()}
            if keyring.mode == "siv"
            else {}
        )
        self._fields: dict[str, FieldState] = {}
        self._recent: dict[str, Callable[[str], str]] = {}

    @property
    def mode(self) -> str:
        return self._ring.mode

    @property
    def active_key_id(self) -> str:
        return self._ring.active_id

    def active_prefix(self, field: str) -> str:
        """The prefix every token of *field* made now starts with."""
        check_field(field)
        return token_prefix(self._ring.mode, self._ring.active_id, field)

    def mask(self, field: str, value: str) -> str:
        """The token for *value* in *field* under the active key (deterministic).

        This is the pipeline's hot path, kept to one Python frame: per-field
        state comes from a cache, and the cryptography is a single C call.
        """
        try:
            prefix, context, seal = self._fields[field]
        except KeyError:
            prefix, context, seal = self._fields[field] = field_state(
                self._ring, self._ciphers.get(self._ring.active_id), field
            )
        try:
            data = value.encode()
        except UnicodeEncodeError:
            data = encode_value(value)
        return (
            prefix + b2a_base64(seal(data, context), newline=False).translate(_TO_URLSAFE).decode()
        )

    def mask_recurring(self, field: str, value: str) -> str:
        """:meth:`mask`, remembering the tokens of the last :data:`RECENT_TOKENS`
        values of *field*: for values that come back again and again (a
        device's id, a user's IP), where a lookup costs a tenth of the
        cryptography. Memory stays bounded; use :meth:`mask` for values that
        are large or unique (bodies)."""
        try:
            recent = self._recent[field]
        except KeyError:
            recent = self._recent[field] = functools.lru_cache(maxsize=RECENT_TOKENS)(
                functools.partial(self.mask, field)
            )
        return recent(value)

    def unmask(self, token: str) -> tuple[str, str]:
        """``(field, value)`` for a recoverable token made with any key of the ring."""
        parts = parse_token(token)
        if parts.mode == "hmac":
            raise IrreversibleTokenError(
                f"field {parts.field!r}: HMAC tokens are irreversible by design; "
                "no key can recover their value"
            )
        cipher = self._ciphers.get(parts.key_id)
        if cipher is None:
            raise UnknownKeyError(
                f"field {parts.field!r}: token made with key {parts.key_id!r}, "
                "which this key ring does not hold"
            )
        sealed = b64decode(parts.payload)
        if len(sealed) < SIV_TAG_BYTES:
            raise MalformedTokenError("token payload is shorter than an AES-SIV tag")
        try:
            data = cipher.decrypt(sealed, associated_data(parts.field))
        except InvalidTag:
            raise TamperedTokenError(
                f"field {parts.field!r}, key {parts.key_id!r}: token failed authentication "
                "(altered, moved from another field, or made with a different key of that id)"
            ) from None
        return parts.field, decode_value(data)

    def token_key_id(self, token: str) -> str:
        """The id of the key that made *token* (no cryptography involved)."""
        return token_key_id(token)

    def is_current(self, token: str) -> bool:
        """Whether *token* was made with the active key, i.e. needs no rekeying."""
        return token_key_id(token) == self._ring.active_id

    def rekey(self, token: str) -> str:
        """*token* re-made under the active key (unchanged if it already is).

        The recovered value is re-masked in its canonical spelling
        (:func:`stream.common.canonical.canonical_value`), so tokens that workers
        issued before values were canonicalized (``2001:DB8::1`` beside
        ``2001:db8::1``, a device id with a trailing space) come out as the
        token today's workers give that value: rotating the key and running
        ``maskstream rekey`` merges them.
        """
        if self.is_current(token):
            return token
        field, value = self.unmask(token)
        return self.mask(field, canonical_value(field, value))
