"""Write one batch to PostgreSQL in one transaction: rows, rejections, device state.

Everything a batch changes in the database commits together or not at all:
the new ``user_logins`` rows, the ``seen_devices`` state they add to, and the
``rejected_logins`` rows, including a rejection for each row the database
refused. A crash before the commit leaves nothing; a crash after it is
absorbed by the redelivery, which inserts nothing new and adds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import psycopg

from stream.core.records import Rejection
from stream.postgres.rows import (
    DeviceState,
    insert_logins,
    logins_spec,
    rejection_row,
    rejections_spec,
)
from stream.postgres.schema import Tables, ensure_schema_async
from stream.postgres.sink import PostgresSink, Row, create_staging, insert_isolating, insert_new

log = logging.getLogger(__name__)

# Builds the rejection of login row *index*, refused by the database for *reason*.
Refusal = Callable[[int, str], Rejection]


@dataclass
class Written:
    """What one committed batch changed."""

    devices: dict[str, DeviceState]  # every device of the batch, as it now stands
    refused: list[tuple[int, str]]  # login rows the database refused (index, reason)
    rejections: list[Rejection]  # the batch's rejections, refused rows' included
    new_rows: int  # rows not present before (the rest were redeliveries)


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


class BatchWriter:
    """The worker's one writer of a pipeline's three tables."""

    def __init__(self, database_url: str, tables: Tables) -> None:
        self.tables = tables
        self.sink = PostgresSink(database_url, self._prepare, tables.logins)

    async def close(self) -> None:
        await self.sink.close()

    async def _prepare(self, conn: psycopg.AsyncConnection) -> None:
        await ensure_schema_async(conn, self.tables)
        await create_staging(conn, logins_spec(self.tables.logins))
        await create_staging(conn, rejections_spec(self.tables.rejections))

    async def write(
        self, rows: Sequence[Row], rejections: Sequence[Rejection], refusal: Refusal
    ) -> Written:
        """Commit *rows* and *rejections*; return only once they are committed."""
        what = f"writing a batch of {len(rows)} rows and {len(rejections)} rejections"
        return await self.sink.retrying(partial(self._transaction, rows, rejections, refusal), what)

    async def _transaction(
        self,
        rows: Sequence[Row],
        rejections: Sequence[Rejection],
        refusal: Refusal,
        conn: psycopg.AsyncConnection,
        isolate_any: bool,
    ) -> Written:
        async with conn.transaction():
            logins = await insert_isolating(conn, rows, self._insert_logins, isolate_any)
            stored = [*rejections, *(refusal(index, reason) for index, reason in logins.refused)]
            outcome = await insert_isolating(
                conn, [rejection_row(r) for r in stored], self._insert_rejections, isolate_any
            )
        for index, reason in outcome.refused:
            # Rejections hold only ids, reasons and tokens; if one is refused
            # all the same, its message id says which (never the body).
            log.error("rejection of message %r not stored: %s", stored[index].message_id, reason)
        devices = latest_states(logins.results)
        return Written(
            devices=devices,
            refused=logins.refused,
            rejections=stored,
            new_rows=sum(state.new_logins for state in devices.values()),
        )

    async def _insert_logins(
        self, conn: psycopg.AsyncConnection, rows: Sequence[Row]
    ) -> list[DeviceState]:
        return await insert_logins(conn, self.tables, rows)

    async def _insert_rejections(self, conn: psycopg.AsyncConnection, rows: Sequence[Row]) -> int:
        return await insert_new(conn, rejections_spec(self.tables.rejections), rows)
