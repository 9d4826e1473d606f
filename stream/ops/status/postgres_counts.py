"""PostgreSQL: rows, seen devices, recent rows and rejections of the workers' tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from stream.common.settings import Settings
from stream.ops.status.figures import (
    RATE_WINDOW_SECONDS,
    DatabaseCounts,
    PartitionSummary,
    Problem,
)
from stream.ops.status.reasons import describe_error

TOP_REASONS = 5


def database_target(url: str) -> str:
    """``host:port/dbname`` of a libpq URI, without user or password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:
        return "DATABASE_URL (unparsable)"
    host = info.get("host") or "localhost"
    return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def _existing(conn: Any, names: Sequence[str]) -> set[str]:
    rows = conn.execute(
        "SELECT name FROM unnest(%s::text[]) AS name "
        "WHERE to_regclass(quote_ident(name)) IS NOT NULL",
        (list(names),),
    ).fetchall()
    return {row[0] for row in rows}


def _has_column(conn: Any, table: str, column: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s AND column_name = %s",
        (table, column),
    ).fetchone()
    return row is not None


def _count_logins(conn: Any, table: str) -> tuple[int, int, int | None]:
    from psycopg import sql

    # A table from before the workers' migration has no ingested_at: no rate then.
    window = (
        sql.SQL("count(*) FILTER (WHERE ingested_at >= now() - make_interval(secs => {}))").format(
            sql.Literal(RATE_WINDOW_SECONDS)
        )
        if _has_column(conn, table, "ingested_at")
        else sql.SQL("NULL")
    )
    query = sql.SQL("SELECT count(*), count(DISTINCT masked_device_id), {} FROM {}").format(
        window, sql.Identifier(table)
    )
    rows, devices, recent = conn.execute(query).fetchone()
    return int(rows), int(devices), None if recent is None else int(recent)


def _count_rejections(conn: Any, table: str) -> tuple[int, tuple[tuple[str, int], ...]]:
    from psycopg import sql

    name = sql.Identifier(table)
    total = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()[0]
    top = conn.execute(
        sql.SQL(
            "SELECT reason, count(*) FROM {} GROUP BY reason "
            "ORDER BY count(*) DESC, reason LIMIT %s"
        ).format(name),
        (TOP_REASONS,),
    ).fetchall()
    return int(total), tuple((str(reason), int(count)) for reason, count in top)


def _partitions(conn: Any, table: str) -> PartitionSummary | None:
    """*table*'s partitions, or None for a plain table (catalog reads only)."""
    from stream.postgres.partition_ddl import list_partitions

    partitions = list_partitions(conn, table)
    if not partitions:
        kind = conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass(quote_ident(%s))", (table,)
        ).fetchone()
        if kind is None or kind[0] != "p":
            return None
    ranges = [p.days for p in partitions if p.days is not None]
    lows = [r.low for r in ranges]
    highs = [r.high - timedelta(days=1) for r in ranges if r.high is not None]
    return PartitionSummary(
        len(partitions),
        min(lows, default=None),
        max(highs, default=None),
        sum(p.total_bytes for p in partitions),
    )


def database_counts(settings: Settings, timeout: float) -> DatabaseCounts | Problem:
    """Rows, devices, recent rows and rejections, in one read-only session (blocking).

    The tables are the ones the workers write (MASKSTREAM_LOGINS_TABLE and
    MASKSTREAM_REJECTIONS_TABLE); a table not created yet is reported as such.
    """
    import psycopg

    from stream.postgres.connect import database_of

    target = database_target(settings.database_url)
    logins, rejected = settings.logins_table, settings.rejections_table
    milliseconds = int(timeout * 1000)
    try:
        with database_of(settings).connect(
            connect_timeout=max(2, round(timeout)),  # libpq's minimum is 2 s
            options=f"-c statement_timeout={milliseconds} -c default_transaction_read_only=on",
            autocommit=True,
        ) as conn:
            tables = _existing(conn, (logins, rejected))
            rows = devices = recent = rejections = None
            top: tuple[tuple[str, int], ...] = ()
            if logins in tables:
                rows, devices, recent = _count_logins(conn, logins)
            if rejected in tables:
                rejections, top = _count_rejections(conn, rejected)
            partitions = tuple(
                (table, summary)
                for table in (logins, rejected)
                if table in tables and (summary := _partitions(conn, table)) is not None
            )
    except psycopg.errors.QueryCanceled:
        reason = f"counting took longer than {timeout:g} s; raise --timeout"
        return Problem(reason, target, "error")
    except psycopg.OperationalError as exc:
        return Problem(describe_error(exc), target)
    except psycopg.Error as exc:
        return Problem(describe_error(exc), target, "error")
    return DatabaseCounts(
        target, rows, devices, recent, rejections, top, (logins, rejected), partitions
    )
