"""The PostgreSQL schema: created when missing, migrated forward, never rewritten.

``user_logins`` keeps the exercise's seven columns and meanings; maskstream
adds columns for idempotence (``message_id``, unique) and fidelity
(``app_version_full``, ``sent_at``). A table that already exists with only the
seven columns, even on PostgreSQL 10, is migrated with ``ADD COLUMN`` (no
default, so no table rewrite) and new indexes; existing rows stay as they are.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

USER_LOGINS = "user_logins"
REJECTED_LOGINS = "rejected_logins"

# Written one statement at a time: PostgreSQL 10 has ADD COLUMN IF NOT EXISTS
# (9.6+) and CREATE INDEX IF NOT EXISTS (9.5+), which is all this needs.
# {logins} and {rejections} are table names, so `replay --into` can rebuild
# into a fresh pair of tables with the very same schema.
SCHEMA_TEMPLATES: tuple[str, ...] = (
    # The exercise's DDL, verbatim in meaning.
    """CREATE TABLE IF NOT EXISTS {logins}(
        user_id          varchar(128),
        device_type      varchar(32),
        masked_ip        varchar(256),
        masked_device_id varchar(256),
        locale           varchar(32),
        app_version      integer,
        create_date      date
    )""",
    "ALTER TABLE {logins} ADD COLUMN IF NOT EXISTS message_id varchar(128)",
    "ALTER TABLE {logins} ADD COLUMN IF NOT EXISTS app_version_full varchar(32)",
    "ALTER TABLE {logins} ADD COLUMN IF NOT EXISTS sent_at timestamptz",
    "ALTER TABLE {logins} ADD COLUMN IF NOT EXISTS ingested_at timestamptz",
    # A default set separately applies to new rows only: no rewrite on PG 10.
    "ALTER TABLE {logins} ALTER COLUMN ingested_at SET DEFAULT now()",
    # Writing the same SQS message twice yields one row (old rows have NULL ids,
    # which a unique index allows any number of).
    "CREATE UNIQUE INDEX IF NOT EXISTS {logins_message_id_key} ON {logins} (message_id)",
    "CREATE INDEX IF NOT EXISTS {logins_device_idx} ON {logins} (masked_device_id)",
    """CREATE TABLE IF NOT EXISTS {rejections}(
        message_id  varchar(128) PRIMARY KEY,
        sent_at     timestamptz,
        rejected_at timestamptz NOT NULL DEFAULT now(),
        reason      text NOT NULL,
        body_token  text
    )""",
)

# Several workers start at once; one migrates while the others wait.
LOCK_STATEMENT = "SELECT pg_advisory_xact_lock(hashtext('maskstream.schema'))"


def schema_statements(
    logins: str = USER_LOGINS, rejections: str = REJECTED_LOGINS
) -> list[sql.Composed]:
    """The DDL for a logins table and its rejections table, safely quoted."""
    names = {
        "logins": sql.Identifier(logins),
        "rejections": sql.Identifier(rejections),
        "logins_message_id_key": sql.Identifier(f"{logins}_message_id_key"),
        "logins_device_idx": sql.Identifier(f"{logins}_masked_device_id_idx"),
    }
    return [sql.SQL(template).format(**names) for template in SCHEMA_TEMPLATES]


def ensure_schema(
    conn: psycopg.Connection, logins: str = USER_LOGINS, rejections: str = REJECTED_LOGINS
) -> None:
    """Create or migrate the tables in one transaction (blocking connection)."""
    with conn.transaction():
        conn.execute(LOCK_STATEMENT)
        for statement in schema_statements(logins, rejections):
            conn.execute(statement)


async def ensure_schema_async(
    conn: psycopg.AsyncConnection, logins: str = USER_LOGINS, rejections: str = REJECTED_LOGINS
) -> None:
    """:func:`ensure_schema` for the workers' asyncio connections."""
    async with conn.transaction():
        await conn.execute(LOCK_STATEMENT)
        for statement in schema_statements(logins, rejections):
            await conn.execute(statement)
