"""``maskstream status [--watch]``: queue depth, consumer lag and row counts on one screen.

The gathering (:mod:`stream.ops.status.collect`) and the formatting
(:mod:`stream.ops.status.render`) live in :mod:`stream.ops.status`; this module only
parses options and chooses between one snapshot and a refreshing screen.
Connections come from the same environment variables as the pipeline's, so
the status shows the deployment the bridge and workers actually use.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from stream.common import settings as settings_module
from stream.common.errors import CommandError
from stream.ops.status.collect import DEFAULT_TIMEOUT, collect
from stream.ops.status.figures import Snapshot, current_rate
from stream.ops.status.render import render
from stream.ops.status.watch import watch

# Client libraries that log every failed connection attempt: an unreachable
# service is already reported on its own status line.
NOISY_LOGGERS = ("aiokafka", "kafka", "botocore", "urllib3", "bridge.sqs")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="SQS depth, Kafka consumer lag and PostgreSQL counts on one screen",
        description="Show the SQS queue depth (visible, in flight, dead letters), the "
        "workers' Kafka consumer lag per partition, and the rows, rejections, seen "
        "devices and ingest rate in PostgreSQL. Each unreachable service gets its own "
        "line; the exit status is 1 if any was unreachable (one-shot mode).",
    )
    parser.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    parser.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between refreshes with --watch (default 2)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"per-service timeout (default {DEFAULT_TIMEOUT:g})",
    )
    parser.set_defaults(handler=run)


def _quiet_client_logs() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise CommandError("--interval must be positive")
    if args.timeout <= 0:
        raise CommandError("--timeout must be positive")
    try:
        settings = settings_module.load()
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    _quiet_client_logs()
    take = functools.partial(collect, settings, args.timeout)
    if args.watch:
        return watch_until_interrupted(take, args.interval)
    snapshot = take()
    print(render(snapshot, current_rate(snapshot)))
    return 1 if snapshot.problems else 0


def watch_until_interrupted(take: Callable[[], Snapshot], interval: float) -> int:
    """``--watch`` with Ctrl-C as a flag the loop checks between refreshes.

    Left to raise KeyboardInterrupt, a Ctrl-C that lands inside
    ``asyncio.run`` becomes a cancellation that the Kafka client can absorb,
    and the watch went on refreshing. ``asyncio.run`` leaves a handler that
    is not Python's default alone.
    """
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        return watch(take, sys.stdout, interval, sleep=interrupted.wait, stopped=interrupted.is_set)
    finally:
        signal.signal(signal.SIGINT, previous)
