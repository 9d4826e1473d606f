"""Partitions made ahead and dropped behind, by one worker at a time.

Each worker runs :func:`keep_partitions` at start and then periodically
(stream.worker.partition_upkeep). Under a session advisory lock taken with
``pg_try_advisory_lock``, so one worker does the round while the others
skip it, it makes the partitions of today and of the next few intervals
(a batch then rarely makes one itself) and, with a retention, drops the
partitions of logins and rejections whose whole range is older than it
(never the current one: the SQL function computes today itself). What it
did is logged as table names and dates, never a row's value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

from psycopg import sql

from stream.postgres.connect import Database
from stream.postgres.migration import ensure_current_async
from stream.postgres.partition_ddl import drop_partitions_async
from stream.postgres.partition_keeper import PartitionKeeper
from stream.postgres.partitions import days_ahead
from stream.postgres.schema import Tables

log = logging.getLogger(__name__)

# Intervals made ahead of the current one: a worker that cannot reach the
# database for a while still finds tomorrow's partition there.
INTERVALS_AHEAD = 3
UPKEEP_LOCK_KEY = "maskstream.partitions"
# DDL waits for the batches in flight and blocks new ones meanwhile: give up
# (and try again next round) rather than queue writers behind it for long.
LOCK_TIMEOUT = "5s"


@dataclass
class Upkeep:
    """One round's work: partitions created (or found) and dropped, by name."""

    ran: bool = False  # False: another worker held the lock
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


async def keep_partitions(
    database: Database, tables: Tables, retention_days: int, today: date
) -> Upkeep:
    """One round of upkeep for *tables* (see the module docstring)."""
    upkeep = Upkeep()
    async with await database.connect_async(autocommit=True, connect_timeout=10) as conn:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (UPKEEP_LOCK_KEY,))
        locked = await cursor.fetchone()
        if not (locked and locked[0]):
            return upkeep
        upkeep.ran = True
        # At a first start the tables may not exist yet: made as a writer would.
        await ensure_current_async(conn, tables)
        await conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        for table in (tables.logins, tables.rejections):
            keeper = PartitionKeeper(table, tables.interval)
            await keeper.load(conn)
            if not keeper.partitioned:
                continue
            upkeep.created += await keeper.ensure(
                conn, days_ahead(today, keeper.interval, INTERVALS_AHEAD)
            )
            if retention_days > 0:
                dropped = await drop_partitions_async(conn, table, retention_days)
                for name in dropped:
                    log.info("retention: dropped partition %s of %s", name, table)
                upkeep.dropped += dropped
    return upkeep
