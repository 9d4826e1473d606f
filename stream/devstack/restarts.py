"""What to start again when a service lost a port between choosing and binding it.

A port is checked free, recorded, and bound by the server seconds later (a
JVM starting); another process (often another stack starting at the same
moment, wanting the same defaults) can bind it first. The server then fails
and is started again on another port, a bounded number of times. Pure logic;
:mod:`stream.devstack.manager` does the stopping, starting and waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from stream.common.listeners import BIND_ATTEMPTS


def services_to_restart(port_taken: Collection[str], groups: Mapping[str, str]) -> set[str]:
    """The services that lost a port, and every service of the same group:
    a Kafka cluster's nodes name each other's controller ports in their
    config, so one node's new port means new configs, hence restarts, for all."""
    lost = {groups[name] for name in port_taken}
    return {name for name, group in groups.items() if group in lost}


def ports_to_repick(
    keys: Collection[str], ports: Mapping[str, int], is_free: Callable[[int], bool]
) -> list[str]:
    """Which of a stopped service's *keys* need a new port: those something
    else now holds. The others keep theirs, so clients (and a one-node Kafka's
    recorded controller address) see as few changes as possible."""
    return [key for key in keys if not is_free(ports[key])]


def give_up_message(name: str, log_file: Path) -> str:
    return (
        f"{name} could not bind its ports in {BIND_ATTEMPTS} attempts (each taken by "
        f"another process before it started); see its log: {log_file}"
    )
