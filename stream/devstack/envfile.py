"""Reading and writing ``.stack/env``: one ``export KEY=VALUE`` line per variable.

The file is meant to be sourced by a shell (``. .stack/env``), so values are
shell-quoted when written and unquoted when read back.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path


def write_env_file(path: Path, variables: Mapping[str, str]) -> None:
    """Write *variables* as sourceable ``export`` lines, readable by the owner only.

    The file names the masking key ring, so it is created with mode 0600.
    """
    lines = [f"export {key}={shlex.quote(value)}" for key, value in variables.items()]
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    tmp.replace(path)


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a file written by :func:`write_env_file` (or by hand, same syntax)."""
    variables: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        parts = shlex.split(value)
        variables[key.strip()] = parts[0] if parts else ""
    return variables
