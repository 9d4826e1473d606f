"""The shapes an event takes on its way through the pipeline.

``RawLogin`` is what the bridge put on ``logins.raw``: an untouched body plus
the SQS metadata from its headers. Each becomes a ``MaskedLogin`` (a row of
``user_logins``, published to ``logins.masked``) or a ``Rejection`` (a row of
``rejected_logins``, published to ``logins.rejected``), both JSON objects on
their topics; neither ever holds an IP or a device id in clear.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_text

from stream.common.raw_records import (  # noqa: F401  (re-exported for readers of records)
    HEADER_MESSAGE_ID,
    HEADER_RECEIVE_COUNT,
    HEADER_SENT_TIMESTAMP,
    MAX_RAW_RECORD_BYTES,
    MAX_SQS_BODY_BYTES,
)
from stream.core.timestamps import MAX_EPOCH_MS, clamp_epoch_ms

# user_logins.message_id is varchar(128); a receive count fits a Postgres integer.
MAX_MESSAGE_ID = 128
MAX_RECEIVE_COUNT = 2**31 - 1


# Not frozen: a frozen dataclass sets each field through object.__setattr__,
# which made building the one RawLogin and MaskedLogin of every message cost
# more than a microsecond each; nothing mutates them after construction.
@dataclass(slots=True)
class RawLogin:
    """One SQS message as the bridge forwarded it. ``body`` may hold PII in clear."""

    message_id: str
    sent_at_ms: int
    body: bytes
    receive_count: int = 1
    # The raw record's headers (SQS metadata and message attributes), kept by
    # reference: a masked login carries on only the attributes a setting names.
    headers: Mapping[str, bytes] = field(default_factory=dict)
    # Where the raw record is (``topic:partition:offset``): its row records it,
    # so that a batch processed again publishes what it wrote, and a second
    # copy of the same SQS message publishes nothing.
    position: str = ""
    offset: int = -1  # the raw record's offset in its partition (-1: unknown)

    @classmethod
    def from_kafka(
        cls,
        body: bytes | None,
        headers: Mapping[str, bytes] | None,
        key: bytes | None,
        timestamp_ms: int,
        position: str,
        offset: int = -1,
    ) -> RawLogin:
        """Build from a Kafka record; fall back to the key and the record's own
        timestamp when a producer other than the bridge left headers out.

        Never raises, whatever the record holds: a header that is not a plain
        number in range is treated as absent, and a record timestamp out of
        range is clamped (see :mod:`stream.core.timestamps`), so every later step
        can represent the time.
        """
        headers = headers or {}
        message_id = _header(headers, HEADER_MESSAGE_ID) or (
            key.decode("utf-8", "replace") if key else f"kafka:{position}"
        )
        sent = _header_number(headers, HEADER_SENT_TIMESTAMP, MAX_EPOCH_MS)
        receives = _header_number(headers, HEADER_RECEIVE_COUNT, MAX_RECEIVE_COUNT)
        return cls(
            message_id=_storable(message_id)[:MAX_MESSAGE_ID],
            sent_at_ms=sent if sent is not None else clamp_epoch_ms(timestamp_ms),
            body=body or b"",
            receive_count=receives if receives is not None else 1,
            headers=headers,
            position=position,
            offset=offset,
        )


def _header(headers: Mapping[str, bytes], name: str) -> str | None:
    value = headers.get(name)
    return value.decode("utf-8", "replace") if value is not None else None


def _header_number(headers: Mapping[str, bytes], name: str, maximum: int) -> int | None:
    """The header as an integer from 0 to *maximum*, or None if it is anything else.

    ASCII digits only: ``str.isdigit`` also accepts "²" (which ``int`` refuses)
    and other scripts' digits; and the length is checked before ``int``,
    which refuses more than 4,300 digits.
    """
    text = _header(headers, name)
    if text is None or not (text.isascii() and text.isdigit()):
        return None
    if len(text.lstrip("0")) > len(str(maximum)):
        return None
    value = int(text)
    return value if value <= maximum else None


def _storable(text: str) -> str:
    """*text* as PostgreSQL text can hold it: no NUL, no lone surrogate."""
    return text.encode("utf-8", "replace").decode().replace("\0", "\ufffd")


@dataclass(slots=True)  # not frozen, as RawLogin: built once per message
class MaskedLogin:
    """A valid login with PII replaced by tokens; one row of ``user_logins``.

    A plain dataclass with its own JSON, not a Faust record: one is built per
    login, and building Faust models (field descriptors, ``__faust``
    metadata) cost more than masking the login.
    """

    message_id: str
    user_id: str
    device_type: str
    masked_ip: str
    masked_device_id: str
    locale: str | None
    app_version: int  # major version, as the exercise's column wants
    app_version_full: str
    sent_at_ms: int  # SQS SentTimestamp, epoch milliseconds
    create_date: str  # UTC date of sent_at, ISO format
    dropped_fields: int = 0  # unknown keys removed from the body
    # The envelope the login came in (stream.common.envelopes) and its id; None if bare.
    envelope_kind: str | None = None
    envelope_id: str | None = None

    def dumps(self) -> bytes:
        """This login as the JSON object that ``logins.masked`` carries.

        The very text ``json.dumps`` of the fields would give, written with
        its own C string encoder: a third of the time, once per login.
        """
        return (
            _MASKED_TEMPLATE
            % (
                _json_text(self.message_id),
                _json_text(self.user_id),
                _json_text(self.device_type),
                _json_text(self.masked_ip),
                _json_text(self.masked_device_id),
                "null" if self.locale is None else _json_text(self.locale),
                self.app_version,
                _json_text(self.app_version_full),
                self.sent_at_ms,
                _json_text(self.create_date),
                self.dropped_fields,
                "null" if self.envelope_kind is None else _json_text(self.envelope_kind),
                "null" if self.envelope_id is None else _json_text(self.envelope_id),
            )
        ).encode()

    @classmethod
    def loads(cls, data: bytes) -> MaskedLogin:
        """Parse a ``logins.masked`` value; ``ValueError`` if it is not one."""
        try:
            fields = json.loads(data)
            return cls(**fields)
        except (TypeError, ValueError) as exc:  # TypeError: missing or unknown keys
            raise ValueError(f"not a masked login: {exc}") from None


MASKED_FIELDS = tuple(MaskedLogin.__dataclass_fields__)
_MASKED_TEMPLATE = (
    '{"message_id": %s, "user_id": %s, "device_type": %s, "masked_ip": %s,'
    ' "masked_device_id": %s, "locale": %s, "app_version": %d, "app_version_full": %s,'
    ' "sent_at_ms": %d, "create_date": %s, "dropped_fields": %d, "envelope_kind": %s,'
    ' "envelope_id": %s}'
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message did not become a row; the body is kept only as a token."""

    message_id: str
    sent_at_ms: int
    rejected_at_ms: int
    reason: str
    body_token: str  # the original body, encrypted under the key ring (field "body")

    def dumps(self) -> bytes:
        """This rejection as the JSON object that ``logins.rejected`` carries."""
        return json.dumps({name: getattr(self, name) for name in REJECTION_FIELDS}).encode()

    @classmethod
    def loads(cls, data: bytes) -> Rejection:
        """Parse a ``logins.rejected`` value; ``ValueError`` if it is not one."""
        try:
            return cls(**json.loads(data))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a rejection: {exc}") from None


REJECTION_FIELDS = tuple(Rejection.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class SeenDevice:
    """A ``seen_devices`` entry: derived from ``user_logins`` rows.

    The table holds each entry as these JSON bytes rather than as an object:
    a worker keeps every device of its partitions in memory, and the bytes
    take a fraction of the room a Faust record instance did.
    """

    first_seen_ms: int
    last_seen_ms: int
    login_count: int

    def dumps(self) -> bytes:
        return b'{"first_seen_ms": %d, "last_seen_ms": %d, "login_count": %d}' % (
            self.first_seen_ms,
            self.last_seen_ms,
            self.login_count,
        )

    @classmethod
    def loads(cls, data: bytes) -> SeenDevice:
        return cls(**json.loads(data))

    def asdict(self) -> dict[str, int]:
        return {
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            "login_count": self.login_count,
        }
