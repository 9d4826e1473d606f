"""Masking keys: a ring of keys with ids, one of them active, read from a file or a variable.

Tokens carry the id of the key that made them. A ring therefore lets an
operator make a new key active for new tokens while tokens made with older
keys stay readable; ``maskstream rekey`` then moves stored tokens to the
active key, after which an old key can be removed from the ring.

The ring is one JSON document, either in a file named by
``MASKSTREAM_KEYRING_FILE`` (mode 0600) or inline in ``MASKSTREAM_KEYRING``
(for secret stores that inject variables)::

    {"format": "maskstream-keyring", "version": 1, "mode": "siv",
     "active": "q4m7zk",
     "keys": {"q4m7zk": {"secret": "<base64>", "created": "2025-01-31T09:00:00Z"}}}

There is deliberately no default key and no way to run without one: a
pipeline that cannot mask must not start, rather than write PII in clear.
Nothing here ever puts key material into a message, a ``repr`` or a log.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.common.settings import Settings

logger = logging.getLogger(__name__)

FORMAT_NAME = "maskstream-keyring"
FORMAT_VERSION = 1
FILE_VARIABLE = "MASKSTREAM_KEYRING_FILE"
INLINE_VARIABLE = "MASKSTREAM_KEYRING"

# AES-SIV with two AES-256 keys (S2V/CMAC key and CTR key) takes 64 bytes;
# HMAC-SHA256 gains nothing from a key longer than its 32-byte output.
KEY_SIZES: Mapping[str, int] = MappingProxyType({"siv": 64, "hmac": 32})
MODES = tuple(KEY_SIZES)

# Key ids appear in every token and in SQL prefix filters: short, lower-case
# alphanumerics only, so they can never contain the token separator ":" or a
# LIKE wildcard.
KEY_ID_PATTERN = re.compile(r"[a-z0-9]{1,16}\Z")
_KEY_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l look-alikes
_KEY_ID_LENGTH = 6


class KeyRingError(Exception):
    """The key ring is missing, unreadable or invalid; the message says which and where."""


class MissingKeyError(KeyRingError):
    """No key ring is configured, so nothing may be masked and nothing may start."""


@dataclass(frozen=True)
class Key:
    """One secret and when it was made (to help decide when to rotate)."""

    secret: bytes = field(repr=False)
    created: str = ""


@dataclass(frozen=True)
class KeyRing:
    """Keys by id, the id of the key that makes new tokens, and the masking mode.

    A ring has a single mode: ``siv`` (recoverable, the default) or ``hmac``
    (irreversible). Mixing modes in one ring would let a rotation silently
    change whether PII can be recovered.
    """

    mode: str
    active_id: str
    keys: Mapping[str, Key]

    def __post_init__(self) -> None:
        problem = _ring_problem(self.mode, self.active_id, self.keys)
        if problem:
            raise KeyRingError(problem)
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    @property
    def active_key(self) -> bytes:
        return self.keys[self.active_id].secret


def _ring_problem(mode: str, active_id: str, keys: Mapping[str, Key]) -> str | None:
    """Why a ring is unusable, or None; never mentions key material."""
    if mode not in KEY_SIZES:
        return f"unknown masking mode {mode!r}: expected one of {', '.join(MODES)}"
    if not keys:
        return "the key ring holds no keys"
    for key_id, key in keys.items():
        if not KEY_ID_PATTERN.match(key_id):
            return f"invalid key id {key_id!r}: use 1-16 lower-case letters and digits"
        if len(key.secret) != KEY_SIZES[mode]:
            return (
                f"key {key_id!r} is {len(key.secret)} bytes; "
                f"{mode} keys must be {KEY_SIZES[mode]} bytes"
            )
    if active_id not in keys:
        return f"the active key {active_id!r} is not in the key ring"
    return None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_key_id(taken: Mapping[str, object] | None = None) -> str:
    """A short random id not in *taken*.

    Random rather than sequential ids make it unlikely that two unrelated
    rings share an id, so a token read with the wrong ring reports an unknown
    key instead of looking tampered.
    """
    taken = taken or {}
    while True:
        key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(_KEY_ID_LENGTH))
        if key_id not in taken:
            return key_id


def new_keyring(mode: str = "siv") -> KeyRing:
    """A ring with one fresh random key, active."""
    if mode not in KEY_SIZES:
        raise KeyRingError(f"unknown masking mode {mode!r}: expected one of {', '.join(MODES)}")
    key_id = new_key_id()
    return KeyRing(mode, key_id, {key_id: Key(secrets.token_bytes(KEY_SIZES[mode]), _now())})


def rotate(ring: KeyRing) -> KeyRing:
    """*ring* plus one fresh key, which becomes active; older keys stay for reading."""
    key_id = new_key_id(ring.keys)
    keys = dict(ring.keys)
    keys[key_id] = Key(secrets.token_bytes(KEY_SIZES[ring.mode]), _now())
    return KeyRing(ring.mode, key_id, keys)


def retire(ring: KeyRing, key_id: str) -> KeyRing:
    """*ring* without *key_id*; the active key cannot be retired."""
    if key_id not in ring.keys:
        raise KeyRingError(f"the key ring holds no key {key_id!r}")
    if key_id == ring.active_id:
        raise KeyRingError(f"key {key_id!r} is active: rotate first (`maskstream keygen`)")
    return KeyRing(ring.mode, ring.active_id, {k: v for k, v in ring.keys.items() if k != key_id})


def dump_keyring(ring: KeyRing) -> str:
    """The ring as its JSON document (contains secrets: write it only to 0600 files)."""
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "mode": ring.mode,
        "active": ring.active_id,
        "keys": {
            key_id: {"secret": base64.b64encode(key.secret).decode(), "created": key.created}
            for key_id, key in ring.keys.items()
        },
    }
    return json.dumps(document, indent=2) + "\n"


def parse_keyring(text: str, source: str) -> KeyRing:
    """Read a ring from its JSON document; *source* names where it came from in errors."""
    try:
        document = json.loads(text)
    except ValueError:
        raise KeyRingError(f"{source}: not a JSON key ring document") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise KeyRingError(f"{source}: not a maskstream key ring (format {FORMAT_NAME!r})")
    if document.get("version") != FORMAT_VERSION:
        raise KeyRingError(
            f"{source}: key ring version {document.get('version')!r} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    keys_doc = document.get("keys")
    if not isinstance(keys_doc, dict):
        raise KeyRingError(f"{source}: 'keys' must be an object of key id -> key")
    keys = {key_id: _parse_key(key_id, entry, source) for key_id, entry in keys_doc.items()}
    try:
        return KeyRing(str(document.get("mode", "siv")), str(document.get("active", "")), keys)
    except KeyRingError as exc:
        raise KeyRingError(f"{source}: {exc}") from None


def _parse_key(key_id: str, entry: object, source: str) -> Key:
    if not isinstance(entry, dict) or not isinstance(entry.get("secret"), str):
        raise KeyRingError(f"{source}: key {key_id!r} needs a base64 'secret'")
    try:
        secret = base64.b64decode(entry["secret"], validate=True)
    except (binascii.Error, ValueError):
        raise KeyRingError(f"{source}: key {key_id!r}: 'secret' is not valid base64") from None
    return Key(secret, str(entry.get("created", "")))


def warn_if_exposed(path: Path) -> None:
    """Warn when group or others may read or write the key file: it guards all PII."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning(
            "key ring file %s has mode %04o, so other users may read it; run: chmod 600 %s",
            path,
            mode,
            path,
        )


def read_keyring_file(path: Path) -> KeyRing:
    """Read the ring at *path*, warning if its permissions expose it."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MissingKeyError(
            f"{FILE_VARIABLE} names {path}, which does not exist; "
            f"create it with `maskstream keygen {path}`"
        ) from None
    except OSError as exc:
        raise KeyRingError(f"cannot read key ring {path}: {exc.strerror}") from None
    warn_if_exposed(path)
    return parse_keyring(text, str(path))


def _write_new_file(path: Path, text: str) -> None:
    """Create *path* with mode 0600 (from the start, never wider), failing if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def create_keyring_file(path: Path, mode: str = "siv") -> None:
    """Write a new ring with one fresh key to *path* (mode 0600); never overwrite a file.

    Overwriting a ring would destroy the only keys able to read existing
    tokens, so an existing file raises :class:`FileExistsError`.
    """
    ring = new_keyring(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_new_file(path, dump_keyring(ring))


def write_keyring_file(path: Path, ring: KeyRing) -> None:
    """Replace the ring at *path* atomically, keeping it 0600.

    Written to a temporary file in the same directory and renamed, so a crash
    leaves either the old ring or the new one, never a truncated file.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        _write_new_file(tmp, dump_keyring(ring))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def load_keyring(settings: Settings) -> KeyRing:
    """The ring configured in *settings*, or :class:`MissingKeyError` if there is none.

    Exactly one of the file and the inline document may be set: with both,
    which key masks the data would depend on precedence rules nobody
    remembers, and tokens made with the wrong ring cannot be matched later.
    """
    if settings.keyring_file and settings.keyring_json:
        raise KeyRingError(f"both {FILE_VARIABLE} and {INLINE_VARIABLE} are set; unset one of them")
    if settings.keyring_file:
        return read_keyring_file(Path(settings.keyring_file))
    if settings.keyring_json:
        return parse_keyring(settings.keyring_json, INLINE_VARIABLE)
    raise MissingKeyError(
        f"no masking key: set {FILE_VARIABLE} to a key ring file or {INLINE_VARIABLE} to "
        f"a key ring JSON document (create one with `maskstream keygen PATH`); "
        "maskstream never processes PII unmasked"
    )
