"""``maskstream-healthcheck``, the compose file's health check, run as the engine runs it.

The worker's own check, taken from docker-compose.yml word for word, is run
as a program (the console script installed next to this interpreter, as the
image's wheel installs it) against a small local HTTP server standing in
for the worker's web view: only its host and port are changed. Engines read
the exit status: 0 healthy, 1 unhealthy.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from stream.common.ports import any_free_port
from tests.test_compose import HEALTH_PROGRAM, health_command

# What the stand-in answers, by path: the worker's /health says 503 when its
# self-check finds the agent stopped or a partition stalled.
ANSWERS = {"/health": 200, "/unhealthy": 503, "/missing": 404}
SLOW_PATH = "/slow"


class StandIn(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == SLOW_PATH:
            time.sleep(3)
        status = ANSWERS.get(self.path, 200)
        body = b'{"status": "ok"}' if status == 200 else b'{"status": "unhealthy"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows stderr of failing tests only, and this is noise there."""


@pytest.fixture(scope="module")
def stand_in() -> Iterator[str]:
    """``http://127.0.0.1:PORT``, answering as :data:`ANSWERS` says."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def compose_check_against(origin: str, path: str | None = None) -> list[str]:
    """The worker's health check from docker-compose.yml, pointed at *origin*
    (and *path*), with the program resolved to this environment's console script."""
    kind, program, url, *rest = health_command("worker")
    assert kind == "CMD" and program == HEALTH_PROGRAM
    parts = urlsplit(url)
    target = urlsplit(origin)
    moved = urlunsplit((parts.scheme, target.netloc, path or parts.path, "", ""))
    installed = Path(sys.executable).with_name(program)
    assert installed.exists(), f"{program} is not installed: pip install -e '.[dev]'"
    return [str(installed), moved, *rest]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def test_a_2xx_answer_is_healthy(stand_in: str) -> None:
    done = run(compose_check_against(stand_in))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("/health: HTTP 200")


@pytest.mark.parametrize(("path", "status"), [("/unhealthy", 503), ("/missing", 404)])
def test_an_error_answer_is_unhealthy_in_one_line(stand_in: str, path: str, status: int) -> None:
    done = run(compose_check_against(stand_in, path))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"{stand_in}{path}: HTTP {status}"]


def test_nothing_listening_is_unhealthy_without_a_traceback() -> None:
    done = run(compose_check_against(f"http://127.0.0.1:{any_free_port()}"))
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_slow_answer_is_unhealthy_after_the_timeout(stand_in: str) -> None:
    started = time.monotonic()
    done = run([*compose_check_against(stand_in, SLOW_PATH), "--timeout", "0.5"])
    assert done.returncode == 1
    assert time.monotonic() - started < 3, "it waited for the answer"
    assert "timed out" in done.stderr


def test_a_bad_command_line_is_unhealthy_not_the_reserved_status_2() -> None:
    installed = Path(sys.executable).with_name(HEALTH_PROGRAM)
    assert run([str(installed)]).returncode == 1
    assert run([str(installed), "--help"]).returncode == 0
