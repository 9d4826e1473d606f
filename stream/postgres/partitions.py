"""Time partitions, as pure arithmetic: which range holds a day, what it is called.

Tables maskstream creates on PostgreSQL 11+ are range-partitioned on the
login's time (``create_date`` for ``user_logins``, ``sent_at`` for
``rejected_logins``), one partition per interval (a day by default). A
partition covers ``[low, high)`` and is named after ``low``, so every worker
computes the same name for the same range without asking the database, and
retention can drop whole partitions instead of deleting rows. The I/O (the
SQL functions that create and drop them) is in stream.postgres.partition_ddl.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

# PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1):
# two long table names could then share a partition name.
MAX_IDENTIFIER_BYTES = 63


class Interval(enum.Enum):
    """How much time one partition holds; NONE keeps a plain table."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    NONE = "none"

    @classmethod
    def parse(cls, value: str) -> Interval:
        """The interval *value* names (case-insensitive); ValueError with the choices."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            choices = "|".join(member.value for member in cls)
            raise ValueError(f"partition interval {value!r} is not one of {choices}") from None


@dataclass(frozen=True)
class DayRange:
    """The days ``[low, high)``: what one partition holds. *high* is None for
    the last range of the calendar (past 9999-12-31, where Python's dates end
    and timestamps are clamped to): unbounded, MAXVALUE to PostgreSQL."""

    low: date
    high: date | None

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.low <= day and (self.high is None or day < self.high)

    def overlaps(self, other: DayRange) -> bool:
        return (other.high is None or self.low < other.high) and (
            self.high is None or other.low < self.high
        )


def _plus_days(day: date, days: int) -> date | None:
    """*day* + *days*, or None past the last date Python holds."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return None


def range_of(day: date, interval: Interval) -> DayRange:
    """The interval's range holding *day*: the day itself, its ISO week
    (Monday first), or its calendar month."""
    if interval is Interval.DAY:
        return DayRange(day, _plus_days(day, 1))
    if interval is Interval.WEEK:
        monday = day - timedelta(days=day.weekday())
        return DayRange(monday, _plus_days(monday, 7))
    if interval is Interval.MONTH:
        first = day.replace(day=1)
        last_month = first.year == date.max.year and first.month == 12
        following = (
            None if last_month else date(first.year + first.month // 12, first.month % 12 + 1, 1)
        )
        return DayRange(first, following)
    raise ValueError("a plain table (interval none) has no partitions")


def range_for(day: date, interval: Interval, existing: Iterable[DayRange]) -> DayRange:
    """The range to create for *day*: the interval's, narrowed so that it
    overlaps none of the *existing* partitions (a converted table's one big
    partition, or partitions made under another interval before). *day*
    must not be in any of them."""
    wanted = range_of(day, interval)
    low, high = wanted.low, wanted.high
    for other in existing:
        if day in other:
            raise ValueError(f"{day} already has a partition")
        if other.overlaps(DayRange(low, high)):
            if other.high is not None and other.high <= day:
                low = max(low, other.high)
            else:
                high = other.low if high is None else min(high, other.low)
    return DayRange(low, high)


def partition_name(table: str, low: date) -> str:
    """``<table>_p<yyyymmdd>`` of the range starting at *low*. Raises
    ValueError if PostgreSQL would truncate it (it must stay unique)."""
    name = f"{table}_p{low:%Y%m%d}"
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"partition name {name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes: "
            "use a shorter table name"
        )
    return name


def days_ahead(today: date, interval: Interval, count: int) -> list[date]:
    """The first day of the range holding *today* and of the *count* ranges
    after it: what upkeep makes partitions for ahead of time."""
    days = [today]
    for _ in range(count):
        following = range_of(days[-1], interval).high
        if following is None:
            break
        days.append(following)
    return days


def parse_bound(literal: str) -> date | None:
    """The UTC day of a range bound as PostgreSQL prints it (a date, or a
    timestamptz in the session's time zone); None for MAXVALUE."""
    if literal.upper() == "MAXVALUE":
        return None
    moment = datetime.fromisoformat(literal)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.date()


_BOUNDS = re.compile(r"FOR VALUES FROM \((.+?)\) TO \((.+?)\)$")


def parse_range(bound: str | None) -> DayRange | None:
    """The days of a partition bound expression (``pg_get_expr(relpartbound)``),
    e.g. ``FOR VALUES FROM ('2024-01-01') TO ('2024-01-02')``; None for a
    default partition or anything else this cannot read."""
    match = _BOUNDS.match(bound or "")
    if match is None or match[1].upper() == "MINVALUE":
        return None
    low = parse_bound(match[1].strip("'"))
    if low is None:
        return None
    return DayRange(low, parse_bound(match[2].strip("'")))
