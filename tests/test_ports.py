"""Free ports are picked where outgoing connections cannot take them first."""

from __future__ import annotations

import socket

from stream.common.ports import any_free_port, ephemeral_range_start, is_port_free


def test_free_ports_are_picked_below_the_ephemeral_range_and_are_free() -> None:
    top = ephemeral_range_start()
    ports = {any_free_port() for _ in range(20)}
    assert all(port < top for port in ports), (ports, top)
    assert all(is_port_free(port) for port in ports)
    assert len(ports) > 1  # picked at random, not one fixed port


def test_a_port_someone_listens_on_is_not_free() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", any_free_port()))
        listener.listen()
        assert not is_port_free(listener.getsockname()[1])
