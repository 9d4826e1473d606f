"""Containers of a locally built image, run with buildah (tests only).

No container engine runs here. ``buildah run`` with chroot isolation on the
host's network stands in for ``docker run --network host``: it applies the
image's user, working directory and environment, and this module applies the
image's entrypoint and command from the image's own configuration, so a
container runs what ``docker run IMAGE ARGS`` would.

buildah answers SIGTERM by killing its child with SIGKILL, which would skip
the graceful shutdown under test; :meth:`Container.stop` therefore signals
the container's own first process, as ``docker stop`` signals PID 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "build-local.sh"
# The process through which buildah's chroot isolation runs a container's command.
CHROOT_EXEC = b"buildah-chroot-exec"


def buildah(*args: str, timeout: float = 120.0) -> str:
    """Run one buildah command; its standard output, stripped."""
    done = subprocess.run(
        ["buildah", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode:
        raise RuntimeError(f"buildah {args[0]} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass(frozen=True)
class ImageConfig:
    """What an image says a container of it runs, and as whom."""

    user: str
    entrypoint: tuple[str, ...]
    command: tuple[str, ...]
    volumes: tuple[str, ...]

    @classmethod
    def of(cls, image: str) -> ImageConfig:
        config = json.loads(buildah("inspect", "--type", "image", image))["OCIv1"]["config"]
        return cls(
            user=config.get("User", ""),
            entrypoint=tuple(config.get("Entrypoint") or ()),
            command=tuple(config.get("Cmd") or ()),
            volumes=tuple(config.get("Volumes") or ()),
        )


def image_size(image: str) -> str:
    """The image's size, all layers, as buildah prints it (e.g. "255 MB")."""
    return str(json.loads(buildah("images", "--json", image))[0]["size"])


@dataclass
class Container:
    """One working container of *image*; remove it with :meth:`remove`.

    *env* is the whole environment given to it (nothing of the host's leaks
    in); *read_only* maps host files to paths inside.
    """

    image: str
    name: str
    env: Mapping[str, str] = field(default_factory=dict)
    read_only: Mapping[Path, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config = ImageConfig.of(self.image)
        buildah("from", "--pull=never", "--name", self.name, self.image)

    def argv(self, args: Sequence[str] = (), *, entrypoint: bool = True) -> list[str]:
        """The ``buildah run`` command line for ``docker run IMAGE *args*``
        (or, without *entrypoint*, for ``docker run --entrypoint ARGS[0] ...``)."""
        command = list(args) or list(self.config.command)
        if entrypoint:
            command = [*self.config.entrypoint, *command]
        options = ["--isolation", "chroot", "--network", "host"]
        for name, value in self.env.items():
            options += ["--env", f"{name}={value}"]
        for source, target in self.read_only.items():
            options += ["--volume", f"{source}:{target}:ro"]
        return ["buildah", "run", *options, self.name, "--", *command]

    def run(
        self, args: Sequence[str] = (), *, entrypoint: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion; its exit status and output."""
        return subprocess.run(
            self.argv(args, entrypoint=entrypoint),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @staticmethod
    def first_process(runner: subprocess.Popen) -> int | None:
        """The container's own first process under the ``buildah run`` *runner*
        (what PID 1 would be), or None once it has gone."""
        for pid in _descendants(runner.pid):
            if _cmdline(pid).startswith(CHROOT_EXEC):
                children = _children(pid)
                return children[0] if children else None
        return None

    @classmethod
    def stop(cls, runner: subprocess.Popen, timeout: float = 60.0) -> int:
        """``docker stop``: SIGTERM to the container's first process, then
        wait for *runner* (SIGKILL after *timeout*); the container's exit status."""
        deadline = time.monotonic() + 10
        while (pid := cls.first_process(runner)) is None and runner.poll() is None:
            assert time.monotonic() < deadline, "the container's process never started"
            time.sleep(0.1)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        try:
            return runner.wait(timeout)
        except subprocess.TimeoutExpired:
            runner.kill()
            return runner.wait()

    def remove(self) -> None:
        buildah("rm", self.name)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces and parentheses: split after the last ')'.
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def _descendants(pid: int) -> list[int]:
    out, frontier = [], [pid]
    while frontier:
        children = [child for parent in frontier for child in _children(parent)]
        out += children
        frontier = children
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
