"""``maskstream migrate``: create and migrate the tables with the owner role.

Workers then run with a runtime role that has no DDL rights (they check the
schema is current and go on); ``--grant-runtime ROLE`` grants that role
exactly the privileges the workers need (stream.postgres.roles).
"""

from __future__ import annotations

import argparse

import psycopg

from stream.common import settings as settings_module
from stream.common.errors import CommandError, one_line
from stream.postgres.connect import database_of
from stream.postgres.convert import ConversionRefused
from stream.postgres.migration import Migration, migrate
from stream.postgres.schema import tables_of


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="create or migrate the tables (owner role), optionally grant a runtime role",
        description=(
            "With DATABASE_URL of the role that owns the tables (or may create them): "
            "create or migrate user_logins, rejected_logins, seen_devices (backfilled when "
            "new) and unmask_audit, exactly as a worker with that role does at start. "
            "Idempotent. See docs/operations.md, 'Roles and grants'."
        ),
    )
    parser.add_argument(
        "--grant-runtime",
        metavar="ROLE",
        help="grant ROLE the workers' privileges (SELECT, INSERT; UPDATE on seen_devices)",
    )
    parser.add_argument(
        "--partition",
        action="store_true",
        help=(
            "convert plain user_logins and rejected_logins to tables partitioned by time, "
            "each old table attached as one partition (PostgreSQL 11+; locks them meanwhile)"
        ),
    )
    parser.set_defaults(handler=run)


def describe(migration: Migration) -> list[str]:
    """What a migration did, one line a change."""
    lines = [f"created {what}" for what in migration.created] or ["schema already current"]
    if migration.backfilled is not None:
        lines.append(f"backfilled seen_devices: {migration.backfilled} devices")
    if migration.audit_created:
        lines.append("created table unmask_audit")
    lines += [conversion.describe() for conversion in migration.conversions]
    if migration.conversions and not migration.grants:
        lines.append(
            "the partitioned tables are new: grant a runtime role again with --grant-runtime ROLE"
        )
    lines += [f"granted: {statement}" for statement in migration.grants]
    return lines


def run(args: argparse.Namespace) -> int:
    settings = settings_module.load()
    database = database_of(settings)
    try:
        with database.connect(autocommit=True, connect_timeout=10) as conn:
            migration = migrate(conn, tables_of(settings), args.grant_runtime, args.partition)
    except ConversionRefused as exc:
        raise CommandError(f"conversion refused, nothing changed: {exc}") from None
    except psycopg.OperationalError as exc:
        raise CommandError(f"cannot connect to PostgreSQL: {one_line(exc)}") from None
    except psycopg.Error as exc:
        raise CommandError(
            f"migration failed, nothing changed: {one_line(exc)} "
            "(DATABASE_URL must be a role that may create and alter the tables)"
        ) from None
    print("\n".join(describe(migration)))
    return 0
