"""``make test``: the suite in two lanes at once, each on a local stack of its own.

Why two: most of the suite's time is spent waiting (servers starting and
stopping, outages, idle timeouts), and the fault-injection suite (``-m
faults``) alone is over a third of it. Run one after the other on two cores,
the suite took about 40 minutes; side by side, the waits of one lane overlap
the work of the other. The fault lane needs a stack of its own anyway: it
stops and restarts its stack's Kafka and PostgreSQL, which would break the
other lane's tests.

The main lane's stack starts first, so it holds the conventional ports and
the fault lane's servers get free ones from the range no other test picks
by default (stream.common.ports). Each lane's output goes to a log file
beside its stack; the main lane's is printed as it runs, the fault lane's
once it ends. The exit status is non-zero if either lane failed.

``python -m tests.lanes ARGS...`` with pytest arguments runs one lane with
them instead (``make test-quick``, ``make chaos``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Lane:
    """One pytest process, on the stack in *stack_dir*."""

    name: str
    pytest_args: tuple[str, ...]
    stack_dir: Path
    stack_args: tuple[str, ...]  # of `maskstream stack up`

    def env(self) -> dict[str, str]:
        return {**os.environ, "MASKSTREAM_STACK_DIR": str(self.stack_dir)}

    def stack(self, *args: str, quiet: bool = False) -> int:
        output = subprocess.DEVNULL if quiet else None
        command = [sys.executable, "-m", "stream.cli", "stack", *args]
        return subprocess.run(command, env=self.env(), cwd=REPO_ROOT, stdout=output).returncode

    def pytest(self, log: Path | None) -> subprocess.Popen[bytes]:
        """Start pytest; its output goes to *log* (and nowhere else) if given."""
        command = [sys.executable, "-m", "pytest", *self.pytest_args]
        # Each lane's temporary directories of its own: pytest's clean-up of
        # old numbered directories must not remove the other lane's.
        command.append(f"--basetemp={self.stack_dir}-pytest")
        output = open(log, "wb") if log is not None else None  # noqa: SIM115 (the child holds it)
        try:
            return subprocess.Popen(
                command, env=self.env(), cwd=REPO_ROOT, stdout=output, stderr=output
            )
        finally:
            if output is not None:
                output.close()

    def stop(self) -> None:
        """Stop the lane's stack and the three-broker cluster its tests may start."""
        self.stack("down")
        brokers = Lane(self.name, (), Path(f"{self.stack_dir}-brokers"), ())
        brokers.stack("down", quiet=True)


def lanes(stack_dir: Path) -> list[Lane]:
    """The main lane (the exercise's servers too) and the fault lane."""
    return [
        Lane("main", ("-m", "not faults"), stack_dir, ("--exercise",)),
        Lane("faults", ("-m", "faults"), Path(f"{stack_dir}-faults"), ()),
    ]


def run_lanes(running: list[Lane]) -> int:
    """Bring each lane's stack up, run the lanes at once, stop the stacks."""
    status = 0
    try:
        for lane in running:
            if lane.stack("up", *lane.stack_args, quiet=True) != 0:
                print(f"the {lane.name} lane's stack did not come up", file=sys.stderr)
                return 1
        logs = {lane.name: Path(f"{lane.stack_dir}-pytest.log") for lane in running[1:]}
        children = [(lane, lane.pytest(logs.get(lane.name))) for lane in running]
        for lane, child in children:
            code = child.wait()
            if lane.name in logs:
                print(f"\n==== the {lane.name} lane ({' '.join(lane.pytest_args)}) ====")
                sys.stdout.write(logs[lane.name].read_text(errors="replace"))
            print(f"==== the {lane.name} lane: {'passed' if code == 0 else f'exit {code}'}")
            status = status or code
        return status
    finally:
        for lane in running:
            lane.stop()


def main(argv: list[str]) -> int:
    stack_dir = Path(os.environ.get("MASKSTREAM_STACK_DIR", ".stack-test")).absolute()
    if argv:
        return run_lanes([Lane("main", tuple(argv), stack_dir, ("--exercise",))])
    return run_lanes(lanes(stack_dir))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
