"""``maskstream generate N``: synthetic login messages as JSON lines on stdout."""

from __future__ import annotations

import argparse
import sys

from stream.ops.generate import generate


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="print N synthetic login messages (with the odd cases) as JSON lines",
        description="Print N synthetic SQS message bodies, one per line: valid logins "
        "from a pool of repeating devices, plus bodies that are not logins, not JSON, "
        "mistyped, too long or empty. Pipe into `maskstream send -`.",
    )
    parser.add_argument("count", type=int, metavar="N", help="number of messages")
    parser.add_argument("--seed", type=int, default=None, help="repeatable output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    for line in generate(args.count, args.seed):
        out.write(line + "\n")
    return 0
