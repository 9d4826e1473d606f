"""``maskstream migrate --partition``: a plain table made partitioned, explicitly.

An existing plain ``user_logins`` or ``rejected_logins`` is never converted
behind anyone's back (stream.postgres.schema keeps every table's layout).
This does it on request, in the caller's one transaction, so it happens
whole or not at all: the plain table is renamed to the name of a partition,
the partitioned table is created under the old name, and the old table is
attached as one partition covering all its days,
``[min(day), max(day) + 1)``. Its rows are not copied; attaching checks
them against the range and builds the new unique key
(``message_id`` with the partition key) on them, which takes time in
proportion to the table, under an exclusive lock: workers wait meanwhile.

Rows without the partition key (a ``create_date`` or ``sent_at`` of NULL)
have no range to live in: the conversion refuses, saying how many, and
changes nothing. Old rows without a ``message_id`` are fine (a unique key
allows any number of NULLs); the converted ``user_logins`` therefore keeps
``message_id`` nullable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

import psycopg
from psycopg import sql

from stream.postgres.partitions import Interval, partition_name
from stream.postgres.schema import (
    LOGINS_PARTITION_KEY,
    PARTITIONED_UNIQUE_SINCE,
    REJECTIONS_PARTITION_KEY,
    RELKINDS_STATEMENT,
    Tables,
    ensure_schema,
)


class ConversionRefused(Exception):
    """The tables cannot be converted as they are; nothing was changed."""


@dataclass(frozen=True)
class Conversion:
    """What converting one table did."""

    table: str
    partition: str | None  # the old rows' partition; None: the table was empty
    low: date | None
    high: date | None
    rows: int

    def describe(self) -> str:
        if self.partition is None:
            return f"partitioned {self.table} (it was empty)"
        return (
            f"partitioned {self.table}: its {self.rows} rows are partition "
            f"{self.partition}, {self.low} to {self.high}"
        )


# The UTC day of the partition key, as SQL over the old table's rows.
DAY_OF = {
    LOGINS_PARTITION_KEY: sql.SQL("create_date"),
    REJECTIONS_PARTITION_KEY: sql.SQL("(sent_at AT TIME ZONE 'UTC')::date"),
}


def _plain_tables(conn: psycopg.Connection, tables: Tables) -> list[tuple[str, str]]:
    """(table, partition key) of the tables that exist and are plain."""
    kinds: dict[str, str | None] = dict(
        conn.execute(RELKINDS_STATEMENT, ([tables.logins, tables.rejections],)).fetchall()
    )
    keys = ((tables.logins, LOGINS_PARTITION_KEY), (tables.rejections, REJECTIONS_PARTITION_KEY))
    return [(table, key) for table, key in keys if kinds.get(table) not in (None, "p")]


Days = tuple[int, int, date | None, date | None]


def _days(conn: psycopg.Connection, table: str, key: str) -> Days:
    """Rows, rows without the key, first and last day of *table*."""
    statement = sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE {key} IS NULL), min({day}), max({day})"
        " FROM {table}"
    ).format(key=sql.Identifier(key), day=DAY_OF[key], table=sql.Identifier(table))
    rows, without, first, last = conn.execute(statement).fetchone() or (0, 0, None, None)
    return int(rows), int(without), first, last


def _rename_indexes(conn: psycopg.Connection, table: str, new_name: str) -> None:
    """Give the old table's indexes its new name's prefix: the partitioned
    table takes the old names (an index matching the new one's definition,
    like the device index, is then attached rather than built again)."""
    names = conn.execute(
        "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = to_regclass(quote_ident(%s))",
        (new_name,),
    ).fetchall()
    for (index,) in names:
        if index.startswith(table):
            renamed = new_name + index[len(table) :]
            conn.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(index), sql.Identifier(renamed)
                )
            )


def _drop_primary_key(conn: psycopg.Connection, table: str) -> None:
    """A table has one primary key: the old one (message_id alone) goes, the
    partitioned table's (message_id, sent_at) is built on attaching."""
    found = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(quote_ident(%s)) "
        "AND contype = 'p'",
        (table,),
    ).fetchone()
    if found is not None:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(table), sql.Identifier(found[0])
            )
        )


def convert_to_partitioned(conn: psycopg.Connection, tables: Tables) -> list[Conversion]:
    """Convert the plain logins and rejections tables (see the module
    docstring); must run inside the caller's transaction, after the schema
    is current. Raises :class:`ConversionRefused`."""
    plain = _plain_tables(conn, tables)
    if not plain:
        return []
    if conn.info.server_version < PARTITIONED_UNIQUE_SINCE:
        raise ConversionRefused(
            f"PostgreSQL {conn.info.server_version // 10000} cannot have the unique key "
            "idempotence needs on a partitioned table (11 can): the tables stay plain"
        )
    found = [(table, key, *_days(conn, table, key)) for table, key in plain]
    for table, key, _, without, _, _ in found:
        if without:
            raise ConversionRefused(
                f"{without} rows of {table} have no {key}, so no partition to go to: "
                f"set their {key} or delete them, then convert again"
            )
    interval = Interval.DAY if tables.interval is Interval.NONE else tables.interval
    conversions = []
    for table, key, rows, _, first, last in found:
        if first is None or last is None:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
            conversions.append(Conversion(table, None, None, None, 0))
            continue
        old = partition_name(table, first)
        rename = sql.SQL("ALTER TABLE {} RENAME TO {}")
        conn.execute(rename.format(sql.Identifier(table), sql.Identifier(old)))
        _rename_indexes(conn, table, old)
        if key == REJECTIONS_PARTITION_KEY:
            _drop_primary_key(conn, old)
            conn.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN sent_at SET NOT NULL").format(
                    sql.Identifier(old)
                )
            )
        conversions.append(Conversion(table, old, first, last + timedelta(days=1), rows))
    # The partitioned tables, under the old names, keys nullable for old rows.
    ensure_schema(conn, replace(tables, interval=interval), not_null_keys=False)
    for conversion in conversions:
        if conversion.partition is not None:
            _attach(conn, conversion, tables.rejections == conversion.table)
    return conversions


def _attach(conn: psycopg.Connection, conversion: Conversion, timestamps: bool) -> None:
    def bound(day: date | None) -> sql.Literal:
        assert day is not None
        return sql.Literal(f"{day.isoformat()} 00:00:00+00" if timestamps else day.isoformat())

    conn.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(conversion.table),
            sql.Identifier(conversion.partition or ""),
            bound(conversion.low),
            bound(conversion.high),
        )
    )
