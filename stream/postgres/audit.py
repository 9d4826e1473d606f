"""The audit of PII recovery: one row in ``unmask_audit`` per use of ``maskstream unmask``.

The row is committed before any value is shown (:mod:`stream.ops.unmask`
refuses to print when this fails): PII recovery that cannot be audited does
not happen. The table is created on first use (or by ``maskstream migrate``),
under an advisory lock so two first uses at once do not race on CREATE
TABLE; once it exists, nothing but the INSERT runs, so a role that unmasks
needs no more than insert rights on it (stream.postgres.roles).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from stream.postgres.connect import Database
from stream.postgres.queries import scalar

AUDIT_TABLE = "unmask_audit"

AUDIT_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    os_user     text NOT NULL,
    db_user     text NOT NULL DEFAULT current_user,
    host        text NOT NULL,
    token_count integer NOT NULL,
    fields      text[] NOT NULL,
    key_ids     text[] NOT NULL,
    source      text NOT NULL,
    query       text
)"""

AUDIT_INSERT = """INSERT INTO {table}
    (os_user, host, token_count, fields, key_ids, source, query)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
    RETURNING id"""

# Two first uses at once would race on CREATE TABLE; serialize them.
AUDIT_LOCK = "SELECT pg_advisory_xact_lock(hashtext('maskstream.unmask_audit'))"


@dataclass(frozen=True)
class AuditEntry:
    """One use of ``unmask``: who, from where, how many tokens of which fields."""

    os_user: str
    host: str
    token_count: int
    fields: list[str]
    key_ids: list[str]
    source: str
    query: str | None


def write_audit(database: Database, entry: AuditEntry, table: str = AUDIT_TABLE) -> int:
    """Record *entry* and commit it (creating *table* if need be); return its id.

    Raises :class:`psycopg.Error` when the row cannot be written.
    """
    identifier = sql.Identifier(table)
    with database.connect(autocommit=True) as conn, conn.transaction():
        ensure_audit_table(conn, table)
        row = conn.execute(
            sql.SQL(AUDIT_INSERT).format(table=identifier),
            (
                entry.os_user,
                entry.host,
                entry.token_count,
                entry.fields,
                entry.key_ids,
                entry.source,
                entry.query,
            ),
        ).fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return int(row[0])


def ensure_audit_table(conn: psycopg.Connection, table: str = AUDIT_TABLE) -> bool:
    """Create *table* unless it exists (checked first: CREATE TABLE IF NOT EXISTS
    would need CREATE on the schema even then); whether it was created."""
    if scalar(conn, "SELECT to_regclass(quote_ident(%s)) IS NOT NULL", (table,)):
        return False
    conn.execute(AUDIT_LOCK)
    conn.execute(sql.SQL(AUDIT_DDL).format(table=sql.Identifier(table)))
    return True
