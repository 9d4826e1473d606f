"""``maskstream demo``: run the whole pipeline once on the local stack."""

from __future__ import annotations

import argparse

from stream.errors import CommandError


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
    from stream.demo import run_demo
    from stream.stack.prerequisites import MissingPrerequisite

    try:
        return run_demo(args.count, args.workers, args.seed, args.timeout)
    except (MissingPrerequisite, RuntimeError, TimeoutError) as exc:
        raise CommandError(str(exc)) from None
