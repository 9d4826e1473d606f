"""Write batches to PostgreSQL: one transaction a batch, never skipping one.

A batch's rows are COPYed into temporary tables and moved into the target
tables with ``INSERT ... ON CONFLICT DO NOTHING``, so a redelivered or
replayed message adds no row. No conflict target: the unique key is
``message_id`` in a plain table and ``message_id`` with the partition key in
a partitioned one (stream.postgres.schema), and either way a row that
meets it is skipped. Failures are split in two kinds:

* the database refuses particular rows (bad encoding, a NUL, a value too
  long): the rows are bisected inside savepoints until each refused row
  stands alone; it is reported with the database's reason and the rest is
  written in the same transaction;
* anything else (connection lost, server restarting, a read-only standby,
  a revoked grant): the whole transaction is retried with capped exponential
  backoff until it commits. The caller's Kafka offsets do not advance
  meanwhile, so nothing is lost. An error that is neither about the server's
  state (:func:`is_server_error`) nor a known row error, and that repeats
  identically, is the batch's own doing: the next attempt isolates rows on
  any such error, so one poison row cannot hold a partition forever.

Reasons carry only PostgreSQL's primary message, never the DETAIL or
CONTEXT lines, which can quote the row's values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import psycopg
from psycopg import sql

from stream.common.retry import Backoff
from stream.postgres.connect import Database

log = logging.getLogger(__name__)

# One row in COPY text format, newline included (stream.postgres.copy_text).
Row = str
T = TypeVar("T")
R = TypeVar("R")

# Errors about particular rows' contents: isolate the row instead of retrying.
# UnicodeError: psycopg cannot encode a value (a lone surrogate) for the server.
# ProgramLimitExceeded (SQLSTATE class 54, a value too large for an index, say)
# is an OperationalError to psycopg, but it is the row's fault.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    psycopg.errors.ProgramLimitExceeded,
    UnicodeError,
)
# The server or the connection is unavailable: never the rows' fault.
AVAILABILITY_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OSError,
    TimeoutError,
)
# SQLSTATE classes that speak of the database's state or its schema, never of
# a row: 08 connection, 25 a read-only transaction (a primary turned standby
# in a failover), 28 and 42 rights and schema (a revoked grant, a dropped
# table), 3D/3F no such database or schema, 40 rollbacks, 53 resources, 55
# object state, 57 operator action, 58 system errors, XX internal. However
# often they repeat, they are retried and the batch waits: isolating would
# turn every valid login of the batch into a rejection.
SERVER_STATE_CLASSES = frozenset(
    {"08", "25", "28", "3D", "3F", "40", "42", "53", "55", "57", "58", "XX"}
)


# PostgreSQL's words (check_violation, 23514) for a row whose time has no
# partition: the partition is missing (dropped meanwhile), not the row wrong.
NO_PARTITION_PREFIX = "no partition of relation"


def is_missing_partition(exc: BaseException) -> bool:
    """The insert found no partition for a row's time: server state, retried
    once the partition is made (stream.postgres.partition_keeper)."""
    primary = getattr(getattr(exc, "diag", None), "message_primary", None) or ""
    return isinstance(exc, psycopg.errors.CheckViolation) and primary.startswith(
        NO_PARTITION_PREFIX
    )


def is_row_error(exc: BaseException) -> bool:
    """The error names a row's contents: that row is refused, the rest written."""
    return isinstance(exc, ROW_ERRORS) and not is_missing_partition(exc)


def is_server_error(exc: BaseException) -> bool:
    """The database or the connection is the problem, not any row: retry."""
    if is_row_error(exc):
        return False
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return (
        isinstance(exc, AVAILABILITY_ERRORS)
        or sqlstate[:2] in SERVER_STATE_CLASSES
        or is_missing_partition(exc)
    )


# An unknown error seen this many times in a row, identically, is not transient.
REPEATS_BEFORE_ISOLATING = 3


@dataclass(frozen=True)
class TableSpec:
    """Where rows go: table, column order of the rows, and the column rows are
    inserted in the order of (concurrent writers lock in the same order)."""

    table: str
    columns: tuple[str, ...]
    order_column: str = "message_id"

    @property
    def staging(self) -> str:
        return f"incoming_{self.table}"


@dataclass
class Isolated(Generic[R]):
    """What inserting some rows gave: one result per successful insert, and the
    rows refused on their own (index into the rows, reason)."""

    results: list[R] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)


def refusal_reason(exc: BaseException) -> str:
    """PostgreSQL's one-line reason for refusing a row, free of row values."""
    if isinstance(exc, UnicodeError):
        return "database refused row: a value cannot be encoded as UTF-8"
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    if not primary:
        primary = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"database refused row: {primary}"


def error_signature(exc: BaseException) -> str:
    """Identifies an error across retries, to tell a repeating one from a transient one."""
    return f"{type(exc).__name__}: {refusal_reason(exc)}"


class PostgresSink:
    """One connection, reconnecting as needed, that runs transactions until they commit."""

    def __init__(
        self,
        database: Database,
        prepare: Callable[[psycopg.AsyncConnection], Awaitable[None]],
        name: str,
        backoff: Backoff | None = None,
    ) -> None:
        self.database = database
        # Run on every new connection before first use (schema, staging tables).
        self.prepare = prepare
        self.name = name
        self.backoff = backoff or Backoff()
        self._conn: psycopg.AsyncConnection | None = None
        # For readiness: since when (monotonic) an operation keeps failing and
        # why (the error's type), and when one last succeeded.
        self.failing_since: float | None = None
        self.failure: str = ""
        self.succeeded_at: float | None = None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def connection(self) -> psycopg.AsyncConnection:
        """The open connection, created (and prepared) on first use."""
        if self._conn is None or self._conn.closed:
            # UTF8 whatever the database's encoding or the URL say: the rows are
            # COPY text encoded as UTF-8 (copy_text), and the server converts them to
            # its own encoding, refusing, row by row, a character it has no room for.
            # A new password each time (an IAM token expires): stream.postgres.connect.
            conn = await self.database.connect_async(connect_timeout=5, client_encoding="UTF8")
            try:
                await self.prepare(conn)
                await conn.commit()
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def retrying(
        self, operation: Callable[[psycopg.AsyncConnection, bool], Awaitable[T]], what: str
    ) -> T:
        """Run *operation(conn, isolate_any)* on this sink's connection until it succeeds.

        Errors are transient (reconnect, back off, run it again) unless the
        same unknown error repeats: then *isolate_any* is True on the next
        attempt, telling the operation to treat any error as a row error.
        Whatever the caller does after this returns (acknowledging Kafka
        offsets) waits meanwhile.
        """
        attempt, repeats, last = 0, 0, ""
        while True:
            isolate_any = repeats >= REPEATS_BEFORE_ISOLATING
            try:
                result = await operation(await self.connection(), isolate_any)
                self.failing_since, self.succeeded_at = None, time.monotonic()
                if attempt:
                    log.info("%s: %s succeeded after %d retries", self.name, what, attempt)
                return result
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                signature = error_signature(exc)
                unknown = not is_server_error(exc)
                repeats = repeats + 1 if unknown and signature == last else int(unknown)
                last = signature
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                self.failure = type(exc).__name__
                delay = self.backoff.delay(attempt)
                log.warning(
                    "%s: %s failed (%s: %s); retry %d in %.1f s",
                    self.name,
                    what,
                    type(exc).__name__,
                    refusal_reason(exc).removeprefix("database refused row: "),
                    attempt,
                    delay,
                )
                await self.close()
                await asyncio.sleep(delay)


async def insert_isolating(
    conn: psycopg.AsyncConnection,
    rows: Sequence[Row],
    insert: Callable[[psycopg.AsyncConnection, Sequence[Row]], Awaitable[R]],
    isolate_any: bool = False,
    offset: int = 0,
) -> Isolated[R]:
    """``insert(conn, rows)`` inside a savepoint; on a row error, bisect within
    savepoints until each refused row stands alone. Must run in a transaction."""
    if not rows:
        return Isolated()
    try:
        async with conn.transaction():  # a savepoint inside the caller's transaction
            return Isolated(results=[await insert(conn, rows)])
    except Exception as exc:
        if is_server_error(exc) or not (isolate_any or is_row_error(exc)):
            raise
        if len(rows) == 1:
            return Isolated(refused=[(offset, refusal_reason(exc))])
    middle = len(rows) // 2
    left = await insert_isolating(conn, rows[:middle], insert, isolate_any, offset)
    right = await insert_isolating(conn, rows[middle:], insert, isolate_any, offset + middle)
    return Isolated(results=left.results + right.results, refused=left.refused + right.refused)


async def create_staging(conn: psycopg.AsyncConnection, spec: TableSpec) -> None:
    """A session-private table shaped like *spec*'s, emptied at every commit."""
    await conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ).format(sql.Identifier(spec.staging), sql.Identifier(spec.table))
    )


async def copy_to_staging(cur: psycopg.AsyncCursor, spec: TableSpec, rows: Sequence[Row]) -> None:
    """Replace the staging table's contents with *rows* (COPY: the cheapest way in),
    sent as one block encoded as UTF-8 (the sink's connections speak UTF8 whatever the
    database's encoding). A value UTF-8 cannot encode, or the database's encoding
    cannot hold, fails it as a row error."""
    staging = sql.Identifier(spec.staging)
    columns = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
    block = "".join(rows).encode()
    await cur.execute(sql.SQL("TRUNCATE {}").format(staging))
    async with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(staging, columns)) as copier:
        await copier.write(block)


async def insert_new(conn: psycopg.AsyncConnection, spec: TableSpec, rows: Sequence[Row]) -> int:
    """Insert the rows whose key is not in the table yet; how many were new."""
    columns = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
    async with conn.cursor() as cur:
        await copy_to_staging(cur, spec, rows)
        await cur.execute(
            sql.SQL(
                "INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging}"
                " ORDER BY {key} ON CONFLICT DO NOTHING"
            ).format(
                table=sql.Identifier(spec.table),
                columns=columns,
                staging=sql.Identifier(spec.staging),
                key=sql.Identifier(spec.order_column),
            )
        )
        return cur.rowcount
