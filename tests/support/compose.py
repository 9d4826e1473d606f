"""docker-compose.yml run with podman-compose on podman (tests only).

The project is a copy of the working tree's tracked files, so the key ring
the test makes (and gives to uid 10001, as docs/operations.md tells users)
never touches the checkout's own ``secrets/``. Every command runs with a
clean environment: the project's own podman settings (``CONTAINERS_CONF``),
its own compose project name and free host ports, and nothing of the local
stack's variables that the test session exports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stream.common.ports import any_free_port

# Docker's and podman's health check durations are in nanoseconds.
NANOSECONDS = 1e9

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO_ROOT / "docker" / "podman" / "containers.conf"
STANDINS_SCRIPT = REPO_ROOT / "docker" / "standins" / "build.sh"
# The image's user, who must be able to read the key-ring secret.
IMAGE_USER = 10001
# Host ports the compose file publishes, each chosen free for the test.
HOST_PORTS = ("SQS_HOST_PORT", "KAFKA_HOST_PORT", "POSTGRES_HOST_PORT")


def podman_compose() -> str:
    """The podman-compose of this interpreter's environment (installed with `.[dev]`)."""
    return str(Path(sys.executable).with_name("podman-compose"))


def missing_tools() -> list[str]:
    """What the compose test cannot run without, by the command that lacks."""
    tools = ["podman", "buildah", "mvn", "unzip", "xz"]
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not Path(podman_compose()).exists():
        missing.append("podman-compose")
    return missing


def copy_tracked_files(destination: Path) -> None:
    """The working tree's tracked files (as they are now, edits included)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@dataclass
class ComposeProject:
    """One compose project in *directory*, named *name*."""

    directory: Path
    name: str
    ports: dict[str, int] = field(default_factory=dict)
    # Anonymous volumes seen on the project's containers (the workers' data):
    # `down` leaves them behind, unnamed; remove() deletes them.
    anonymous_volumes: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.ports:
            self.ports = {variable: any_free_port() for variable in HOST_PORTS}

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "CONTAINERS_CONF": str(CONTAINERS_CONF),
            "COMPOSE_PROJECT_NAME": self.name,
            **{variable: str(port) for variable, port in self.ports.items()},
            # Another storage for podman's images and containers, if one is chosen.
            **{k: v for k, v in os.environ.items() if k == "CONTAINERS_STORAGE_CONF"},
        }

    @property
    def database_url(self) -> str:
        port = self.ports["POSTGRES_HOST_PORT"]
        return f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres"

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 300.0,
        check: bool = True,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """A command in the project's directory and environment; raises with
        its output if *check* and it failed."""
        done = subprocess.run(
            list(argv),
            input=input_text,
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode:
            raise AssertionError(
                f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                f"{done.stderr[-3000:]}"
            )
        return done

    def compose(
        self, *args: str, timeout: float = 600.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        if "down" in args:
            self.track_volumes()
        return self.run([podman_compose(), *args], timeout=timeout, check=check)

    def podman(self, *args: str, timeout: float = 120.0) -> str:
        return self.run(["podman", *args], timeout=timeout).stdout

    def image_id(self, image: str) -> str | None:
        done = self.run(["podman", "image", "inspect", "--format", "{{.Id}}", image], check=False)
        return done.stdout.strip() or None

    def containers(self, service: str | None = None) -> list[str]:
        """Names of the project's containers (of *service*), running or not."""
        labels = [f"label=io.podman.compose.project={self.name}"]
        if service:
            labels.append(f"label=io.podman.compose.service={service}")
        filters = [arg for label in labels for arg in ("--filter", label)]
        listed = self.podman("ps", "-a", *filters, "--format", "{{.Names}}")
        return sorted(listed.split())

    def inspect(self, container: str) -> dict:
        return json.loads(self.podman("inspect", container))[0]

    def volumes_of(self, container: str) -> dict[str, str]:
        """Mount point -> volume name, for *container*'s volumes."""
        mounts = self.inspect(container)["Mounts"]
        return {m["Destination"]: m["Name"] for m in mounts if m["Type"] == "volume"}

    def healthy(self, container: str) -> bool:
        """Run *container*'s health check once (podman's timers need systemd)."""
        checked = self.run(["podman", "healthcheck", "run", container], check=False)
        return checked.returncode == 0

    def becomes_healthy(self, container: str) -> bool:
        """Run *container*'s health check until it passes, for as long as its
        configuration gives it: a container failing checks within its start
        period, then for fewer than its retries, is "starting", not unhealthy
        (a worker still joining its group does not serve its checks yet)."""
        check = self.inspect(container)["Config"]["Healthcheck"]
        interval = check.get("Interval", 30 * NANOSECONDS) / NANOSECONDS
        allowed = check.get("StartPeriod", 0) / NANOSECONDS + interval * check.get("Retries", 3)
        deadline = time.monotonic() + allowed
        while not self.healthy(container):
            if time.monotonic() > deadline:
                return False
            time.sleep(min(interval, 2.0))
        return True

    def track_volumes(self) -> None:
        for container in self.containers():
            for name in self.volumes_of(container).values():
                if not name.startswith(f"{self.name}_"):
                    self.anonymous_volumes.add(name)

    def logs(self, container: str) -> str:
        done = self.run(["podman", "logs", container], check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        """Containers, pod, network and every volume of the project, the
        workers' anonymous ones included (podman-compose's `down -v` leaves
        those), whatever state a failed test left them in."""
        self.compose("stop", "bridge", "worker", check=False)  # see test_compose_stack
        self.compose("down", "-v", check=False)
        for container in self.containers():
            self.run(["podman", "rm", "--force", "--volumes", container], check=False)
        self.run(["podman", "pod", "rm", "--force", f"pod_{self.name}"], check=False)
        self.run(["podman", "network", "rm", "--force", f"{self.name}_default"], check=False)
        named = self.podman("volume", "ls", "--quiet", "--filter", f"name={self.name}_").split()
        for volume in sorted(self.anonymous_volumes | set(named)):
            self.run(["podman", "volume", "rm", "--force", volume], check=False)
