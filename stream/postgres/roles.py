"""The privileges of the roles that run maskstream, in one place.

An owner role creates and migrates the tables (``maskstream migrate``); the
workers run with a runtime role that may read and add rows and nothing
more: no DELETE, no TRUNCATE, no DDL, so a compromised or buggy worker
cannot destroy what was written. The workers' statements need exactly
these: ``INSERT ... ON CONFLICT DO NOTHING`` into the logins and
rejections (SELECT for the conflict check and RETURNING),
``INSERT ... ON CONFLICT DO UPDATE`` of the device state (UPDATE), and
``CREATE TEMP TABLE ... (LIKE ...)`` staging tables, which need SELECT on
the table copied and the database's TEMPORARY privilege (PUBLIC has it by
default). Time partitions are created and, past the retention, dropped
through two SECURITY DEFINER functions (stream.postgres.partition_ddl) that
do that and nothing else. Dropping is bounded by the server's own clock:
the current day's partition never goes, but a runtime role could ask for a
retention of one day, so these grants trade "cannot delete any row" for
"cannot delete today's rows"; revoke EXECUTE on maskstream_drop_partitions
and leave MASKSTREAM_RETENTION_DAYS unset on the workers to keep the former.
Roles that unmask only add audit rows: INSERT, the id sequence, and SELECT
of the id alone, which ``INSERT ... RETURNING id`` reads.
docs/operations.md ("Roles and grants") prints these statements.
"""

from __future__ import annotations

from psycopg import sql

from stream.postgres.audit import AUDIT_TABLE
from stream.postgres.partition_ddl import (
    CREATE_PARTITION,
    CREATE_PARTITION_ARGS,
    DROP_PARTITIONS,
    DROP_PARTITIONS_ARGS,
)
from stream.postgres.schema import Tables

DEFAULT_SCHEMA = "public"


def runtime_grants(tables: Tables, role: str, schema: str = DEFAULT_SCHEMA) -> list[sql.Composed]:
    """The GRANTs that let *role* run the workers on *tables*, and nothing else."""
    grantee = sql.Identifier(role)
    return [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), grantee),
        sql.SQL("GRANT SELECT, INSERT ON TABLE {}, {} TO {}").format(
            sql.Identifier(tables.logins), sql.Identifier(tables.rejections), grantee
        ),
        sql.SQL("GRANT SELECT, INSERT, UPDATE ON TABLE {} TO {}").format(
            sql.Identifier(tables.devices), grantee
        ),
        sql.SQL("GRANT EXECUTE ON FUNCTION {}({}), {}({}) TO {}").format(
            sql.Identifier(CREATE_PARTITION),
            sql.SQL(CREATE_PARTITION_ARGS),
            sql.Identifier(DROP_PARTITIONS),
            sql.SQL(DROP_PARTITIONS_ARGS),
            grantee,
        ),
    ]


def unmask_grants(
    role: str, table: str = AUDIT_TABLE, schema: str = DEFAULT_SCHEMA
) -> list[sql.Composed]:
    """The GRANTs that let *role* record its uses of ``unmask``: insert-only."""
    grantee = sql.Identifier(role)
    return [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), grantee),
        sql.SQL("GRANT INSERT, SELECT (id) ON TABLE {} TO {}").format(
            sql.Identifier(table), grantee
        ),
        sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
            sql.Identifier(f"{table}_id_seq"), grantee
        ),
    ]
