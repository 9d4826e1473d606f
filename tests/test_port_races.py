"""Ports taken between choosing and binding: the pure decisions, and telling a
port our own process listens on from one someone else holds (no stack needed)."""

from __future__ import annotations

import os
import socket

from stream.common.listeners import listening_inodes, listens_on, says_port_in_use
from stream.common.ports import any_free_port
from stream.devstack.restarts import ports_to_repick, services_to_restart

CLUSTER = {"kafka": "kafka", "kafka-2": "kafka", "kafka-3": "kafka", "elasticmq": "elasticmq"}


def test_a_kafka_node_that_lost_a_port_restarts_its_whole_cluster_and_nothing_else() -> None:
    assert services_to_restart({"kafka-3"}, CLUSTER) == {"kafka", "kafka-2", "kafka-3"}


def test_a_service_of_its_own_group_restarts_alone() -> None:
    assert services_to_restart({"elasticmq"}, CLUSTER) == {"elasticmq"}
    assert services_to_restart(set(), CLUSTER) == set()


def test_only_the_ports_someone_else_holds_are_picked_again() -> None:
    ports = {"kafka": 9092, "kafka_controller": 9093, "kafka_sasl": 9094}
    held = {9093}
    assert ports_to_repick(ports, ports, lambda port: port not in held) == ["kafka_controller"]


# /proc/net/tcp6 with a JVM listening on ::ffff:127.0.0.1:9092 (inode 4242)
# and a connection from that port (inode 4343), the columns after the inode cut.
LOOPBACK_9092 = "0000000000000000FFFF00000100007F:2384"
TCP6 = (
    "  sl local_address rem_address st tx_queue rx_queue tr tm->when retrnsmt uid timeout inode\n"
    f"   0: {LOOPBACK_9092} {'0' * 32}:0000 0A 00000000:00000000 00:00000000 00000000 0 0 4242\n"
    f"   1: {LOOPBACK_9092} {'0' * 24}0100007F:D2F0 01 00000000:00000000 00:00000000 0 0 0 4343\n"
)


def test_listening_sockets_are_found_by_port_in_the_kernels_table() -> None:
    assert listening_inodes(TCP6, 9092) == {4242}
    assert listening_inodes(TCP6, 9093) == set()


def test_a_port_counts_as_ours_only_while_this_process_listens_there() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", any_free_port()))
        port = listener.getsockname()[1]
        assert not listens_on(os.getpid(), [port])  # bound, not listening
        listener.listen()
        assert listens_on(os.getpid(), [port])
        assert not listens_on(os.getppid(), [port])  # someone else's port
        assert not listens_on(os.getpid(), [port, any_free_port()])


def test_each_servers_words_for_a_taken_port_are_recognised() -> None:
    assert says_port_in_use("java.net.BindException: Address already in use")
    assert says_port_in_use('could not bind IPv4 address "127.0.0.1": Address already in use')
    assert says_port_in_use("listen tcp 127.0.0.1:9090: bind: address already in use")
    assert says_port_in_use(
        "OSError: [Errno 98] error while attempting to bind on address "
        "('127.0.0.1', 6066): address already in use"
    )
    assert not says_port_in_use("Connection refused")
