"""``maskstream send FILE``: one SQS message per line of a JSON-lines file, byte for byte.

The sending itself is :mod:`stream.ops.send`; this module is its command line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bridge.cli import SQS_OPTIONS, add_options, apply_overrides
from stream.common import settings as settings_module
from stream.common.errors import CommandError
from stream.ops.send import send_to_queue


def run(args: argparse.Namespace) -> int:
    settings = apply_overrides(settings_module.load(), args, SQS_OPTIONS)
    if len(settings.sqs_queue_urls) != 1:
        raise CommandError("send needs one queue: set SQS_QUEUE_URL or pass --queue-url")
    if args.threads < 1:
        raise CommandError("--threads must be at least 1")
    from bridge.sqs.errors import SqsError

    name = "stdin" if args.file == "-" else args.file
    try:
        if args.file == "-":
            report = send_to_queue(settings, sys.stdin.buffer, args.threads)
        else:
            with open(args.file, "rb") as handle:
                report = send_to_queue(settings, handle, args.threads)
    except OSError as exc:
        raise CommandError(f"cannot read {name}: {exc.strerror}") from None
    except SqsError as exc:
        raise CommandError(f"cannot send to {settings.sqs_queue_url}: {exc}") from None
    for error in report.errors:
        print(f"{name}:{error.number}: not sent: {error.reason}", file=sys.stderr)
    print(
        f"sent {report.sent} messages from {name}; {len(report.errors)} lines not sent",
        file=sys.stderr,
    )
    return 1 if report.errors else 0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "send",
        help="send each line of a JSON-lines file as one SQS message",
        description="Send each line of FILE (without its newline) as one SQS message body, "
        "byte for byte, in batches of ten. Lines SQS refuses are reported by number; "
        "the exit status is 1 if any line was not sent.",
    )
    parser.add_argument("file", metavar="FILE", help="JSON-lines file, or - for stdin")
    parser.add_argument(
        "--threads", type=int, default=8, help="concurrent SendMessageBatch calls (default 8)"
    )
    add_options(parser, SQS_OPTIONS, "SQS")
    parser.set_defaults(handler=run)
