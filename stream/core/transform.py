"""Turn a raw SQS body into a masked login or a rejection: the pipeline's pure core.

:func:`mask_login` is total: whatever the record holds, it returns a
:class:`MaskedLogin` whose values fit ``user_logins`` or a :class:`Rejection`
that fits ``rejected_logins`` and a Kafka record, so no single message can
stop a worker (issue #13).
"""

from __future__ import annotations

import time

from stream.core.masking import Masker, max_value_bytes
from stream.core.records import MaskedLogin, RawLogin, Rejection
from stream.core.timestamps import clamp_epoch_ms, utc_date
from stream.core.validation import InvalidLogin, LoginFields, parse_login

BODY_FIELD = "body"
# Longest body token a rejection carries. A rejection is one Kafka record, and
# Kafka's default limits are 1 MiB (the broker's message.max.bytes, the
# producer's max.request.size); a quarter of that leaves room for the other
# fields and for batching however those limits are set. Logins are well under
# 1 KiB, so only junk is ever cut: about 192 KiB of body text is kept.
MAX_BODY_TOKEN_CHARS = 256 * 1024
MAX_BODY_TEXT_BYTES = max_value_bytes(BODY_FIELD, MAX_BODY_TOKEN_CHARS)


def mask_login(raw: RawLogin, masker: Masker, envelope: str = "auto") -> MaskedLogin | Rejection:
    """Validate and mask *raw* (inside an envelope *envelope* unwraps); every failure
    becomes a :class:`Rejection`."""
    try:
        fields = parse_login(raw.body, envelope)
    except InvalidLogin as exc:
        return reject(raw, exc.reason, masker)
    return masked_login(raw, fields, masker)


def masked_login(raw: RawLogin, fields: LoginFields, masker: Masker) -> MaskedLogin:
    sent_at_ms = clamp_epoch_ms(raw.sent_at_ms)
    return MaskedLogin(
        message_id=raw.message_id,
        user_id=fields.user_id,
        device_type=fields.device_type,
        masked_ip=masker.mask_recurring("ip", fields.ip),
        masked_device_id=masker.mask_recurring("device_id", fields.device_id),
        locale=fields.locale,
        app_version=fields.app_version_major,
        app_version_full=fields.app_version,
        sent_at_ms=sent_at_ms,
        create_date=utc_date(sent_at_ms),
        dropped_fields=fields.extra_fields,
        envelope_kind=fields.envelope_kind,
        envelope_id=fields.envelope_id,
    )


def reject(raw: RawLogin, reason: str, masker: Masker) -> Rejection:
    """A rejection that keeps the body recoverable by key holders, never in clear.

    A body whose token would outgrow :data:`MAX_BODY_TOKEN_CHARS` keeps only
    its start, and the reason says how much.
    """
    text, kept = body_text(raw.body)
    if kept < len(raw.body):
        reason = f"{reason} (body truncated to {kept} of {len(raw.body)} bytes)"
    return Rejection(
        message_id=raw.message_id,
        sent_at_ms=clamp_epoch_ms(raw.sent_at_ms),
        rejected_at_ms=int(time.time() * 1000),
        reason=reason,
        body_token=masker.mask(BODY_FIELD, text),
    )


def body_text(body: bytes, limit: int = MAX_BODY_TEXT_BYTES) -> tuple[str, int]:
    """The text of *body* to encrypt (at most *limit* UTF-8 bytes) and how many body bytes it holds.

    Bytes that are not UTF-8 are kept as ``\\xNN`` escapes, so the text takes
    1 to 4 bytes per body byte: a body of up to ``limit // 4`` bytes always
    fits, and one of more than *limit* bytes never does.
    """
    if len(body) * 4 <= limit or (len(body) <= limit and text_bytes(body) <= limit):
        return _text(body), len(body)
    kept = fitting_prefix(body, limit)
    return _text(body[:kept]), kept


def fitting_prefix(body: bytes, limit: int) -> int:
    """A length n whose prefix ``body[:n]`` has text of at most *limit* bytes, and n + 1's not.

    By bisection from ``limit // 4`` (always fits) to ``limit + 1`` or the
    whole body (never fits). The text does not grow monotonically with the
    prefix (a cut multi-byte character is escaped, four text bytes per byte,
    until its last byte arrives), so n need not be the longest such prefix;
    it is within one character of it.
    """
    low, high = limit // 4, min(len(body), limit + 1)
    while high - low > 1:
        middle = (low + high) // 2
        if text_bytes(body[:middle]) <= limit:
            low = middle
        else:
            high = middle
    return low


def text_bytes(body: bytes) -> int:
    """``len(_text(body).encode())`` without building that text.

    Valid UTF-8 re-encodes to the same bytes, and every other byte becomes a
    four-byte escape; decoding with "ignore" drops exactly those bytes, and
    runs many times faster than "backslashreplace" on a body of junk (which
    calls its handler for every bad byte): this keeps the bisection cheap.
    """
    valid = len(body.decode("utf-8", "ignore").encode())
    return valid + 4 * (len(body) - valid)


def _text(body: bytes) -> str:
    return body.decode("utf-8", "backslashreplace")
