"""``maskstream seen TOKEN``: one masked device's ``seen_devices`` entry.

Asks a running worker's web view; the worker routes the request to the one
that owns the device's partition, so any worker's address will do.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime

from stream.common import settings as settings_module
from stream.common.errors import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "seen",
        help="show a masked device's entry in the seen_devices table",
        description="Look up masked device ids in the workers' seen_devices table "
        "(first seen, last seen, login count).",
    )
    parser.add_argument("devices", nargs="+", metavar="MASKED_DEVICE_ID")
    parser.add_argument(
        "--worker",
        default=None,
        help="a worker's web address (default http://127.0.0.1:$MASKSTREAM_WEB_PORT)",
    )
    parser.set_defaults(handler=run)


def entry_url(worker: str, device: str) -> str:
    return f"{worker.rstrip('/')}/seen-devices/{urllib.parse.quote(device, safe='')}/"


def describe(entry: dict) -> str:
    def when(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")

    return (
        f"{entry['device']}  logins={entry['login_count']}  "
        f"first={when(entry['first_seen_ms'])}  last={when(entry['last_seen_ms'])}"
    )


def run(args: argparse.Namespace) -> int:
    worker = args.worker or f"http://127.0.0.1:{settings_module.load().worker_web_port}"
    status = 0
    for device in args.devices:
        try:
            with urllib.request.urlopen(entry_url(worker, device), timeout=10) as response:
                print(describe(json.load(response)))
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise CommandError(f"worker at {worker} answered {exc.code}") from None
            print(f"{device}  not seen")
            status = 1
        except OSError as exc:
            raise CommandError(f"no worker answers at {worker} ({exc})") from None
    return status
