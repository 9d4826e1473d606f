"""The rekey engine: stored AES-SIV tokens re-encrypted under the active key, batch by batch.

After a key rotation, tokens made with an older key still open, but that key
can be retired only once no token uses it. :func:`rekey_table` re-makes those
tokens in committed batches; rows already under the active key are never
touched, so a run can be stopped and started again. Only AES-SIV tokens can be
re-made: HMAC tokens and foreign values are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from stream.core.masking import Masker, MaskingError, key_prefix
from stream.postgres.schema import REJECTED_LOGINS, USER_LOGINS

logger = logging.getLogger(__name__)

REKEY_BATCH = 500
# Only AES-SIV tokens can be re-made; HMAC tokens and foreign values are left alone.
RECOVERABLE_PREFIX = "siv:"
RECOVERABLE_PATTERN = RECOVERABLE_PREFIX + "%"


@dataclass(frozen=True)
class TokenTable:
    """A table holding tokens in *columns*, rows identified by the unique *key*."""

    name: str
    key: str
    columns: tuple[str, ...]


TOKEN_TABLES = (
    TokenTable(USER_LOGINS, "message_id", ("masked_ip", "masked_device_id")),
    TokenTable(REJECTED_LOGINS, "message_id", ("body_token",)),
)


@dataclass
class RekeyResult:
    """Counts for one table, and a label (never a value) for each token that failed."""

    rows: int = 0
    tokens: int = 0
    failures: list[str] = field(default_factory=list)


def usable_tables(
    conn: psycopg.Connection, tables: Sequence[TokenTable]
) -> tuple[list[TokenTable], list[str]]:
    """The tables that exist with all their columns, and what is missing from the others."""
    usable: list[TokenTable] = []
    problems: list[str] = []
    for table in tables:
        missing = missing_columns(conn, table)
        if missing is None:
            problems.append(f"table {table.name} does not exist")
        elif missing:
            problems.append(f"table {table.name} has no column {', '.join(missing)}")
        else:
            usable.append(table)
    return usable, problems


def missing_columns(conn: psycopg.Connection, table: TokenTable) -> list[str] | None:
    """Columns of *table* that do not exist, or None if the table itself does not."""
    if conn.execute("SELECT to_regclass(%s)", (table.name,)).fetchone() == (None,):
        return None
    present = {
        row[0]
        for row in conn.execute(
            "SELECT attname FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            (table.name,),
        )
    }
    return [column for column in (table.key, *table.columns) if column not in present]


def stale_condition(table: TokenTable) -> sql.Composable:
    """SQL true for rows with an AES-SIV token under a non-active key.

    Parameters: ``pattern`` (``siv:%``), ``prefix`` (``siv:ACTIVE:``) and its
    ``length``; ``left()`` rather than LIKE so nothing in the prefix is a wildcard.
    """
    tests = [
        sql.SQL("({col} LIKE %(pattern)s AND left({col}, %(length)s) <> %(prefix)s)").format(
            col=sql.Identifier(column)
        )
        for column in table.columns
    ]
    return sql.SQL(" OR ").join(tests)


def rekey_table(
    conn: psycopg.Connection, table: TokenTable, masker: Masker, batch_size: int
) -> RekeyResult:
    """Re-encrypt stale tokens of *table*, one committed batch at a time.

    Keyset pagination on the unique key: rows that cannot be re-keyed (say, a
    token under a key no longer in the ring) are reported and passed over
    rather than fetched again forever. Rows without a key cannot be addressed
    and are left alone. *conn* must be in autocommit mode, so that each
    batch's transaction really commits.
    """
    if not conn.autocommit:
        raise ValueError("rekey_table needs an autocommit connection (one commit per batch)")
    prefix = key_prefix(masker.mode, masker.active_key_id)
    params: dict[str, Any] = {
        "pattern": RECOVERABLE_PATTERN,
        "prefix": prefix,
        "length": len(prefix),
        "limit": batch_size,
    }
    select = sql.SQL(
        "SELECT {key}, {columns} FROM {table} WHERE {key} > %(after)s AND ({stale}) "
        "ORDER BY {key} LIMIT %(limit)s"
    ).format(
        key=sql.Identifier(table.key),
        columns=sql.SQL(", ").join(map(sql.Identifier, table.columns)),
        table=sql.Identifier(table.name),
        stale=stale_condition(table),
    )
    update = update_statement(table)
    result = RekeyResult()
    after = ""
    while True:
        with conn.transaction():
            rows = conn.execute(select, {**params, "after": after}).fetchall()
            if not rows:
                return result
            changes = [change for row in rows if (change := rekey_row(table, row, masker, result))]
            if changes:
                with conn.cursor() as cursor:
                    cursor.executemany(update, changes)
        result.rows += len(changes)
        after = rows[-1][0]
        logger.info("%s: %d rows re-keyed so far", table.name, result.rows)


def rekey_row(
    table: TokenTable, row: Sequence[Any], masker: Masker, result: RekeyResult
) -> list[Any] | None:
    """Parameters for :func:`update_statement`, or None if nothing in *row* changes."""
    key, old = row[0], list(row[1:])
    new = list(old)
    for index, (column, token) in enumerate(zip(table.columns, old, strict=True)):
        if token is None or not token.startswith(RECOVERABLE_PREFIX):
            continue
        try:
            new[index] = masker.rekey(token)  # unchanged if already under the active key
        except MaskingError as exc:
            result.failures.append(f"{table.name} {table.key}={key} {column}: {exc}")
    changed = sum(a != b for a, b in zip(old, new, strict=True))
    if not changed:
        return None
    result.tokens += changed
    return [*new, key, *old]


def update_statement(table: TokenTable) -> sql.Composed:
    """UPDATE setting every token column, only if the row still holds the tokens read.

    The guard makes a concurrent change win instead of being overwritten.
    """
    columns = [sql.Identifier(column) for column in table.columns]
    return sql.SQL("UPDATE {table} SET {sets} WHERE {key} = %s AND {guards}").format(
        table=sql.Identifier(table.name),
        sets=sql.SQL(", ").join(sql.SQL("{} = %s").format(c) for c in columns),
        key=sql.Identifier(table.key),
        guards=sql.SQL(" AND ").join(
            sql.SQL("{} IS NOT DISTINCT FROM %s").format(c) for c in columns
        ),
    )


def key_counts(conn: psycopg.Connection, table: TokenTable) -> dict[str, int]:
    """How many AES-SIV tokens of *table* each key id still has."""
    union = sql.SQL(" UNION ALL ").join(
        sql.SQL(
            "SELECT split_part({col}, ':', 2) AS key_id FROM {table} WHERE {col} LIKE %(pattern)s"
        ).format(col=sql.Identifier(column), table=sql.Identifier(table.name))
        for column in table.columns
    )
    query = sql.SQL("SELECT key_id, count(*) FROM ({union}) AS t GROUP BY key_id ORDER BY key_id")
    rows = conn.execute(query.format(union=union), {"pattern": RECOVERABLE_PATTERN})
    return {key_id: count for key_id, count in rows}
