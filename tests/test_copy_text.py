"""COPY text as the worker formats it (stream.postgres.copy_text): pure checks.

The round trip through a real PostgreSQL is in tests/test_writer.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from stream.core.timestamps import MAX_EPOCH_MS
from stream.postgres import copy_text

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(st.integers(min_value=-(10**15), max_value=10**16))
def test_timestamps_are_the_utc_time_to_the_millisecond(epoch_ms: int) -> None:
    moment = EPOCH + timedelta(milliseconds=min(max(epoch_ms, 0), MAX_EPOCH_MS))
    expected = f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d}+00"
    assert copy_text.timestamp(epoch_ms) == expected


def test_text_escapes_what_copy_treats_specially_and_nothing_else() -> None:
    assert copy_text.text(None) == "\\N"
    assert copy_text.text("\\N") == "\\\\N"  # the text, not NULL
    assert copy_text.text("a\tb\nc\rd\\e") == "a\\tb\\nc\\rd\\\\e"
    assert copy_text.text("é😀 plain") == "é😀 plain"
    assert copy_text.line(("a", "\\N", "3")) == "a\t\\N\t3\n"
