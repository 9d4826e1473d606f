"""The ``maskstream`` command: one sub-command per module in :mod:`stream.cli`.

Each command module exposes ``register(subparsers)``, which adds its parser
and sets ``handler`` to a function taking the parsed arguments and returning
an exit status. Keeping commands in their own modules keeps this file a table
of contents, and keeps heavy imports (Faust, boto3) out of unrelated commands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from stream.common import logs
from stream.common.errors import CommandError

__all__ = ["CommandError", "build_parser", "main"]

# Module names under stream.cli, in the order `--help` lists them.
COMMAND_MODULES = (
    "stack",
    "demo",
    "generate",
    "send",
    "bridge",
    "keys",
    "migrate",
    "replay",
    "status",
    "seen",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskstream",
        description="Move login events from SQS to PostgreSQL through Kafka, masking PII.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"stream.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"stream.cli.{name}":
                continue  # command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.handler(args) or 0)
    except CommandError as exc:
        print(f"maskstream {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
