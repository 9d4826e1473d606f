"""``maskstream stack up|down|status``: the embedded local stack, no Docker needed."""

from __future__ import annotations

import argparse

from stream.common import settings as settings_module
from stream.common.errors import CommandError
from stream.devstack.manager import Stack, external_database_url_from_environment
from stream.devstack.prerequisites import MissingPrerequisite


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stack",
        help="start or stop the local Kafka, ElasticMQ and PostgreSQL",
        description=(
            "Run Kafka (KRaft), ElasticMQ and PostgreSQL as plain processes under "
            "MASKSTREAM_STACK_DIR (default .stack). `up` is idempotent and writes "
            ".stack/env; `down` stops what `up` started. If DATABASE_URL names another "
            "server, that server is used instead of a private PostgreSQL."
        ),
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--brokers",
        type=int,
        choices=[1, 3],
        default=None,
        help=(
            "Kafka nodes of a new stack (MASKSTREAM_STACK_BROKERS, default 1); 3 runs a "
            "three-node KRaft cluster on loopback, each node broker and controller. "
            "A stack keeps the count it was made with."
        ),
    )
    parser.add_argument(
        "--exercise",
        action="store_true",
        help="with `up`: also run the exercise's own servers, a query-protocol-only SQS "
        "(ElasticMQ 1.3.9) and PostgreSQL 10 (the tests use them)",
    )
    parser.add_argument(
        "--prometheus",
        action="store_true",
        help="with `up`: also run Prometheus with the repository's rules, scraping the "
        "bridges and workers that the demo and tests launch (Debian's prometheus package)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_module.load()
    stack = Stack(
        settings.stack_dir,
        exercise=True if args.exercise else None,
        brokers=brokers_wanted(args, settings),
    )
    try:
        if args.action == "up":
            stack.external_database_url = external_database_url_from_environment(stack)
            stack.up(prometheus=args.prometheus)
            print(f"# local stack is up; load it with: . {stack.env_file}")
            print(stack.env_file.read_text(), end="")
        elif args.action == "down":
            stopped = stack.down()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        else:
            for name, running in stack.status().items():
                print(f"{name:<10} {'running' if running else 'stopped'}")
            for node in stack.kafka_nodes() if stack.brokers > 1 else []:
                print(f"{node.name:<10} {node.bootstrap} (node {node.node_id})")
    except MissingPrerequisite as exc:
        raise CommandError(str(exc)) from None
    except (TimeoutError, RuntimeError) as exc:
        raise CommandError(str(exc)) from None
    return 0


def brokers_wanted(args: argparse.Namespace, settings: settings_module.Settings) -> int | None:
    """``--brokers``, else MASKSTREAM_STACK_BROKERS when set, else None: the
    count a stack was made with (one for a new stack)."""
    if getattr(args, "brokers", None):
        return args.brokers
    if args.action == "up" and settings.stack_brokers != 1:
        return settings.stack_brokers
    return None
