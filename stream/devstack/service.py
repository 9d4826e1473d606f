"""What every service of the local stack has in common.

A service owns a directory under the stack directory holding its config,
data, log and pid file. The directory's path appears in the service's command
line, which is how we recognise our own processes (see :mod:`processes`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from pathlib import Path

from stream.common.listeners import listens_on, says_port_in_use
from stream.devstack import processes


class Startup(Enum):
    """Where a starting service stands."""

    STARTING = "starting"
    READY = "ready"
    #: It could not bind a port of its own: someone took it after it was chosen.
    PORT_TAKEN = "port taken"


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
        # Logs are appended to: only what this start wrote tells how it went.
        self._log_offset = self._log_size()

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def log_since_start(self) -> str:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    @abstractmethod
    def port_keys(self) -> list[str]:
        """The keys of the stack's port table naming the ports this service listens on."""

    @property
    def restart_group(self) -> str:
        """Services that must restart together when one of them changes ports."""
        return self.name

    @property
    def marker(self) -> str:
        return str(self.dir)

    def is_running(self) -> bool:
        return processes.is_running(processes.read_pid(self.pid_file), self.marker)

    @abstractmethod
    def start(self) -> None:
        """Prepare what is missing (config, data directory) and launch the process."""

    def launch(self) -> Startup:
        """:meth:`start`, telling a port taken from under it (a server that
        refuses to start, like pg_ctl's, says so only in its log) from other failures."""
        self._log_offset = self._log_size()
        try:
            self.start()
        except RuntimeError:
            if says_port_in_use(self.log_since_start()):
                return Startup.PORT_TAKEN
            raise
        return Startup.STARTING

    def prepare_restart(self) -> None:
        """Called with the process stopped, before starting it on other ports:
        drop whatever recorded the old ones (nothing, for most services)."""
        return None

    def startup(self) -> Startup:
        """Where the start stands; RuntimeError if the process died of anything
        but a taken port. Ready means answering on ports the process itself
        holds: another stack's server answering on a port ours lost is not ours."""
        running = self.is_running()
        if says_port_in_use(self.log_since_start()):
            # Some servers log the failed bind and carry on without the listener.
            return Startup.PORT_TAKEN
        if not running:
            raise RuntimeError(f"{self.name} exited during start-up; see its log: {self.log_file}")
        pid = processes.read_pid(self.pid_file)
        ports = [self.ports[key] for key in self.port_keys()]
        if pid is not None and listens_on(pid, ports) and self.is_ready():
            return Startup.READY
        return Startup.STARTING

    @abstractmethod
    def is_ready(self) -> bool:
        """True once the service answers its own protocol, not merely its port."""

    def wait_ready(self) -> None:
        """Wait until it answers on its recorded ports (no other port will do for
        clients that already know them)."""
        try:
            processes.wait_until(self._ready_or_failed, self.ready_timeout, self.name)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; see its log: {self.log_file}") from None

    def _ready_or_failed(self) -> bool:
        state = self.startup()
        if state is Startup.PORT_TAKEN:
            raise RuntimeError(
                f"{self.name} could not bind its port, another process holds it; "
                f"see its log: {self.log_file}"
            )
        return state is Startup.READY

    def stop(self) -> bool:
        """Stop the process if it runs; True if there was one to stop."""
        return processes.stop_process(self.pid_file, self.marker)

    @abstractmethod
    def environment(self) -> dict[str, str]:
        """Variables for ``.stack/env`` that point clients at this service."""
