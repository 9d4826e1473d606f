"""A batch's partitions made before its transaction, at no cost once they exist.

A login for a day without a partition must not fail, and creating a
partition (``CREATE TABLE ... PARTITION OF``) takes a strong lock on the
parent: inside a batch's transaction, two workers could each hold rows of
the parent and wait for the other's lock. So a :class:`PartitionKeeper`
creates the missing partitions of a batch's days first, each in a short
transaction of its own, through the SECURITY DEFINER function
(stream.postgres.partition_ddl), and remembers the ranges it knows: the
normal path asks the database nothing. What it knows is read again with
every new connection, which the sink opens after any error: a partition
dropped meanwhile (``no partition of relation``, a server-state error) is
then made again on the retry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date

import psycopg

from stream.postgres.partition_ddl import (
    create_partition_async,
    is_partitioned_async,
    list_partitions_async,
)
from stream.postgres.partitions import DayRange, Interval, range_for

log = logging.getLogger(__name__)


class PartitionKeeper:
    """The partitions of one table, as far as this writer knows them."""

    def __init__(self, table: str, interval: Interval) -> None:
        self.table = table
        # A table partitioned already, with the setting turned to none since:
        # it still needs a partition for each new day.
        self.interval = Interval.DAY if interval is Interval.NONE else interval
        self.partitioned = False
        self.known: list[DayRange] = []

    async def load(self, conn: psycopg.AsyncConnection) -> None:
        """Read the table's layout and partitions (on each new connection)."""
        self.partitioned = await is_partitioned_async(conn, self.table)
        partitions = await list_partitions_async(conn, self.table) if self.partitioned else []
        self.known = [p.days for p in partitions if p.days is not None]

    def missing(self, days: Iterable[date]) -> list[DayRange]:
        """The ranges to create so that every one of *days* has a partition."""
        if not self.partitioned:
            return []
        wanted: list[DayRange] = []
        for day in sorted(set(days)):
            if not any(day in known for known in (*self.known, *wanted)):
                wanted.append(range_for(day, self.interval, [*self.known, *wanted]))
        return wanted

    async def ensure(self, conn: psycopg.AsyncConnection, days: Iterable[date]) -> list[str]:
        """Create the partitions *days* lack, one short transaction each, on an
        idle *conn*; the names created. Raises PartitionUnavailable (retried)."""
        created = []
        for days_range in self.missing(days):
            created.append(await create_partition_async(conn, self.table, days_range))
            self.known.append(days_range)
            log.info("partition %s of %s ready (from %s)", created[-1], self.table, days_range.low)
        return created
