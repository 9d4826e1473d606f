"""Choose listening ports: the conventional default if it is free, else any free one.

A port chosen here is usually bound later by another process (a worker's web
server, a bridge's metrics, a server of the local stack), seconds after the
check. A port from the kernel's ephemeral range may meanwhile become the
local end of some outgoing connection (every Kafka, PostgreSQL or SQS client
on the machine takes one per connection), and the child then fails to bind.
So free ports are picked below that range, where only listeners go.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Listening ports are picked from here up to the start of the ephemeral range.
LOWEST_PICKED_PORT = 20_000
# Linux's default ephemeral range, if /proc does not say.
DEFAULT_EPHEMERAL_START = 32_768
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def is_port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_range_start() -> int:
    """The lowest port the kernel hands to outgoing connections."""
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_START


def any_free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, outside the ephemeral range when that leaves
    room (else any port the kernel calls free)."""
    top = ephemeral_range_start()
    if top - LOWEST_PICKED_PORT >= 1_000:
        for _ in range(100):
            port = random.randrange(LOWEST_PICKED_PORT, top)
            if is_port_free(port, host):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def choose_port(preferred: int, taken: set[int]) -> int:
    """*preferred* if nothing listens there and we have not handed it out, else a free one."""
    if preferred not in taken and is_port_free(preferred):
        taken.add(preferred)
        return preferred
    return fresh_port(taken)


def fresh_port(taken: set[int]) -> int:
    """A free port not in *taken* (which it joins): for a server that lost its
    port to another process, where the conventional default is the contended one."""
    while True:
        port = any_free_port()
        if port not in taken:
            taken.add(port)
            return port


def is_listening(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
