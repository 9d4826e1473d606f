"""Every read of Faust's private members outside the transport, in one place.

faust-streaming has no public way to reach these, and each is pinned by the
exact version in pyproject.toml; an upgrade is checked against this module
and :mod:`stream.worker.faust_patches.transport`.
"""

from __future__ import annotations

from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.protocol.metadata import MetadataRequest


def aiokafka_producer(app: faust.types.AppT) -> AIOKafkaProducer:
    """The aiokafka producer inside Faust's, which Faust flushes before each
    offset commit: records sent through it are covered by that flush."""
    return app.producer._ensure_producer()  # type: ignore[attr-defined]


def agent_actors(agent: faust.types.AgentT) -> list[Any]:
    """The running actors of *agent* (one per concurrency slot)."""
    return list(agent._actors)  # type: ignore[attr-defined]


def partition_count(app: faust.types.AppT, topic: str) -> int | None:
    """How many partitions *topic* has in the worker's consumer metadata
    (refreshed every few seconds), None while unknown. Faust's public
    ``consumer.topic_partitions`` reads the group's subscription snapshot,
    which only the group's leader keeps: None on every other worker."""
    consumer = app.consumer._thread._ensure_consumer()  # type: ignore[attr-defined]
    partitions = consumer.partitions_for_topic(topic)
    return len(partitions) if partitions else None


def recovery_completed(app: faust.types.AppT) -> bool:
    """Whether the tables have recovered from their changelogs since the last rebalance."""
    return bool(app.tables.recovery.completed.is_set())  # type: ignore[attr-defined]


async def kafka_cluster_id(app: faust.types.AppT) -> str | None:
    """The id of the Kafka cluster *app* talks to (None from a broker too old
    to say), asked through its producer's client: Faust does not keep it."""
    client = aiokafka_producer(app).client
    response = await client.send(client.get_random_node(), MetadataRequest([]))
    return getattr(response, "cluster_id", None)


def rebuild_changelog_topic(table: faust.types.TableT) -> None:
    """Have *table*, before the app starts, build its changelog topic again
    (from its name and partitions now), and Faust's table manager, which
    registered the first one by name, know it by the new one."""
    changelogs = table.app.tables._changelogs  # type: ignore[attr-defined]
    changelogs.pop(table.changelog_topic.get_topic_name(), None)
    table._changelog_topic = None  # type: ignore[attr-defined]  # built on next access
    changelogs[table.changelog_topic.get_topic_name()] = table


def forget_unacked(app: faust.types.AppT) -> None:
    """Stop waiting for the records agents took and have not acknowledged.

    A stopping worker waits for them (``Consumer.wait_empty``), and a crashed
    agent's never come: its exception keeps them alive. Forgetting them acks
    nothing, so no offset is committed past them; the next owner of their
    partitions reads them again."""
    app.consumer._unacked_messages.clear()  # type: ignore[attr-defined]
