"""``maskstream demo``: run the whole pipeline once on the local stack."""

from __future__ import annotations

import argparse
import sys

from stream.common import settings as settings_module
from stream.common.errors import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run SQS -> bridge -> Kafka -> workers -> PostgreSQL on the local stack",
        description="Start the local stack, send synthetic messages, run the bridge and "
        "two workers until every message is a row or a rejection, then summarise.",
    )
    parser.add_argument("--count", type=int, default=3000, help="messages to send (default 3000)")
    parser.add_argument("--workers", type=int, default=2, help="Faust workers (default 2)")
    parser.add_argument("--seed", type=int, default=None, help="repeatable messages")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait (default 300)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stream.cli import main as maskstream
    from stream.devstack.manager import Stack, external_database_url_from_environment
    from stream.devstack.prerequisites import MissingPrerequisite
    from stream.ops.demo import run_demo

    stack = Stack(settings_module.load().stack_dir)
    try:
        stack.external_database_url = external_database_url_from_environment(stack)
        print("starting the local stack (Kafka, ElasticMQ, PostgreSQL) ...", flush=True)
        env = stack.up()
        device = run_demo(
            env, stack.dir / "demo", args.count, args.workers, args.seed, args.timeout
        )
    except (MissingPrerequisite, RuntimeError, TimeoutError) as exc:
        raise CommandError(str(exc)) from None
    print("unmasking it (key holders only; recorded in unmask_audit):")
    print(f"  $ maskstream unmask {device}")
    sys.stdout.flush()
    status = maskstream(["unmask", device])
    print("\nThe stack is still running: `maskstream stack down` stops it.")
    return status
