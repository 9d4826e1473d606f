"""Values in PostgreSQL's COPY text format, formatted by the worker itself.

psycopg's ``Copy.write_row`` adapts every value of a row through its
dumpers, and is awaited once per row: about 3.6 µs of CPU a row here. The
rows the worker writes hold a few known kinds of value (text, integers,
ISO dates, epoch-millisecond times), so it formats each row into one line
of COPY text itself and hands psycopg the batch as one block: about 2 µs a
row (``python -m bench cost``).

Pure functions. A value that PostgreSQL cannot take (a NUL, a lone
surrogate, which fails when the block is encoded) fails the COPY as a
whole, and the sink isolates its row as before (stream.postgres.sink).
"""

from __future__ import annotations

import functools

from stream.core.timestamps import MS_PER_DAY, clamp_epoch_ms, utc_date

NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def text(value: str | None) -> str:
    """*value* as a COPY text field: NULL for None, the four special
    characters escaped (rare: checked before translating)."""
    if value is None:
        return NULL
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_ESCAPES)
    return value


def timestamp(epoch_ms: int) -> str:
    """*epoch_ms* (clamped as everywhere, stream.core.timestamps) as a UTC
    ``timestamptz`` literal with milliseconds."""
    seconds, millis = divmod(clamp_epoch_ms(epoch_ms), 1000)
    return f"{_utc_second(seconds)}.{millis:03d}+00"


@functools.lru_cache(maxsize=4096)
def _utc_second(epoch_seconds: int) -> str:
    """``YYYY-MM-DD HH:MM:SS`` of *epoch_seconds*: a batch's logins were sent
    within a few seconds of each other, so each is formatted once."""
    minutes, second = divmod(epoch_seconds % (MS_PER_DAY // 1000), 60)
    hour, minute = divmod(minutes, 60)
    return f"{utc_date(epoch_seconds * 1000)} {hour:02d}:{minute:02d}:{second:02d}"


def line(fields: tuple[str, ...]) -> str:
    """Fields already in COPY text form as one row, newline included."""
    return "\t".join(fields) + "\n"
