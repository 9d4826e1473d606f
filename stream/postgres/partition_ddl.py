"""Creating and dropping time partitions, through two SQL functions.

Workers run with a runtime role that has no DDL rights (stream.postgres.roles),
yet a login for a day without a partition must never stop them. So the
schema migration creates two ``SECURITY DEFINER`` functions, owned by the
migrating role, that do exactly this DDL and nothing else:

* ``maskstream_create_partition(parent, low, high)`` creates the partition of a
  partitioned table for the days ``[low, high)`` (NULL high: up to MAXVALUE),
  named ``<parent>_p<yyyymmdd>``, if it is not there yet;
* ``maskstream_drop_partitions(parent, keep_days)`` drops the partitions whose
  whole range ends before the last *keep_days* UTC days (never the current
  one: it computes today itself, so a caller cannot ask for less).

Both refuse a parent that is not a partitioned table, fix their
``search_path`` (a definer function must not resolve names through the
caller's) and run in UTC, so the bounds of ``sent_at`` are UTC midnights
whatever the session's time zone. PUBLIC may not execute them; the runtime
grants add the workers' role.

There is no default partition: PostgreSQL refuses to create a partition for
a range a default partition holds rows of, so one late login there would
block the day's partition for good. Every day gets its own on demand
instead (stream.postgres.partition_keeper).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from stream.postgres.partitions import DayRange, parse_range

CREATE_PARTITION = "maskstream_create_partition"
DROP_PARTITIONS = "maskstream_drop_partitions"
CREATE_PARTITION_ARGS = "regclass, date, date"
DROP_PARTITIONS_ARGS = "regclass, integer"

# Templates of stream.postgres.schema.SCHEMA_TEMPLATES (no braces but the
# placeholders; %I and %L are format()'s, inside the function).
CREATE_PARTITION_FUNCTION = """CREATE OR REPLACE FUNCTION {create_partition}(
        parent regclass, low date, high date) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' AS $body$
DECLARE
    schema_name name;
    parent_name name;
    key_type regtype;
    child text;
    low_bound text;
    high_bound text;
BEGIN
    SELECT n.nspname, c.relname INTO schema_name, parent_name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = parent AND c.relkind = 'p';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'maskstream: % is not a partitioned table', parent
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF high IS NOT NULL AND high <= low THEN
        RAISE EXCEPTION 'maskstream: empty range % to %', low, high
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    child := parent_name || '_p' || to_char(low, 'YYYYMMDD');
    IF octet_length(child) > 63 THEN
        RAISE EXCEPTION 'maskstream: partition name % is too long', child
            USING ERRCODE = 'name_too_long';
    END IF;
    SELECT a.atttypid INTO key_type
      FROM pg_partitioned_table p
      JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
     WHERE p.partrelid = parent;
    low_bound := to_char(low, 'YYYY-MM-DD');
    high_bound := to_char(high, 'YYYY-MM-DD');
    IF key_type <> 'date'::regtype THEN
        low_bound := low_bound || ' 00:00:00+00';
        high_bound := high_bound || ' 00:00:00+00';
    END IF;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%s)',
        schema_name, child, parent, low_bound,
        coalesce(quote_literal(high_bound), 'MAXVALUE'));
    RETURN child;
EXCEPTION WHEN duplicate_table OR unique_violation THEN
    -- Another worker created it at the same moment.
    RETURN child;
END
$body$"""

DROP_PARTITIONS_FUNCTION = """CREATE OR REPLACE FUNCTION {drop_partitions}(
        parent regclass, keep_days integer) RETURNS SETOF text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' AS $body$
DECLARE
    cutoff timestamptz;
    child record;
    upper_bound text;
BEGIN
    IF keep_days IS NULL OR keep_days < 1 THEN
        RAISE EXCEPTION 'maskstream: retention must keep at least one day'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM 1 FROM pg_class WHERE oid = parent AND relkind = 'p';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'maskstream: % is not a partitioned table', parent
            USING ERRCODE = 'wrong_object_type';
    END IF;
    cutoff := (current_date - (keep_days - 1))::timestamptz;
    FOR child IN
        SELECT c.oid::regclass AS id, c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = parent ORDER BY c.relname
    LOOP
        upper_bound := substring(child.bound FROM ' TO \\(''([^'']+)''\\)$');
        IF upper_bound IS NOT NULL AND upper_bound::timestamptz <= cutoff THEN
            EXECUTE format('DROP TABLE %s', child.id);
            RETURN NEXT child.relname;
        END IF;
    END LOOP;
END
$body$"""

REVOKE_CREATE_PARTITION = (
    f"REVOKE EXECUTE ON FUNCTION {{create_partition}}({CREATE_PARTITION_ARGS}) FROM PUBLIC"
)
REVOKE_DROP_PARTITIONS = (
    f"REVOKE EXECUTE ON FUNCTION {{drop_partitions}}({DROP_PARTITIONS_ARGS}) FROM PUBLIC"
)
FUNCTION_TEMPLATES = (
    CREATE_PARTITION_FUNCTION,
    REVOKE_CREATE_PARTITION,
    DROP_PARTITIONS_FUNCTION,
    REVOKE_DROP_PARTITIONS,
)


class PartitionUnavailable(Exception):
    """A partition could not be created or listed: the server's state, never a
    row's fault, so the sink retries the batch (SQLSTATE class 55, object not
    in prerequisite state). Its message holds table names and dates only."""

    sqlstate = "55000"


@dataclass(frozen=True)
class Partition:
    """One partition of a table: its name, days (None: unreadable bound, a
    default partition), and size on disk with its indexes."""

    name: str
    days: DayRange | None
    total_bytes: int


# The children of a table, with their bounds; none for a plain table.
PARTITIONS_QUERY = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), pg_total_relation_size(c.oid)
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = to_regclass(quote_ident(%s))
 ORDER BY c.relname
"""
# 'p': partitioned, 'r': plain, None: no such table.
RELKIND_QUERY = "SELECT relkind FROM pg_class WHERE oid = to_regclass(quote_ident(%s))"


def partitions_from(rows: list[tuple[str, str | None, int]]) -> list[Partition]:
    return [Partition(name, parse_range(bound), int(size)) for name, bound, size in rows]


def list_partitions(conn: psycopg.Connection, table: str) -> list[Partition]:
    """The partitions of *table* (blocking connection; read-only)."""
    return partitions_from(conn.execute(PARTITIONS_QUERY, (table,)).fetchall())


async def list_partitions_async(conn: psycopg.AsyncConnection, table: str) -> list[Partition]:
    """:func:`list_partitions` for the workers' asyncio connections."""
    cursor = await conn.execute(PARTITIONS_QUERY, (table,))
    return partitions_from(await cursor.fetchall())


async def is_partitioned_async(conn: psycopg.AsyncConnection, table: str) -> bool:
    cursor = await conn.execute(RELKIND_QUERY, (table,))
    found = await cursor.fetchone()
    return found is not None and found[0] == "p"


async def create_partition_async(conn: psycopg.AsyncConnection, table: str, days: DayRange) -> str:
    """Create *table*'s partition for *days* in a transaction of its own (it
    locks the parent strongly: never inside a batch's transaction); its name.
    Raises :class:`PartitionUnavailable`."""
    statement = sql.SQL("SELECT {}(%s::regclass, %s, %s)").format(sql.Identifier(CREATE_PARTITION))
    try:
        async with conn.transaction():
            cursor = await conn.execute(
                statement, (sql.Identifier(table).as_string(conn), days.low, days.high)
            )
            found = await cursor.fetchone()
    except psycopg.Error as exc:
        reason = exc.diag.message_primary or type(exc).__name__
        raise PartitionUnavailable(
            f"cannot create the partition of {table} from {days.low} to {days.high}: {reason}"
        ) from None
    assert found is not None
    return str(found[0])


async def drop_partitions_async(
    conn: psycopg.AsyncConnection, table: str, keep_days: int
) -> list[str]:
    """Drop *table*'s partitions older than the last *keep_days* days, in a
    transaction of its own; the names dropped."""
    statement = sql.SQL("SELECT {}(%s::regclass, %s)").format(sql.Identifier(DROP_PARTITIONS))
    async with conn.transaction():
        cursor = await conn.execute(statement, (sql.Identifier(table).as_string(conn), keep_days))
        return [str(name) for (name,) in await cursor.fetchall()]
