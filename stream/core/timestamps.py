"""Epoch-millisecond times that every later step can represent.

A time comes from a Kafka header or a record timestamp, both written by
whoever produced the record. ``datetime`` (hence ``create_date`` and the
rows' ``sent_at``) covers years 1 to 9999, so a time past 9999, or a
negative one (Kafka's "no timestamp" is -1), would raise in the worker
rather than become a row. Times are kept in the range below instead.

Pure functions, no I/O; nothing from the rest of the project.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# 1970-01-01T00:00:00Z: SQS's SentTimestamp is never earlier, so a time
# clamped to it reads as "unknown", not as a plausible date.
MIN_EPOCH_MS = 0
# 9999-12-31T23:59:59.999Z, the last millisecond datetime can hold (tested).
MAX_EPOCH_MS = 253_402_300_799_999


def clamp_epoch_ms(epoch_ms: int) -> int:
    """*epoch_ms* moved into the representable range (a no-op for real times)."""
    return min(max(epoch_ms, MIN_EPOCH_MS), MAX_EPOCH_MS)


def utc_date(epoch_ms: int) -> str:
    """The ISO UTC date of *epoch_ms* (clamped), by arithmetic: never raises.

    ``datetime.fromtimestamp`` would also go through the C library, which on
    some platforms refuses times before 1970.
    """
    return _iso_day(clamp_epoch_ms(epoch_ms) // MS_PER_DAY)


MS_PER_DAY = 86_400_000


@functools.lru_cache(maxsize=1024)
def _iso_day(day: int) -> str:
    """Day *day* since the epoch as ISO text: logins come a few days at a time."""
    return (EPOCH + timedelta(days=day)).date().isoformat()
