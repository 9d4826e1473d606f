"""``maskstream replay``: process the raw topic again, without duplicating rows."""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from aiokafka.errors import KafkaError
from psycopg import sql

from stream.common import settings as settings_module
from stream.common.errors import CommandError
from stream.common.kafka_security import KafkaClients, KafkaSecurityError
from stream.common.settings import Settings
from stream.ops.launcher import Launcher
from stream.ops.replay import (
    ReplayRefused,
    active_members,
    describe,
    end_offsets,
    group_caught_up,
    parse_start,
    rebuild_environment,
    rewind_group,
)
from stream.postgres.connect import database_of
from stream.postgres.queries import scalar


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="re-process the raw topic from a point in time (no duplicate rows)",
        description=(
            "Rewind the workers' consumer group (MASKSTREAM_APP_ID) on the raw topic to "
            "--from; the workers re-process from there when they next start, and rows "
            "already written are left as they are. Refused while workers of the group run. "
            "With --into TABLE, rebuild into a fresh table through a separate consumer "
            "group and leave user_logins untouched. Replay reaches back only as far as the "
            "raw topic's retention (MASKSTREAM_RAW_RETENTION_HOURS)."
        ),
    )
    parser.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="earliest|TIME",
        help="'earliest', or an ISO-8601 time (SQS SentTimestamp) to start from",
    )
    parser.add_argument("--into", metavar="TABLE", help="rebuild into this new table")
    parser.add_argument("--dry-run", action="store_true", help="show the offsets, change none")
    parser.add_argument(
        "--republish",
        action="store_true",
        help=(
            "publish the replayed records to logins.masked and logins.rejected again (by "
            "default they are written to PostgreSQL only: their outputs are there already)"
        ),
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="--into: give up after this many seconds"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=(
            "wait up to SECONDS for the group to empty before refusing (a worker stopped "
            "during a rebalance stays a member until its session times out)"
        ),
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_module.load()
    try:
        start_ms = parse_start(args.start)
        if args.into:
            return rebuild_into(settings, args.into, start_ms, args.timeout, args.dry_run)
        return rewind(settings, start_ms, args.dry_run, args.wait, args.republish)
    except (ReplayRefused, KafkaSecurityError) as exc:
        raise CommandError(str(exc)) from None
    except (KafkaError, OSError) as exc:
        raise CommandError(
            f"Kafka at {settings.kafka_bootstrap_servers} is unreachable or failed: {exc}"
        ) from None


def rewind(
    settings: Settings,
    start_ms: int | None,
    dry_run: bool,
    wait: float = 0.0,
    republish: bool = False,
) -> int:
    kafka, group = KafkaClients.from_settings(settings), settings.app_id
    members = members_after(kafka, group, 0.0 if dry_run else wait)
    if members and not dry_run:
        raise ReplayRefused(
            f"{members} worker(s) of group {group!r} are running; stop them first, "
            "replay, then start them again (their commits would undo the rewind). A worker "
            "stopped during a rebalance stays a member until its session times out "
            f"({settings.session_timeout_seconds:g} s): --wait covers that"
        )
    moves = asyncio.run(
        rewind_group(kafka, group, settings.topics.raw, start_ms, dry_run, republish)
    )
    print(describe(moves))
    verb = "would rewind" if dry_run else "rewound"
    print(f"{verb} group {group!r} on {settings.topics.raw}; start the workers to replay")
    return 0


def members_after(kafka: KafkaClients, group: str, wait: float) -> int:
    """Members of *group*, polled for up to *wait* seconds until there are none."""
    deadline = time.monotonic() + wait
    while (members := asyncio.run(active_members(kafka, group))) and (time.monotonic() < deadline):
        time.sleep(1.0)
    return members


def rebuild_into(
    settings: Settings, table: str, start_ms: int | None, timeout: float, dry_run: bool
) -> int:
    if table in (settings.logins_table, settings.rejections_table):
        raise ReplayRefused(f"--into must name a new table, not the live {table!r}")
    with database_of(settings).connect() as conn:
        exists = scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (table,))
    if exists:
        raise ReplayRefused(f"table {table!r} already exists; choose a new name or drop it")

    overrides = rebuild_environment(settings, table)
    kafka, group = KafkaClients.from_settings(settings), overrides["MASKSTREAM_APP_ID"]
    moves = asyncio.run(rewind_group(kafka, group, settings.topics.raw, start_ms, dry_run))
    print(describe(moves))
    if dry_run:
        return 0
    raw_targets = asyncio.run(end_offsets(kafka, [settings.topics.raw]))
    launcher = Launcher({**os.environ, **overrides}, settings.stack_dir / f"replay-{table}")
    launcher.start_worker("worker")
    print(f"rebuilding into {table} with group {group!r}; log: {launcher.log_dir}/worker.log")
    try:
        wait_until_drained(settings, overrides, raw_targets, timeout, launcher)
    finally:
        launcher.stop_all()
    with database_of(settings).connect() as conn:
        count = sql.SQL("SELECT count(*) FROM {}")
        rows = scalar(conn, count.format(sql.Identifier(table)))
        rejected = scalar(conn, count.format(sql.Identifier(f"{table}_rejected")))
    print(f"{table}: {rows} rows; {table}_rejected: {rejected} rejections")
    return 0


def wait_until_drained(
    settings: Settings,
    overrides: dict[str, str],
    raw_targets: dict,
    timeout: float,
    launcher: Launcher,
) -> None:
    """Wait until the rebuild group has committed the raw topic as it was at the
    start: a worker commits a raw offset only once its batch is in PostgreSQL."""
    kafka, group = KafkaClients.from_settings(settings), overrides["MASKSTREAM_APP_ID"]
    deadline = time.monotonic() + timeout
    while not asyncio.run(group_caught_up(kafka, group, raw_targets)):
        if launcher.children["worker"].poll() is not None:
            raise ReplayRefused(f"the rebuild worker exited; see {launcher.log_dir}/worker.log")
        if time.monotonic() > deadline:
            raise ReplayRefused(f"rebuild not finished after {timeout:.0f} s")
        time.sleep(1.0)
