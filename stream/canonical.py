"""Canonical spellings of PII values, shared by the bridge and the workers.

Masking is deterministic, so two spellings of one value would get two tokens
and hide a duplicate. The bridge also keys raw records by a hash of the
canonical device id, so every spelling of one device lands in one partition
(and its ``seen_devices`` entry in one changelog partition). Both sides must
therefore agree on the canonical form: it is defined here, once.

Pure functions; this module imports nothing from the rest of the project.
"""

from __future__ import annotations

import hashlib
import json

# Bytes of SHA-256 kept for a raw record's key: enough that two devices never
# collide in practice, short enough to cost nothing on the wire.
RAW_KEY_BYTES = 16


def canonical_device_id(value: str) -> str:
    """A device id without surrounding whitespace."""
    return value.strip()


def raw_record_key(body: bytes, field: str) -> bytes | None:
    """The key of a raw record: a hash of the body's *field* (canonical form).

    Like Kafka Connect's ValueToKey, so every login of a device lands in one
    partition of the raw topic; hashed, so tools that print keys show no PII.
    None when the body is not a JSON object with that field as a string: the
    caller keys such a record by its message id instead. Never raises.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, a huge integer, too deep
        return None
    value = document.get(field) if isinstance(document, dict) else None
    if not isinstance(value, str):
        return None
    try:
        encoded = canonical_device_id(value).encode()
    except UnicodeEncodeError:  # a lone surrogate escape: keyed by message id
        return None
    return hashlib.sha256(encoded).digest()[:RAW_KEY_BYTES]
