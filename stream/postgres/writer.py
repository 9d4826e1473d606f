"""Write one batch to PostgreSQL in one transaction: rows, rejections, device state.

Everything a batch changes in the database commits together or not at all:
the new ``user_logins`` rows, the ``seen_devices`` state they add to, and the
``rejected_logins`` rows. A crash before the commit leaves nothing; a crash
after it is absorbed by the redelivery, which inserts nothing new and adds
nothing.

The writer takes the batch's outcomes (stream.core.batch) and returns those
whose row the database refused; the core turns them into rejections, which
:meth:`BatchWriter.store_rejections` then stores in a transaction of their
own. That second transaction happens only when the database refused a row
(a NUL, an unencodable value: the core rejects nearly all such input
before), and it is safe: the Kafka offsets are acknowledged only after it,
so a crash in between redelivers the batch, whose rows insert nothing
again and whose refused rows are refused, and stored, again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial

import psycopg

from stream.core.batch import Outcome, failure_reason
from stream.core.records import MaskedLogin, Rejection
from stream.core.timestamps import clamp_epoch_ms
from stream.postgres.connect import Database
from stream.postgres.migration import ensure_current_async
from stream.postgres.partition_keeper import PartitionKeeper
from stream.postgres.rows import (
    DeviceState,
    insert_logins,
    login_row,
    logins_spec,
    rejection_row,
    rejections_spec,
    row_writers,
)
from stream.postgres.schema import LOGINS_PARTITION_KEY, REJECTIONS_PARTITION_KEY, Tables
from stream.postgres.sink import PostgresSink, Row, create_staging, insert_isolating, insert_new

log = logging.getLogger(__name__)


#: A record as its row remembers it: (message id, raw position).
RecordId = tuple[str, str]


@dataclass
class Written:
    """What one committed batch changed."""

    devices: dict[str, DeviceState]  # every device of the batch, as it now stands
    refused: list[tuple[Outcome, str]]  # logins whose row the database refused, and why
    new_rows: int  # rows not present before (the rest were redeliveries)
    # The records of the batch whose row (login or rejection) they wrote
    # themselves, now or when the batch was processed before; None when every
    # record of the batch inserted its row now (nothing else to ask). The
    # others are other copies of an SQS message some other record wrote.
    writers: set[RecordId] | None = None

    def wrote(self, outcome: Outcome) -> bool:
        """Did *outcome*'s own record write its row (so it may be published)?"""
        return self.writers is None or (outcome.raw.message_id, outcome.raw.position) in (
            self.writers
        )


def latest_states(results: Sequence[list[DeviceState]]) -> dict[str, DeviceState]:
    """Merge the states returned by successive inserts of one transaction:
    a later insert saw the earlier ones, so its absolute values win, while
    the new-row counts add up. (Several inserts only when rows were refused.)"""
    if len(results) == 1:
        return {state.masked_device_id: state for state in results[0]}
    merged: dict[str, DeviceState] = {}
    for states in results:
        for state in states:
            before = merged.get(state.masked_device_id)
            added = state.new_logins + (before.new_logins if before else 0)
            merged[state.masked_device_id] = DeviceState(state.masked_device_id, state.entry, added)
    return merged


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def sent_at(rejection: Rejection) -> datetime:
    """*rejection*'s sent_at exactly as its row stores it (clamped milliseconds;
    no float on the way)."""
    return EPOCH + timedelta(milliseconds=clamp_epoch_ms(rejection.sent_at_ms))


def login_day(outcome: Outcome) -> date:
    """The create_date of *outcome*'s login (there is one)."""
    assert outcome.login is not None
    return date.fromisoformat(outcome.login.create_date)


def login_rows(
    batch: Sequence[Outcome],
) -> tuple[list[Row], list[Outcome], list[tuple[Outcome, str]]]:
    """The rows of *batch*'s logins, the outcome of each row, and the logins
    no row could be built for (refused before the database saw them)."""
    rows: list[Row] = []
    of_rows: list[Outcome] = []
    unbuildable: list[tuple[Outcome, str]] = []
    for outcome in batch:
        login: MaskedLogin | None = outcome.login
        if login is None:
            continue
        try:
            rows.append(login_row(login, outcome.raw.position))
        except Exception as exc:  # one login's failure is its own
            unbuildable.append((outcome, failure_reason(exc)))
            continue
        of_rows.append(outcome)
    return rows, of_rows, unbuildable


class BatchWriter:
    """The worker's one writer of a pipeline's three tables."""

    def __init__(self, database: Database, tables: Tables) -> None:
        self.tables = tables
        self.sink = PostgresSink(database, self._prepare, tables.logins)
        self.logins_partitions = PartitionKeeper(tables.logins, tables.interval)
        self.rejections_partitions = PartitionKeeper(tables.rejections, tables.interval)

    async def close(self) -> None:
        await self.sink.close()

    async def _prepare(self, conn: psycopg.AsyncConnection) -> None:
        await ensure_current_async(conn, self.tables)
        await create_staging(conn, logins_spec(self.tables.logins))
        await create_staging(conn, rejections_spec(self.tables.rejections))
        await self.logins_partitions.load(conn)
        await self.rejections_partitions.load(conn)

    async def _ensure_partitions(
        self,
        conn: psycopg.AsyncConnection,
        logins: Sequence[Outcome],
        rejections: Sequence[tuple[Rejection, str]],
    ) -> None:
        """The partitions of the batch's days, made before its transaction."""
        await self.logins_partitions.ensure(conn, map(login_day, logins))
        await self.rejections_partitions.ensure(conn, (sent_at(r).date() for r, _ in rejections))

    async def write(self, batch: Sequence[Outcome]) -> Written:
        """Commit *batch*'s logins and rejections; return only once they are
        committed, with the logins whose row the database refused."""
        rows, of_rows, unbuildable = login_rows(batch)
        rejections = [(o.rejection, o.raw.position) for o in batch if o.rejection is not None]
        what = f"writing a batch of {len(rows)} rows and {len(rejections)} rejections"
        written = await self.sink.retrying(
            partial(self._transaction, rows, of_rows, rejections), what
        )
        written.refused[:0] = unbuildable
        return written

    async def store_rejections(self, rejections: Sequence[tuple[Rejection, str]]) -> None:
        """Commit *rejections* (those of refused rows, each with its raw
        position) in a transaction of their own."""
        what = f"storing {len(rejections)} rejections of refused rows"
        await self.sink.retrying(partial(self._rejections_transaction, rejections), what)

    async def _transaction(
        self,
        rows: Sequence[Row],
        of_rows: Sequence[Outcome],
        rejections: Sequence[tuple[Rejection, str]],
        conn: psycopg.AsyncConnection,
        isolate_any: bool,
    ) -> Written:
        await self._ensure_partitions(conn, of_rows, rejections)
        async with conn.transaction():
            logins = await insert_isolating(conn, rows, self._insert_logins, isolate_any)
            new_rejections = await self._insert_rejections(conn, rejections, isolate_any)
            devices = latest_states(logins.results)
            new_rows = sum(state.new_logins for state in devices.values())
            writers = None
            if new_rows < len(rows) - len(logins.refused) or new_rejections < len(rejections):
                # Some rows were there before: ask who wrote them.
                writers = await self._writers(conn, of_rows, rejections)
        return Written(
            devices=devices,
            refused=[(of_rows[index], reason) for index, reason in logins.refused],
            new_rows=new_rows,
            writers=writers,
        )

    async def _writers(
        self,
        conn: psycopg.AsyncConnection,
        logins: Sequence[Outcome],
        rejections: Sequence[tuple[Rejection, str]],
    ) -> set[RecordId]:
        """The (message id, raw position) that each row of *logins* and
        *rejections* records: the record that wrote it."""
        found: set[RecordId] = set()
        if logins:
            ids = [o.raw.message_id for o in logins]
            days = [login_day(o) for o in logins]
            found.update(
                await row_writers(conn, self.tables.logins, ids, LOGINS_PARTITION_KEY, days)
            )
        if rejections:
            table, ids = self.tables.rejections, [r.message_id for r, _ in rejections]
            times = [sent_at(r) for r, _ in rejections]
            found.update(await row_writers(conn, table, ids, REJECTIONS_PARTITION_KEY, times))
        return found

    async def _rejections_transaction(
        self,
        rejections: Sequence[tuple[Rejection, str]],
        conn: psycopg.AsyncConnection,
        isolate_any: bool,
    ) -> None:
        await self._ensure_partitions(conn, (), rejections)
        async with conn.transaction():
            await self._insert_rejections(conn, rejections, isolate_any)

    async def _insert_rejections(
        self,
        conn: psycopg.AsyncConnection,
        rejections: Sequence[tuple[Rejection, str]],
        isolate_any: bool,
    ) -> int:
        """Insert the rejections not yet present; how many that was."""
        rows = [rejection_row(r, position) for r, position in rejections]
        outcome = await insert_isolating(conn, rows, self._insert_rejection_rows, isolate_any)
        for index, reason in outcome.refused:
            # Rejections hold only ids, reasons and tokens; if one is refused
            # all the same, its message id says which (never the body).
            log.error(
                "rejection of message %r not stored: %s", rejections[index][0].message_id, reason
            )
        return sum(outcome.results) + len(outcome.refused)

    async def _insert_logins(
        self, conn: psycopg.AsyncConnection, rows: Sequence[Row]
    ) -> list[DeviceState]:
        return await insert_logins(conn, self.tables, rows)

    async def _insert_rejection_rows(
        self, conn: psycopg.AsyncConnection, rows: Sequence[Row]
    ) -> int:
        return await insert_new(conn, rejections_spec(self.tables.rejections), rows)
