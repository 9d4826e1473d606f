"""Process CPU time from /proc: steadier than wall-clock time on a shared machine.

A cost is reported as CPU seconds per message: the CPU time a process spent
while the messages went through, divided by their number.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields after "pid (comm)"


def cpu_seconds(pid: int) -> float:
    """User + system time of *pid*, plus that of its children it has waited for
    (a postmaster's exited backends)."""
    fields = _stat_fields(pid)
    # utime, stime, cutime, cstime are fields 14-17 of /proc/PID/stat.
    return sum(int(value) for value in fields[11:15]) / TICKS_PER_SECOND


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def tree_cpu_seconds(pid: int) -> float:
    """*pid* and its live children: a PostgreSQL server and its backends."""
    total = cpu_seconds(pid)
    for child in children(pid):
        try:
            total += cpu_seconds(child)
        except OSError:  # exited meanwhile: its time is now in the parent's
            continue
    return total
