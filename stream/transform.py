"""Turn a raw SQS body into a masked login or a rejection: the pipeline's pure core."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from stream.masking import Masker
from stream.records import MaskedLogin, RawLogin, Rejection
from stream.validation import InvalidLogin, LoginFields, parse_login

BODY_FIELD = "body"


def mask_login(raw: RawLogin, masker: Masker) -> MaskedLogin | Rejection:
    """Validate and mask *raw*; every failure becomes a :class:`Rejection`."""
    try:
        fields = parse_login(raw.body)
    except InvalidLogin as exc:
        return reject(raw, exc.reason, masker)
    return masked_login(raw, fields, masker)


def masked_login(raw: RawLogin, fields: LoginFields, masker: Masker) -> MaskedLogin:
    return MaskedLogin(
        message_id=raw.message_id,
        user_id=fields.user_id,
        device_type=fields.device_type,
        masked_ip=masker.mask("ip", fields.ip),
        masked_device_id=masker.mask("device_id", fields.device_id),
        locale=fields.locale,
        app_version=fields.app_version_major,
        app_version_full=fields.app_version,
        sent_at_ms=raw.sent_at_ms,
        create_date=utc_date(raw.sent_at_ms),
        dropped_fields=fields.extra_fields,
    )


def reject(raw: RawLogin, reason: str, masker: Masker) -> Rejection:
    """A rejection that keeps the body recoverable by key holders, never in clear."""
    return Rejection(
        message_id=raw.message_id,
        sent_at_ms=raw.sent_at_ms,
        rejected_at_ms=int(time.time() * 1000),
        reason=reason,
        body_token=masker.mask(BODY_FIELD, raw.body.decode("utf-8", "backslashreplace")),
    )


def utc_date(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).date().isoformat()
