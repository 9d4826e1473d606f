"""``maskstream-healthcheck URL``: a container health check, as one program.

The compose file's health checks run this rather than ``python -c "..."``:
an engine that joins a ``CMD`` array into a string and splits it again on
spaces (podman's Docker-compatible API does) turns a snippet into
``python -c import`` and every check fails, so ``service_healthy`` never
opens. ``["CMD", "maskstream-healthcheck", URL]`` has no element with a
space in it, so joining and re-splitting gives back the same argv.

Exit status as Docker and podman read it: 0 healthy (the URL answered
2xx), 1 unhealthy (anything else: a 503 from the worker's self-check, a
refused connection, a timeout, even a bad command line, since 2 is
reserved). It prints one line: the engine keeps it in the health log.
Only the standard library, so a check every few seconds costs little.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

HEALTHY = 0
UNHEALTHY = 1
# Below the compose file's `timeout: 10s`, so the engine sees our verdict
# rather than killing the check.
DEFAULT_TIMEOUT = 5.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskstream-healthcheck",
        description="Exit 0 if URL answers 2xx, 1 otherwise (a container health check).",
    )
    parser.add_argument("url", help="e.g. http://127.0.0.1:6066/health")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the answer (default {DEFAULT_TIMEOUT:g})",
    )
    return parser


def probe(url: str, timeout: float) -> tuple[bool, str]:
    """Whether *url* answers 2xx within *timeout*, and a line saying what happened."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return 200 <= answer.status < 300, f"{url}: HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return False, f"{url}: {' '.join(str(reason).split()) or type(reason).__name__}"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        # argparse exits 2 on a usage error, which engines reserve: say unhealthy.
        return HEALTHY if exit_.code == 0 else UNHEALTHY
    healthy, line = probe(args.url, args.timeout)
    print(line, file=sys.stdout if healthy else sys.stderr)
    return HEALTHY if healthy else UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())
