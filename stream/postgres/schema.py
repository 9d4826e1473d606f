"""The PostgreSQL schema: created when missing, migrated forward, never rewritten.

``user_logins`` keeps the exercise's seven columns and meanings; maskstream
adds columns for idempotence (``message_id``, unique) and fidelity
(``app_version_full``, ``sent_at``). A table that already exists with only the
seven columns, even on PostgreSQL 10, is migrated with ``ADD COLUMN`` (no
default, so no table rewrite) and new indexes; existing rows stay as they are.

``seen_devices`` holds each device's state, kept by the workers in the same
transaction as the device's rows. When it is created next to a
``user_logins`` that already holds rows (an existing deployment), it is
backfilled from them once, under the schema lock, so its counts are exact
from the first batch on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

import psycopg
from psycopg import sql

from stream.common.settings import Settings
from stream.postgres.partition_ddl import CREATE_PARTITION, DROP_PARTITIONS, FUNCTION_TEMPLATES
from stream.postgres.partitions import Interval
from stream.postgres.queries import scalar, scalar_async

log = logging.getLogger(__name__)

USER_LOGINS = "user_logins"
REJECTED_LOGINS = "rejected_logins"
SEEN_DEVICES = "seen_devices"


@dataclass(frozen=True)
class Tables:
    """The three tables one pipeline writes (``replay --into`` uses fresh ones),
    and how long a partition of the two growing ones is when maskstream
    creates them (MASKSTREAM_PARTITION_INTERVAL)."""

    logins: str = USER_LOGINS
    rejections: str = REJECTED_LOGINS
    devices: str = SEEN_DEVICES
    interval: Interval = Interval.DAY


# The partition key of each growing table: the login's time.
LOGINS_PARTITION_KEY = "create_date"
REJECTIONS_PARTITION_KEY = "sent_at"
# Unique indexes on partitioned tables need PostgreSQL 11.
PARTITIONED_UNIQUE_SINCE = 110000


@dataclass(frozen=True)
class Layout:
    """Which of the two growing tables are range-partitioned by time. A new
    partitioned user_logins has NOT NULL message_id and create_date; one
    that takes a converted table's rows (maskstream migrate --partition)
    does not, as old rows have no message id."""

    logins_partitioned: bool = False
    rejections_partitioned: bool = False
    not_null_keys: bool = True


def choose_layout(
    relkinds: Mapping[str, str | None], server_version: int, tables: Tables
) -> tuple[Layout, list[str]]:
    """The layout of *tables* given what exists (*relkinds*: table -> 'p' for
    partitioned, another kind for plain, None when missing), and why a table
    maskstream would partition stays plain. A table that exists keeps its
    layout: converting one is ``maskstream migrate --partition``'s, never
    implicit."""
    reasons: list[str] = []

    def partitioned(table: str) -> bool:
        kind = relkinds.get(table)
        if kind is not None:
            if kind != "p" and tables.interval is not Interval.NONE:
                reasons.append(
                    f"{table} exists as a plain table and stays plain; "
                    "`maskstream migrate --partition` converts it"
                )
            return kind == "p"
        if tables.interval is Interval.NONE:
            return False
        if server_version < PARTITIONED_UNIQUE_SINCE:
            reasons.append(
                f"{table} is created plain: PostgreSQL {server_version // 10000} cannot have "
                "the unique key idempotence needs on a partitioned table (11 can)"
            )
            return False
        return True

    return Layout(partitioned(tables.logins), partitioned(tables.rejections)), reasons


def layout_fragments(layout: Layout) -> dict[str, sql.Composable]:
    """The SQL the templates' layout placeholders stand for."""
    logins, rejections = layout.logins_partitioned, layout.rejections_partitioned
    by_range = " PARTITION BY RANGE ({})"
    return {
        "logins_partitioning": sql.SQL(by_range.format(LOGINS_PARTITION_KEY) if logins else ""),
        "logins_not_null": sql.SQL(" NOT NULL" if logins and layout.not_null_keys else ""),
        "logins_key": sql.SQL(f"message_id, {LOGINS_PARTITION_KEY}" if logins else "message_id"),
        "rejections_partitioning": sql.SQL(
            by_range.format(REJECTIONS_PARTITION_KEY) if rejections else ""
        ),
        "rejections_key": sql.SQL(
            f"message_id, {REJECTIONS_PARTITION_KEY}" if rejections else "message_id"
        ),
    }


# Written one statement at a time: PostgreSQL 10 has ADD COLUMN IF NOT EXISTS
# (9.6+) and CREATE INDEX IF NOT EXISTS (9.5+), which is all this needs.
# {logins} and {rejections} are table names, so `replay --into` can rebuild
# into a fresh pair of tables with the very same schema. The placeholders
# {logins_partitioning}, {logins_not_null}, {logins_key} and their
# rejections' kin are the layout's (layout_fragments): empty, or the
# partitioning clause, and the unique key (message_id, or message_id with
# the partition key, as a partitioned table's unique key must include it).
SCHEMA_TEMPLATES: tuple[str, ...] = (
    # The exercise's DDL, verbatim in meaning.
    """CREATE TABLE IF NOT EXISTS {logins}(
        user_id          varchar(128),
        device_type      varchar(32),
        masked_ip        varchar(256),
        masked_device_id varchar(256),
        locale           varchar(32),
        app_version      integer,
        create_date      date{logins_not_null}
    ){logins_partitioning}""",
    # NOT NULL only when partitioned, where the table is new (empty) here.
    "ALTER TABLE {logins} ADD COLUMN IF NOT EXISTS message_id varchar(128){logins_not_null}",
    "ALTER TABLE {logins} ADD COLUMN IF NOT EXISTS app_version_full varchar(32)",
    "ALTER TABLE {logins} ADD COLUMN IF NOT EXISTS sent_at timestamptz",
    "ALTER TABLE {logins} ADD COLUMN IF NOT EXISTS ingested_at timestamptz",
    # The SNS notification or EventBridge event a login came in, and its own id.
    "ALTER TABLE {logins} ADD COLUMN IF NOT EXISTS envelope_kind varchar(16)",
    "ALTER TABLE {logins} ADD COLUMN IF NOT EXISTS envelope_id varchar(128)",
    # A default set separately applies to new rows only: no rewrite on PG 10.
    "ALTER TABLE {logins} ALTER COLUMN ingested_at SET DEFAULT now()",
    # Writing the same SQS message twice yields one row (old rows have NULL ids,
    # which a unique index allows any number of): a redelivery has the same
    # SentTimestamp, so the same create_date, and meets the same key.
    "CREATE UNIQUE INDEX IF NOT EXISTS {logins_message_id_key} ON {logins} ({logins_key})",
    "CREATE INDEX IF NOT EXISTS {logins_device_idx} ON {logins} (masked_device_id)",
    """CREATE TABLE IF NOT EXISTS {rejections}(
        message_id  varchar(128) NOT NULL,
        sent_at     timestamptz,
        rejected_at timestamptz NOT NULL DEFAULT now(),
        reason      text NOT NULL,
        body_token  text,
        PRIMARY KEY ({rejections_key})
    ){rejections_partitioning}""",
    # The raw record (topic:partition:offset) that wrote each row: a batch
    # processed again publishes exactly the rows it wrote the first time,
    # and nothing for another copy of the same SQS message
    # (stream/worker/transactions.py). NULL for rows written before.
    "ALTER TABLE {logins} ADD COLUMN IF NOT EXISTS raw_position varchar(300)",
    "ALTER TABLE {rejections} ADD COLUMN IF NOT EXISTS raw_position varchar(300)",
    # first_seen and last_seen are NULL only for a device whose rows predate
    # their sent_at column and had none to offer.
    """CREATE TABLE IF NOT EXISTS {devices}(
        masked_device_id varchar(256) PRIMARY KEY,
        first_seen       timestamptz,
        last_seen        timestamptz,
        login_count      bigint NOT NULL
    )""",
    # Partitions are created and dropped through these (stream.postgres.partition_ddl).
    *FUNCTION_TEMPLATES,
)

# One pass over user_logins, once, when seen_devices is created beside rows
# that are already there: rows of the exercise's 7-column table have no
# sent_at, so their date stands in for it.
BACKFILL_TEMPLATE = """INSERT INTO {devices} (masked_device_id, first_seen, last_seen, login_count)
    SELECT masked_device_id,
           min(coalesce(sent_at, create_date::timestamptz)),
           max(coalesce(sent_at, create_date::timestamptz)),
           count(*)
      FROM {logins} WHERE masked_device_id IS NOT NULL
     GROUP BY masked_device_id
        ON CONFLICT (masked_device_id) DO NOTHING"""

# Several workers start at once; one migrates while the others wait.
LOCK_STATEMENT = "SELECT pg_advisory_xact_lock(hashtext('maskstream.schema'))"


def tables_of(settings: Settings) -> Tables:
    """The tables *settings* name."""
    return Tables(
        settings.logins_table,
        settings.rejections_table,
        settings.devices_table,
        Interval.parse(settings.partition_interval),
    )


def template_names(tables: Tables) -> dict[str, str]:
    """The table and index names the templates' placeholders stand for."""
    return {
        "logins": tables.logins,
        "rejections": tables.rejections,
        "devices": tables.devices,
        "logins_message_id_key": f"{tables.logins}_message_id_key",
        "logins_device_idx": f"{tables.logins}_masked_device_id_idx",
        "create_partition": CREATE_PARTITION,
        "drop_partitions": DROP_PARTITIONS,
    }


def _names(tables: Tables) -> dict[str, sql.Identifier]:
    return {key: sql.Identifier(name) for key, name in template_names(tables).items()}


def schema_statements(tables: Tables = Tables(), layout: Layout = Layout()) -> list[sql.Composed]:
    """The DDL for a pipeline's tables in *layout*, safely quoted."""
    names = {**_names(tables), **layout_fragments(layout)}
    return [sql.SQL(template).format(**names) for template in SCHEMA_TEMPLATES]


def backfill_statement(tables: Tables = Tables()) -> sql.Composed:
    """Device state from the rows already in the logins table."""
    return sql.SQL(BACKFILL_TEMPLATE).format(**_names(tables))


EXISTS_STATEMENT = "SELECT to_regclass(%s) IS NOT NULL"
# The kind of each table ('p' partitioned, 'r' plain), NULL for a missing one.
RELKINDS_STATEMENT = """SELECT t.name, c.relkind FROM unnest(%s::text[]) AS t(name)
    LEFT JOIN pg_class c ON c.oid = to_regclass(quote_ident(t.name))"""


def _layout(
    rows: list[tuple[str, str | None]], server_version: int, tables: Tables, not_null_keys: bool
) -> Layout:
    layout, reasons = choose_layout(dict(rows), server_version, tables)
    for reason in reasons:
        log.info("%s", reason)
    return replace(layout, not_null_keys=not_null_keys)


def ensure_schema(
    conn: psycopg.Connection, tables: Tables = Tables(), not_null_keys: bool = True
) -> int | None:
    """Create or migrate the tables in one transaction (blocking connection);
    the number of devices backfilled, or None when seen_devices was there
    already. *not_null_keys*: see :class:`Layout`."""
    with conn.transaction():
        conn.execute(LOCK_STATEMENT)
        had_devices = scalar(conn, EXISTS_STATEMENT, (tables.devices,))
        kinds = conn.execute(RELKINDS_STATEMENT, ([tables.logins, tables.rejections],)).fetchall()
        layout = _layout(kinds, conn.info.server_version, tables, not_null_keys)
        for statement in schema_statements(tables, layout):
            conn.execute(statement)
        if had_devices:
            return None
        return conn.execute(backfill_statement(tables)).rowcount


async def ensure_schema_async(conn: psycopg.AsyncConnection, tables: Tables = Tables()) -> None:
    """:func:`ensure_schema` for the workers' asyncio connections."""
    async with conn.transaction():
        await conn.execute(LOCK_STATEMENT)
        had_devices = await scalar_async(conn, EXISTS_STATEMENT, (tables.devices,))
        cursor = await conn.execute(RELKINDS_STATEMENT, ([tables.logins, tables.rejections],))
        layout = _layout(await cursor.fetchall(), conn.info.server_version, tables, True)
        for statement in schema_statements(tables, layout):
            await conn.execute(statement)
        if not had_devices:
            await conn.execute(backfill_statement(tables))
