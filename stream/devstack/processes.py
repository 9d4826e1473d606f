"""Start and stop the stack's background processes, and only those.

Each service runs in its own session (process group) with its output in a log
file under the stack directory. Its pid is recorded in a pid file together with
a marker that must appear in the process's command line, so `down` never
signals an unrelated process that happens to reuse a recorded pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def start_background(
    argv: Sequence[str], log_file: Path, pid_file: Path, cwd: Path | None = None
) -> int:
    """Start *argv* detached from this process; return its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
    _await_command_line(proc)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def _await_command_line(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Wait until the child's command line is readable.

    Popen returns once the exec is past its point of no return, but the
    kernel sets up the new program's arguments a moment later: until then
    /proc/<pid>/cmdline is empty, and on a loaded machine a check made in
    that window (`is_running`, which looks for the marker there) took a
    starting broker for one that had exited.
    """
    deadline = time.monotonic() + timeout
    while not command_line(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def is_running(pid: int | None, marker: str) -> bool:
    """True if *pid* is alive (not a zombie) and its command line contains *marker*."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return marker in command_line(pid)


def stop_process(pid_file: Path, marker: str, timeout: float = 20.0) -> bool:
    """SIGTERM the recorded process group, SIGKILL it after *timeout*; True if one ran."""
    pid = read_pid(pid_file)
    if not is_running(pid, marker):
        pid_file.unlink(missing_ok=True)
        return False
    assert pid is not None
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_running(pid, marker):
        time.sleep(0.1)
    if is_running(pid, marker):
        _signal_group(pid, signal.SIGKILL)
        while is_running(pid, marker):
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the whole group when *pid* leads one (our JVMs), else just *pid*."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.25
) -> None:
    """Poll *check* until it returns true; raise TimeoutError naming *what*."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not become ready within {timeout:.0f} s")
        time.sleep(interval)
