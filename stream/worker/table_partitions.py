"""``seen_devices``' changelog has exactly as many partitions as ``logins.raw``.

Why: :mod:`stream.worker.device_table` writes each entry to the changelog
partition of its device's raw partition, and Faust gives the owner of raw
partition *p* the table's partition *p* only when the two topics have the
same partition count (its assignor groups co-partitioned topics by count).
A raw topic made elsewhere with another count than ``MASKSTREAM_PARTITIONS``,
or one that gained partitions, would otherwise leave raw partitions without
a table partition (the agent could not store their devices' entries, and
stalled) or put table partitions on workers that never write them.

So, before Faust declares the changelog, a worker reads both counts
(:func:`align_changelog`; the decision is :func:`plan_changelog`):

- no raw topic: both get ``MASKSTREAM_PARTITIONS`` (the worker creates them);
- no changelog: it is created with the raw topic's count;
- another count: the changelog is deleted and created again with the raw
  topic's. It is a cache of PostgreSQL's ``seen_devices``: each device's
  entry comes back with its next login, lookups read PostgreSQL meanwhile,
  and a worker's local state of the old changelog is set aside
  (:mod:`stream.worker.faust_patches.table_store`).

A raw topic that gains partitions while workers run cannot be matched
without that step: until the workers restart, :func:`co_partitioned` is
false, the web view answers from PostgreSQL, and entries of raw partitions
the changelog lacks are left out of the table (PostgreSQL has them; see
:class:`stream.worker.device_table.DeviceStore`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    UnknownTopicOrPartitionError,
    for_code,
)

from stream.common.kafka_security import KafkaClients
from stream.common.retry import Backoff
from stream.common.topic_admin import TopicSpec, ensure_topics

log = logging.getLogger(__name__)

# A changelog as Faust creates one for a table that is not windowed.
CHANGELOG_CONFIGS = {"cleanup.policy": "compact"}
# How long a deleted changelog may take to disappear from the cluster's metadata.
DELETION_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class ChangelogPlan:
    """The changelog's partition count, and whether the existing one must go first."""

    partitions: int
    recreate: bool = False


def plan_changelog(raw: int | None, changelog: int | None, configured: int) -> ChangelogPlan:
    """What the changelog must be, given the partition counts of the raw topic
    and the changelog (None: the topic does not exist) and the configured count."""
    partitions = raw if raw else configured
    return ChangelogPlan(partitions, recreate=bool(changelog) and changelog != partitions)


async def partition_counts(admin: Any, topics: list[str]) -> dict[str, int]:
    """Partition count of each topic of *topics* that exists."""
    existing = set(await admin.list_topics()) & set(topics)
    if not existing:
        return {}
    described = await admin.describe_topics(sorted(existing))
    return {d["topic"]: len(d["partitions"]) for d in described if d.get("partitions")}


async def align_changelog(
    clients: KafkaClients,
    table: faust.types.TableT,
    raw_topic: str,
    configured: int,
    replication_setting: int,
) -> None:
    """Give *table* and its changelog the partition count of *raw_topic*,
    recreating a changelog of another count. Waits while Kafka is unreachable;
    a refusal (no right to delete topics, say) is logged and the worker runs on
    as it would with a raw topic that gained partitions."""
    changelog = table.changelog_topic.get_topic_name()
    backoff, attempt = Backoff(), 0
    while True:
        try:
            plan = await _apply_plan(clients, raw_topic, changelog, configured, replication_setting)
            break
        except (TimeoutError, KafkaError, OSError) as exc:
            if isinstance(exc, KafkaError) and not _unavailable(exc):
                log.error(
                    "cannot give %s the partition count of %s (%r): lookups read PostgreSQL "
                    "while the two differ",
                    changelog,
                    raw_topic,
                    exc,
                )
                return
            attempt += 1
            delay = backoff.delay(attempt)
            log.warning(
                "cannot read the partition counts of %s and %s yet (%r); again in %.1f s",
                raw_topic,
                changelog,
                exc,
                delay,
            )
            await asyncio.sleep(delay)
    table.partitions = plan.partitions
    table.changelog_topic.partitions = plan.partitions


def _unavailable(exc: KafkaError) -> bool:
    """Kafka is down or busy, rather than refusing the request."""
    return isinstance(exc, (KafkaConnectionError, KafkaTimeoutError)) or bool(exc.retriable)


async def _apply_plan(
    clients: KafkaClients,
    raw_topic: str,
    changelog: str,
    configured: int,
    replication_setting: int,
) -> ChangelogPlan:
    async with clients.admin_session() as admin:
        counts = await partition_counts(admin, [raw_topic, changelog])
        plan = plan_changelog(counts.get(raw_topic), counts.get(changelog), configured)
        if plan.recreate:
            log.warning(
                "%s has %d partitions and %s has (or gets) %d: deleting %s to create it "
                "again with %d (seen_devices entries come back with each device's next "
                "login; lookups read PostgreSQL meanwhile)",
                changelog,
                counts[changelog],
                raw_topic,
                plan.partitions,
                changelog,
                plan.partitions,
            )
            await _delete_and_wait(admin, changelog)
            # At once, as Faust would (compacted): before a producer's metadata
            # request can have the broker auto-create it with its default count.
            spec = TopicSpec(changelog, plan.partitions, CHANGELOG_CONFIGS)
            await ensure_topics(admin, [spec], replication_setting)
    return plan


async def _delete_and_wait(admin: Any, topic: str) -> None:
    response = await admin.delete_topics([topic])
    for _topic, code in response.topic_error_codes:
        if code and code != UnknownTopicOrPartitionError.errno:  # unknown: deleted already
            raise for_code(code)(f"cannot delete {topic}")
    deadline = asyncio.get_running_loop().time() + DELETION_TIMEOUT_SECONDS
    while topic in await admin.list_topics():
        if asyncio.get_running_loop().time() > deadline:
            raise KafkaTimeoutError(
                f"{topic} still listed {DELETION_TIMEOUT_SECONDS:.0f} s after deletion"
            )
        await asyncio.sleep(0.5)


def co_partitioned(raw: int | None, changelog: int | None) -> bool:
    """Do the raw topic and the changelog have the same, known, partition count?"""
    return raw is not None and raw == changelog
