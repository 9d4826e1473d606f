"""``maskstream bridge``: run the SQS -> Kafka bridge (same as ``python -m bridge``)."""

from __future__ import annotations

import argparse
from typing import Any

from bridge.cli import DESCRIPTION, add_bridge_arguments, run


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bridge", help="forward SQS messages to the raw Kafka topic", description=DESCRIPTION
    )
    add_bridge_arguments(parser)
    parser.set_defaults(handler=run)
