"""``python -m bridge``: the SQS -> Kafka bridge as a long-running process.

The same options as ``maskstream bridge``; this entry point exists so a
container can run the bridge without the rest of the CLI.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bridge.cli import DESCRIPTION, add_bridge_arguments, run
from stream.common.errors import CommandError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bridge", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_bridge_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return run(args)
    except CommandError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
