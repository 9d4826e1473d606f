"""Run bridges and Faust workers as child processes (the demo, tests, benchmarks).

Each child gets the given environment and a log file of its own; stopping
sends SIGTERM (the graceful path a real deployment uses) and escalates to
SIGKILL only after a timeout. When the environment names a scrape targets
directory (``MASKSTREAM_SCRAPE_TARGETS_DIR``, set by ``stack up --prometheus``),
each bridge and worker is registered there for the stack's Prometheus while
it runs.

A bridge's or worker's port is checked free here and bound by the child a
second or more later; another process may take it in between. The launcher
waits until the child listens there itself (or exits, or gives up waiting),
and starts a child that lost its port again on another one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stream.common import settings as settings_module
from stream.common.listeners import BIND_ATTEMPTS, listens_on, says_port_in_use
from stream.common.ports import any_free_port

# Prometheus job of each kind of child (the compose file's jobs too).
WORKER_JOB = "maskstream-worker"
BRIDGE_JOB = "maskstream-bridge"
# How long to watch a child for losing its port. A worker binds its web port
# once its Kafka producer has started; one that waits longer (Kafka down on
# purpose in a fault case) is left to the caller, listening or not.
BIND_WATCH_SECONDS = 30.0
BIND_POLL_SECONDS = 0.05


@dataclass
class Launcher:
    """Starts children with *env* and writes their logs under *log_dir*."""

    env: Mapping[str, str]
    log_dir: Path
    children: dict[str, subprocess.Popen] = field(default_factory=dict)
    web_ports: dict[str, int] = field(default_factory=dict)
    workers: set[str] = field(default_factory=set)
    #: Picks a child's port; tests replace it to hand out a port taken meanwhile.
    pick_port: Callable[[], int] = any_free_port

    def _start(
        self, name: str, argv: list[str], extra_env: Mapping[str, str] | None
    ) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, **(extra_env or {})}
        with open(self.log_dir / f"{name}.log", "ab") as log:
            child = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        self.children[name] = child
        return child

    def start(
        self, name: str, argv: list[str], extra_env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        """Any other command (e.g. a benchmark's JVM) as a child named *name*."""
        return self._start(name, argv, extra_env)

    def start_worker(
        self, name: str, extra_env: Mapping[str, str] | None = None, app: str = "stream.app"
    ) -> subprocess.Popen:
        """``faust -A <app> worker`` with its own web port and data directory."""
        data_dir = self.log_dir / f"{name}-data"
        env = {"MASKSTREAM_DATA_DIR": str(data_dir), **(extra_env or {})}
        self.workers.add(name)

        def argv(port: int) -> list[str]:
            worker = ["-A", app, "worker", "-l", "info", "--web-port", str(port)]
            return [sys.executable, "-m", "faust", *worker]

        return self._start_on_a_port(name, WORKER_JOB, lambda port: (argv(port), env))

    def start_bridge(self, name: str = "bridge", *args: str) -> subprocess.Popen:
        """``python -m bridge`` with its metrics on a free port of its own."""
        argv = [sys.executable, "-m", "bridge", *args]
        return self._start_on_a_port(
            name, BRIDGE_JOB, lambda port: (argv, {"MASKSTREAM_BRIDGE_METRICS_PORT": str(port)})
        )

    def _start_on_a_port(
        self,
        name: str,
        job: str,
        command: Callable[[int], tuple[list[str], dict[str, str]]],
    ) -> subprocess.Popen:
        """Start *command* (argv and extra environment for a port) on a free
        port; again on another one, up to BIND_ATTEMPTS times, if the child
        lost it (a worker exits: aiohttp's errno 98; a bridge logs it and runs
        on without metrics)."""
        for _ in range(BIND_ATTEMPTS):
            port = self.web_ports[name] = self.pick_port()
            log_offset = self._log_size(name)
            argv, extra_env = command(port)
            child = self._start(name, argv, extra_env)
            self._register_target(name, job, port)
            if not self._lost_port(name, child, port, log_offset):
                break
            self.stop(name)
        return child

    def _lost_port(self, name: str, child: subprocess.Popen, port: int, log_offset: int) -> bool:
        """Watch *child* until it listens on *port* itself (False), says the
        port was in use (True), exits otherwise, or the watch ends (False)."""
        deadline = time.monotonic() + BIND_WATCH_SECONDS
        while time.monotonic() < deadline:
            exited = child.poll() is not None
            if says_port_in_use(self._log_since(name, log_offset)):
                return True
            if exited or listens_on(child.pid, [port]):
                return False
            time.sleep(BIND_POLL_SECONDS)
        return False

    def _log_size(self, name: str) -> int:
        try:
            return (self.log_dir / f"{name}.log").stat().st_size
        except OSError:
            return 0

    def _log_since(self, name: str, offset: int) -> str:
        with open(self.log_dir / f"{name}.log", "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def _target_file(self, name: str, job: str) -> Path | None:
        directory = settings_module.load({**os.environ, **self.env}).scrape_targets_dir
        return Path(directory) / f"{job}-{self.log_dir.name}-{name}.json" if directory else None

    def _register_target(self, name: str, job: str, port: int) -> None:
        """A file_sd entry for the stack's Prometheus (if it runs), removed at stop."""
        target = self._target_file(name, job)
        if target is not None:
            entry = [{"targets": [f"127.0.0.1:{port}"], "labels": {"process": name}}]
            target.write_text(json.dumps(entry))

    def _unregister_target(self, name: str) -> None:
        for job in (WORKER_JOB, BRIDGE_JOB):
            target = self._target_file(name, job)
            if target is not None:
                target.unlink(missing_ok=True)

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def failed(self) -> dict[str, str]:
        """Children that have exited with an error: name -> exit code and the
        end of their log's last traceback or error, so a failure says why."""
        return {
            name: f"exit code {child.returncode}; {last_error(self.log(name))}"
            for name, child in self.children.items()
            if child.poll()
        }

    def stop(
        self, name: str, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0
    ) -> int | None:
        """Signal one child and wait for it; SIGKILL if it outlives *timeout*."""
        child = self.children.pop(name, None)
        self._unregister_target(name)
        if child is None or child.poll() is not None:
            return None if child is None else child.returncode
        child.send_signal(sig)
        try:
            return child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()

    def signal_workers(self, sig: signal.Signals) -> None:
        """Send *sig* to every Faust worker still running."""
        for name in self.workers:
            child = self.children.get(name)
            if child is not None and child.poll() is None:
                child.send_signal(sig)

    def kill(self, name: str) -> None:
        """kill -9: no flush, no goodbye (fault injection)."""
        self.stop(name, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in list(self.children):
            self.stop(name)


def last_error(log: str, lines: int = 40) -> str:
    """The log from its last traceback (or, without one, its last ERROR line) on."""
    entries = log.splitlines()
    for marker in ("Traceback", "[ERROR]"):
        starts = [index for index, line in enumerate(entries) if marker in line]
        if starts:
            return "its log from the last error:\n" + "\n".join(
                entries[starts[-1] : starts[-1] + lines]
            )
    return "no error in its log"
