"""A seeded random fault schedule (a "nemesis"), and the faults it strikes.

The schedule is pure (:func:`schedule`): the same seed gives the same
faults at the same times, so a failing run can be replayed exactly. The
faults act on a :class:`~tests.test_faults.FaultRun`'s processes, a
three-node :class:`~tests.support.brokers.Cluster` and the stack's
PostgreSQL, and each mends what it broke before the next one strikes.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stream.devstack.service import Service
from tests.support.brokers import Cluster

if TYPE_CHECKING:
    from tests.test_faults import FaultRun

#: What the nemesis can do; each is a method of :class:`Nemesis`.
FAULT_KINDS = (
    "kill_a_worker",
    "kill_the_bridge",
    "kill_a_broker",
    "pause_a_worker",
    "restart_postgres_immediately",
)


@dataclass(frozen=True)
class Strike:
    """One fault: when (seconds from the start) and which."""

    at: float
    kind: str


def schedule(seed: int, faults: int, span: float) -> list[Strike]:
    """*faults* strikes over *span* seconds, each kind at least once when
    there are enough faults, at random times in order."""
    rng = random.Random(seed)
    kinds = list(FAULT_KINDS)[:faults]
    kinds += [rng.choice(FAULT_KINDS) for _ in range(faults - len(kinds))]
    rng.shuffle(kinds)
    times = sorted(rng.uniform(0, span) for _ in kinds)
    return [Strike(round(at, 1), kind) for at, kind in zip(times, kinds, strict=True)]


class Nemesis:
    """Strikes faults at a running pipeline; names what it did."""

    def __init__(self, run: FaultRun, cluster: Cluster, postgres: Service, seed: int) -> None:
        self.run, self.cluster, self.postgres = run, cluster, postgres
        self.rng = random.Random(seed)
        self._names = (f"n{n}" for n in range(1, 1000))

    def strike(self, kind: str) -> str:
        method: Callable[[], str] = getattr(self, kind)
        return method()

    def _live(self, prefix: str) -> list[str]:
        return sorted(
            name
            for name, child in self.run.pipe.launcher.children.items()
            if name.startswith(prefix) and child.poll() is None
        )

    def kill_a_worker(self) -> str:
        launcher = self.run.pipe.launcher
        victim = self.rng.choice(self._live("worker"))
        launcher.kill(victim)
        replacement = f"worker-{next(self._names)}"
        launcher.start_worker(replacement)
        return f"kill -9 {victim}, started {replacement}"

    def kill_the_bridge(self) -> str:
        launcher = self.run.pipe.launcher
        (victim,) = self._live("bridge")
        launcher.kill(victim)
        replacement = f"bridge-{next(self._names)}"
        launcher.start_bridge(replacement)
        return f"kill -9 {victim}, started {replacement}"

    def kill_a_broker(self) -> str:
        node = self.rng.choice([n.node_id for n in self.cluster.nodes])
        self.cluster.kill(node)
        time.sleep(5)
        self.cluster.start(node)
        return f"kill -9 broker {node}, restarted 5 s later"

    def pause_a_worker(self) -> str:
        launcher = self.run.pipe.launcher
        victim = self.rng.choice(self._live("worker"))
        child = launcher.children[victim]
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(12)  # past the sandbox's 10 s group session: its partitions move
        os.kill(child.pid, signal.SIGCONT)
        return f"SIGSTOP {victim} for 12 s"

    def restart_postgres_immediately(self) -> str:
        service = self.postgres
        pid = int(service.pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown: no checkpoint
        while service.is_running():
            time.sleep(0.1)
        service.start()  # crash recovery from the WAL
        service.wait_ready()
        return "PostgreSQL stopped immediately (SIGQUIT), restarted"


def run_schedule(
    nemesis: Nemesis, strikes: list[Strike], between: Callable[[], None]
) -> Iterator[str]:
    """Strike each fault at its time, calling *between* while waiting
    (to send more messages, say); yield what each strike did."""
    started = time.monotonic()
    for strike in strikes:
        while time.monotonic() - started < strike.at:
            between()
            time.sleep(0.5)
        yield f"{time.monotonic() - started:5.1f} s {nemesis.strike(strike.kind)}"
