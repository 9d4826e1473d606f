"""Find the programs the local stack needs, or say exactly how to install them.

A missing prerequisite is the most likely failure on a fresh machine, so it
gets a one-line message naming the program and the install command instead
of a stack trace from deep inside :mod:`subprocess`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

POSTGRES_LIB = Path("/usr/lib/postgresql")


class MissingPrerequisite(Exception):
    """A program the stack needs is not installed; the message says how to fix it."""


def require_program(name: str, install: str) -> str:
    """Return the absolute path of *name* on PATH, or raise naming *install*."""
    path = shutil.which(name)
    if path is None:
        raise MissingPrerequisite(f"`{name}` is not installed; install it with: {install}")
    return path


def require_java() -> str:
    return require_program("java", "apt-get install -y openjdk-17-jre-headless")


def require_maven() -> str:
    return require_program("mvn", "apt-get install -y maven")


def require_prometheus() -> str:
    return require_program("prometheus", "apt-get install -y prometheus")


def require_promtool() -> str:
    return require_program("promtool", "apt-get install -y prometheus")


def postgres_bin_dir() -> Path:
    """The newest PostgreSQL server's bin directory from Debian's packages."""
    candidates = sorted(
        (p for p in POSTGRES_LIB.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise MissingPrerequisite(
            "PostgreSQL server binaries (initdb, pg_ctl) were not found under "
            f"{POSTGRES_LIB}; install them with: apt-get install -y postgresql"
        )
    return candidates[-1]
