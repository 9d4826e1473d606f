"""Create the pipeline's topics replicated as configured, and check existing ones.

The bridge (its raw topic) and the test sandbox (all three) create topics
through an admin client; the workers create theirs through Faust's transport
(``stream.worker.faust_patches.transport``), with the same rules from
:mod:`stream.common.replication`. A topic that exists is used as it is
(changing a live topic is an operator's decision), with a warning when it
keeps fewer copies than the setting asks for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    for_code,
)

from stream.common.raw_records import MAX_RAW_RECORD_BYTES
from stream.common.replication import replication_factor, topic_configs, under_replicated_warning
from stream.common.settings import Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: name, partitions and configuration entries."""

    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)


def kafka_unavailable(exc: BaseException) -> bool:
    """Is *exc* Kafka being down, starting or busy (worth waiting for),
    rather than a refusal (no right, an invalid request)?"""
    if isinstance(exc, (KafkaConnectionError, KafkaTimeoutError, TimeoutError, OSError)):
        return True
    return isinstance(exc, KafkaError) and bool(exc.retriable)


def raw_topic_spec(topics: Topics) -> TopicSpec:
    """``logins.raw`` as the bridge and the workers create it: every body SQS
    accepts fits, and records older than the retention setting go."""
    return TopicSpec(
        topics.raw,
        topics.partitions,
        {
            "retention.ms": str(topics.raw_retention_hours * 3_600_000),
            "max.message.bytes": str(MAX_RAW_RECORD_BYTES),
        },
    )


async def ensure_topics(admin: Any, specs: Sequence[TopicSpec], setting: int) -> list[str]:
    """Create each topic of *specs* that does not exist, with the replication
    factor *setting* gives on this cluster; warn about existing ones kept with
    fewer copies. Return the names created."""
    brokers = len((await admin.describe_cluster())["brokers"])
    replication = replication_factor(setting, brokers)
    response = await admin.create_topics(
        [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication,
                topic_configs={**topic_configs(replication), **spec.configs},
            )
            for spec in specs
        ]
    )
    created, existing = [], []
    for topic, code, *_ in response.topic_errors:
        if code == TopicAlreadyExistsError.errno:
            existing.append(topic)
        elif code:
            raise for_code(code)(f"cannot create topic {topic!r}")
        else:
            created.append(topic)
    for description in await describe_with_partitions(admin, existing):
        warning = under_replicated_warning(
            description["topic"], replicas_of(description), replication
        )
        if warning:
            log.warning(warning)
    return created


async def describe_with_partitions(
    admin: Any, topics: list[str], attempts: int = 10
) -> list[Mapping[str, Any]]:
    """Descriptions of *topics* that list their partitions. A topic created
    moments ago (by another process) is described without partitions until
    the broker's metadata catches up: ask again, briefly, and leave out what
    is still unknown rather than take it for a topic without replicas."""
    described: list[Mapping[str, Any]] = []
    for _attempt in range(attempts):
        described = await admin.describe_topics(topics) if topics else []
        if all(d.get("partitions") for d in described):
            break
        await asyncio.sleep(0.5)
    return [d for d in described if d.get("partitions")]


def replicas_of(description: Mapping[str, Any]) -> int:
    """The fewest replicas any partition of a described topic has (0 if none)."""
    return min((len(p["replicas"]) for p in description.get("partitions", [])), default=0)
