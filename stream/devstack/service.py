"""What every service of the local stack has in common.

A service owns a directory under the stack directory holding its config,
data, log and pid file. The directory's path appears in the service's command
line, which is how we recognise our own processes (see :mod:`processes`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from stream.devstack import processes


class Service(ABC):
    """One server process of the stack: start it, know when it answers, stop it."""

    name: str
    #: Seconds to wait for the service to answer after starting it.
    ready_timeout: float = 90.0

    def __init__(self, stack_dir: Path, ports: dict[str, int]) -> None:
        self.dir = (stack_dir / self.name).resolve()
        self.ports = ports
        self.log_file = self.dir / f"{self.name}.log"
        self.pid_file = self.dir / "pid"

    @property
    def marker(self) -> str:
        return str(self.dir)

    def is_running(self) -> bool:
        return processes.is_running(processes.read_pid(self.pid_file), self.marker)

    @abstractmethod
    def start(self) -> None:
        """Prepare what is missing (config, data directory) and launch the process."""

    @abstractmethod
    def is_ready(self) -> bool:
        """True once the service answers its own protocol, not merely its port."""

    def wait_ready(self) -> None:
        try:
            processes.wait_until(self._ready_or_dead, self.ready_timeout, self.name)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; see its log: {self.log_file}") from None

    def _ready_or_dead(self) -> bool:
        if not self.is_running():
            raise RuntimeError(f"{self.name} exited during start-up; see its log: {self.log_file}")
        return self.is_ready()

    def stop(self) -> bool:
        """Stop the process if it runs; True if there was one to stop."""
        return processes.stop_process(self.pid_file, self.marker)

    @abstractmethod
    def environment(self) -> dict[str, str]:
        """Variables for ``.stack/env`` that point clients at this service."""
