"""Whether a given process listens on a port, and whether a log says it could not.

A port checked free and handed to a child can be taken by someone else before
the child binds it; "something answers on the port" then proves nothing (it
may be the other process, even the same kind of server of another stack). So
start-up checks ask the kernel which sockets *the child* owns: the inodes of
its socket descriptors (``/proc/<pid>/fd``) against the listening sockets of
``/proc/net/tcp`` and ``tcp6`` (a JVM binds 127.0.0.1 as ``::ffff:127.0.0.1``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
# The `st` column of a socket in the LISTEN state.
LISTEN_STATE = "0A"
# How each server says a port was taken: the errno text (EADDRINUSE) as the
# JVM ("java.net.BindException: Address already in use"), PostgreSQL, Go
# ("bind: address already in use") and asyncio/aiohttp ("[Errno 98] ... address
# already in use") print it.
PORT_IN_USE = re.compile(r"address already in use", re.IGNORECASE)
#: Starts of one server (a stack's, a launched bridge or worker) before giving
#: up on finding it a port nobody takes first.
BIND_ATTEMPTS = 5


def listening_inodes(table: str, port: int) -> set[int]:
    """Inodes of the sockets listening on *port* in one ``/proc/net/tcp*`` table."""
    inodes: set[int] = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN_STATE:
            continue
        local_port = fields[1].rsplit(":", 1)[-1]
        if int(local_port, 16) == port:
            inodes.add(int(fields[9]))
    return inodes


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets *pid* holds open (empty once it has gone)."""
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listens_on(pid: int, ports: Iterable[int]) -> bool:
    """True if process *pid* itself listens on every one of *ports*."""
    wanted = list(ports)
    tables = [_read(path) for path in TCP_TABLES]
    listening = [set().union(*(listening_inodes(t, port) for t in tables)) for port in wanted]
    if not all(listening):
        return False  # cheap answer before reading the process's descriptors
    owned = socket_inodes(pid)
    return all(inodes & owned for inodes in listening)


def says_port_in_use(log_text: str) -> bool:
    return PORT_IN_USE.search(log_text) is not None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
