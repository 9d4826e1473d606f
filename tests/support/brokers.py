"""The fault suite's three-node Kafka cluster: find leaders and the active
controller, break a node, and wait until its replicas are back in sync.

The cluster is a whole stack (``maskstream stack up --brokers 3``) in a
directory of its own next to the test stack, so breaking it disturbs no
other test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from stream.common.kafka_security import KafkaClients
from stream.devstack.kafka import Kafka
from stream.devstack.manager import Stack
from stream.devstack.processes import read_pid

BROKERS = 3


class Cluster:
    """The Kafka nodes of one stack directory, and what the fault cases do to them."""

    def __init__(self, stack_dir: Path) -> None:
        self.stack = Stack(stack_dir, brokers=BROKERS)

    @property
    def nodes(self) -> list[Kafka]:
        return self.stack.kafka_nodes()

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> Kafka:
        return self.nodes[node_id - 1]

    def pid(self, node_id: int) -> int:
        pid = read_pid(self.node(node_id).pid_file)
        assert pid is not None, f"node {node_id} has no pid"
        return pid

    # -- who does what ---------------------------------------------------------

    def active_controller(self) -> int:
        """The KRaft quorum leader, as the running node with the latest epoch knows it."""
        known = [node.quorum_leader() for node in self.nodes if node.is_running()]
        leaders = [leader for leader in known if leader is not None]
        assert leaders, "no node knows a quorum leader"
        return max(set(leaders), key=leaders.count)

    def leaders(self, topic: str) -> dict[int, int]:
        """Partition -> leader node id of *topic*."""
        description = asyncio.run(self._describe([topic]))[0]
        return {p["partition"]: p["leader"] for p in description["partitions"]}

    def busiest_partition(self, topic: str) -> int:
        """The partition of *topic* holding the most records."""
        ends = asyncio.run(self._end_offsets(topic))
        return max(ends, key=ends.__getitem__)

    def replication(self, topics: Iterable[str]) -> dict[str, tuple[int, str]]:
        """Topic -> (fewest replicas of a partition, min.insync.replicas)."""
        return asyncio.run(self._replication(list(topics)))

    # -- faults ------------------------------------------------------------------

    def kill(self, node_id: int) -> None:
        os.kill(self.pid(node_id), signal.SIGKILL)
        node = self.node(node_id)
        while node.is_running():
            time.sleep(0.05)

    def start(self, node_id: int) -> None:
        node = self.node(node_id)
        if not node.is_running():
            node.start()
        try:
            node.wait_ready()
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {process_facts(node)}") from None

    def pause(self, node_id: int) -> None:
        os.kill(self.pid(node_id), signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        os.kill(self.pid(node_id), signal.SIGCONT)

    def restart(self, node_id: int) -> None:
        """A graceful restart, as an operator's upgrade does it."""
        self.node(node_id).stop()
        self.start(node_id)

    def wait_in_sync(self, timeout: float = 180.0) -> None:
        """Block until every partition of every topic has all its replicas in sync."""
        deadline = time.monotonic() + timeout
        while lagging := asyncio.run(self._under_replicated()):
            assert time.monotonic() < deadline, f"replicas not back in sync: {lagging[:5]}"
            time.sleep(1.0)

    def heal(self) -> None:
        """Every node running (and not paused), every replica in sync."""
        for node in self.nodes:
            if node.is_running():
                self.resume(node.node_id)
            self.start(node.node_id)
        self.wait_in_sync()

    # -- admin ---------------------------------------------------------------------

    @property
    def _kafka(self) -> KafkaClients:
        return KafkaClients(self.bootstrap)

    async def _describe(self, topics: list[str] | None) -> list[dict]:
        async with self._kafka.admin_session(request_timeout_ms=10_000) as admin:
            return await admin.describe_topics(topics)

    async def _under_replicated(self) -> list[str]:
        try:
            descriptions = await self._describe(None)
        except Exception as exc:  # a node still joining: ask again
            return [repr(exc)]
        return [
            f"{d['topic']}:{p['partition']}"
            for d in descriptions
            for p in d["partitions"]
            if len(p["isr"]) < len(p["replicas"]) or p["leader"] < 0
        ]

    async def _end_offsets(self, topic: str) -> dict[int, int]:
        from aiokafka import TopicPartition

        consumer = self._kafka.consumer()
        await consumer.start()
        try:
            (description,) = await self._describe([topic])
            partitions = [TopicPartition(topic, p["partition"]) for p in description["partitions"]]
            return {
                tp.partition: end for tp, end in (await consumer.end_offsets(partitions)).items()
            }
        finally:
            await consumer.stop()

    async def _replication(self, topics: list[str]) -> dict[str, tuple[int, str]]:
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        from stream.common.topic_admin import replicas_of

        async with self._kafka.admin_session(request_timeout_ms=10_000) as admin:
            descriptions = await admin.describe_topics(topics)
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
            )
        in_sync = {
            resource[3]: dict((entry[0], entry[1]) for entry in resource[4])["min.insync.replicas"]
            for response in responses
            for resource in response.resources
        }
        return {d["topic"]: (replicas_of(d), in_sync[d["topic"]]) for d in descriptions}


def process_facts(node: Kafka) -> str:
    """What /proc says about *node*'s recorded pid (a start-up failure's evidence)."""
    pid = read_pid(node.pid_file)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()[:80]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError as exc:
        return f"pid {pid}: {exc}"
    return (
        f"pid {pid}: stat {stat!r}; cmdline {len(cmdline)} bytes, "
        f"marker {'in' if node.marker.encode() in cmdline else 'NOT in'} it; "
        f"running now: {node.is_running()}"
    )
