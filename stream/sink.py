"""Write batches of rows to PostgreSQL: idempotent, never skipping a batch.

Each batch is COPYed into a temporary table and moved with
``INSERT ... ON CONFLICT (message_id) DO NOTHING`` in one transaction, so a
redelivered or replayed message adds no row. Failures are split in two kinds:

* the database refuses particular rows (bad encoding, a value too long):
  the batch is bisected inside savepoints until each refused row stands
  alone; it is reported with the database's reason and the rest is written;
* anything else (connection lost, server restarting): the whole batch is
  retried with capped exponential backoff until it commits (and so is any
  other work the caller runs through :meth:`PostgresSink.retrying`). The caller's
  Kafka offsets do not advance meanwhile, so nothing is lost.

Reasons carry only PostgreSQL's primary message, never the DETAIL or
CONTEXT lines, which can quote the row's values.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from stream.retry import Backoff
from stream.schema import ensure_schema_async

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
T = TypeVar("T")

# Errors about particular rows' contents: isolate the row instead of retrying.
ROW_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError)


@dataclass(frozen=True)
class TableSpec:
    """Where a batch goes: table, column order of the rows, the idempotence key."""

    table: str
    columns: tuple[str, ...]
    conflict_column: str = "message_id"

    @property
    def staging(self) -> str:
        return f"incoming_{self.table}"


@dataclass
class BatchOutcome:
    """What happened to one batch: rows new to the table, and rows refused."""

    inserted: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)  # (row index, reason)


def refusal_reason(exc: BaseException) -> str:
    """PostgreSQL's one-line reason for refusing a row, free of row values."""
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    if not primary:
        primary = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"database refused row: {primary}"


class PostgresSink:
    """One connection writing batches to one table, reconnecting as needed."""

    def __init__(
        self,
        database_url: str,
        spec: TableSpec,
        schema_tables: tuple[str, str],
        backoff: Backoff | None = None,
    ) -> None:
        self.database_url = database_url
        self.spec = spec
        # (logins, rejections): the pair of tables ensured on every new connection.
        self.schema_tables = schema_tables
        self.backoff = backoff or Backoff()
        self._conn: psycopg.AsyncConnection | None = None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def connection(self) -> psycopg.AsyncConnection:
        """The open connection, created (with schema check) on first use."""
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(self.database_url, connect_timeout=5)
            try:
                await ensure_schema_async(conn, *self.schema_tables)
                await conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS)"
                        " ON COMMIT DELETE ROWS"
                    ).format(sql.Identifier(self.spec.staging), sql.Identifier(self.spec.table))
                )
                await conn.commit()
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def write(self, rows: Sequence[Row]) -> BatchOutcome:
        """Write *rows* exactly once each; return only when the batch has committed."""
        return await self.retrying(
            functools.partial(self._write_batch, rows), f"writing a batch of {len(rows)}"
        )

    async def _write_batch(
        self, rows: Sequence[Row], conn: psycopg.AsyncConnection
    ) -> BatchOutcome:
        async with conn.transaction():
            return await self._write_isolating(conn, rows, 0)

    async def retrying(
        self, operation: Callable[[psycopg.AsyncConnection], Awaitable[T]], what: str
    ) -> T:
        """Run *operation* on this sink's connection until it succeeds.

        Any error but cancellation counts as transient (connection lost, server
        restarting): reconnect, back off, run it again. Whatever the caller
        does after this returns (acknowledging Kafka offsets) waits meanwhile.
        """
        attempt = 0
        while True:
            try:
                result = await operation(await self.connection())
                if attempt:
                    log.info("%s: %s succeeded after %d retries", self.spec.table, what, attempt)
                return result
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                delay = self.backoff.delay(attempt)
                log.warning(
                    "%s: %s failed (%s: %s); retry %d in %.1f s",
                    self.spec.table,
                    what,
                    type(exc).__name__,
                    refusal_reason(exc).removeprefix("database refused row: "),
                    attempt,
                    delay,
                )
                await self.close()
                await asyncio.sleep(delay)

    async def _write_isolating(
        self, conn: psycopg.AsyncConnection, rows: Sequence[Row], offset: int
    ) -> BatchOutcome:
        """Insert *rows*; on a row error, bisect within savepoints to find the culprits."""
        try:
            async with conn.transaction():  # a savepoint inside write()'s transaction
                inserted = await self._insert(conn, rows)
            return BatchOutcome(inserted=inserted)
        except ROW_ERRORS as exc:
            if len(rows) == 1:
                return BatchOutcome(refused=[(offset, refusal_reason(exc))])
        middle = len(rows) // 2
        left = await self._write_isolating(conn, rows[:middle], offset)
        right = await self._write_isolating(conn, rows[middle:], offset + middle)
        return BatchOutcome(
            inserted=left.inserted + right.inserted, refused=left.refused + right.refused
        )

    async def _insert(self, conn: psycopg.AsyncConnection, rows: Sequence[Row]) -> int:
        spec = self.spec
        columns = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
        staging = sql.Identifier(spec.staging)
        async with conn.cursor() as cur:
            await cur.execute(sql.SQL("TRUNCATE {}").format(staging))
            copy = sql.SQL("COPY {} ({}) FROM STDIN").format(staging, columns)
            async with cur.copy(copy) as copier:
                for row in rows:
                    await copier.write_row(row)
            await cur.execute(
                sql.SQL(
                    "INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging}"
                    " ON CONFLICT ({key}) DO NOTHING"
                ).format(
                    table=sql.Identifier(spec.table),
                    columns=columns,
                    staging=staging,
                    key=sql.Identifier(spec.conflict_column),
                )
            )
            return cur.rowcount
