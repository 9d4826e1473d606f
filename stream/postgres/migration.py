"""Migrating with the owner role, and running with a role that may not.

``maskstream migrate`` runs :func:`migrate` with the owner role: the very
DDL the workers ran at start before (stream.postgres.schema), the unmask
audit table, and optionally the runtime grants. A worker calls
:func:`ensure_current_async` on each new connection: a read-only catalog
check (stream.postgres.catalog), cheap and lock-free, and the DDL only when
something is missing, so a runtime role without DDL rights runs against a
migrated database, and an owner role still migrates on its own as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from stream.postgres.audit import ensure_audit_table
from stream.postgres.catalog import missing_objects, missing_objects_async
from stream.postgres.convert import Conversion, convert_to_partitioned
from stream.postgres.queries import scalar
from stream.postgres.roles import runtime_grants
from stream.postgres.schema import Tables, ensure_schema, ensure_schema_async

log = logging.getLogger(__name__)

MIGRATE_HINT = "run `maskstream migrate` with the owner role's DATABASE_URL"


@dataclass(frozen=True)
class Migration:
    """What :func:`migrate` found missing and did."""

    created: list[str]  # what the schema lacked, now created
    backfilled: int | None  # devices backfilled into a new seen_devices; None: none created
    audit_created: bool
    grants: list[str]  # the GRANT statements run
    conversions: list[Conversion] = field(default_factory=list)  # --partition's


def migrate(
    conn: psycopg.Connection,
    tables: Tables,
    runtime_role: str | None = None,
    partition: bool = False,
) -> Migration:
    """Create or migrate *tables* and the audit table, with *partition* convert
    plain logins and rejections tables to partitioned ones
    (stream.postgres.convert), and grant *runtime_role* the runtime
    privileges; one transaction (*conn* in autocommit mode)."""
    with conn.transaction():
        lacking = missing_objects(conn, tables)
        backfilled = ensure_schema(conn, tables)
        conversions = convert_to_partitioned(conn, tables) if partition else []
        audit_created = ensure_audit_table(conn)
        grants: list[sql.Composed] = []
        if runtime_role is not None:
            schema = scalar(conn, "SELECT current_schema()")
            grants = runtime_grants(tables, runtime_role, schema)
            for statement in grants:
                conn.execute(statement)
    granted = [g.as_string(conn) for g in grants]
    return Migration(lacking, backfilled, audit_created, granted, conversions)


async def ensure_current_async(conn: psycopg.AsyncConnection, tables: Tables) -> None:
    """Migrate *tables* only if the catalog says something is missing. A role
    that may not (SQLSTATE 42501) logs what to do and raises, which the sink
    retries as a server-state error until someone migrates."""
    lacking = await missing_objects_async(conn, tables)
    if not lacking:
        return
    try:
        await ensure_schema_async(conn, tables)
    except psycopg.errors.InsufficientPrivilege as exc:
        log.error(
            "the database lacks %s, and role %r may not create it (%s): %s",
            ", ".join(lacking),
            conn.info.user,
            exc.diag.message_primary or "insufficient privilege",
            MIGRATE_HINT,
        )
        raise
