"""``seen_devices``' changelog has exactly as many partitions as ``logins.raw``.

Why: :mod:`stream.worker.device_table` writes each entry to the changelog
partition of its device's raw partition, and Faust gives the owner of raw
partition *p* the table's partition *p* only when the two topics have the
same partition count (its assignor groups co-partitioned topics by count).
A raw topic made elsewhere with another count than ``MASKSTREAM_PARTITIONS``,
or one that gained partitions, would otherwise leave raw partitions without
a table partition (the agent could not store their devices' entries, and
stalled) or put table partitions on workers that never write them.

So the changelog's name carries its partition count
(``<app id>-seen_devices-p6-changelog`` for a raw topic of 6), and before
Faust declares any topic a worker (:func:`align_changelog`):

1. creates the raw topic unless it exists, then reads its count: every
   worker reads the same count, whoever created the topic (another worker,
   the bridge, or a broker's auto-creation with its own default);
2. creates the changelog of that count unless it exists, and uses it.

No topic is ever deleted, so nothing can race: workers starting together
all pick the same name, and whichever creates it first creates it with the
right count. A broker that auto-creates topics (``auto.create.topics.enable``)
cannot make it with its default count either, because no client names the
topic before a worker has created it. A worker whose raw topic's count
changed simply moves to the changelog of the new count: the entries come
back with each device's next login, lookups read PostgreSQL meanwhile, and
its local state of the old changelog is set aside
(:mod:`stream.worker.faust_patches.table_store`). Changelogs of other counts
are left for an operator to delete (a worker of the old count may still be
stopping); the worker names them in one log line.

A raw topic that gains partitions while workers run cannot be matched
without a restart: until then :func:`co_partitioned` is false, the web view
answers from PostgreSQL, and entries of raw partitions the changelog lacks
are left out of the table (PostgreSQL has them; see
:class:`stream.worker.device_table.DeviceStore`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import faust
from aiokafka.errors import KafkaError, KafkaTimeoutError

from stream.common.kafka_security import KafkaClients
from stream.common.retry import Backoff
from stream.common.settings import Topics
from stream.common.topic_admin import (
    TopicSpec,
    describe_with_partitions,
    ensure_topics,
    kafka_unavailable,
    raw_topic_spec,
)
from stream.worker.faust_patches.internals import rebuild_changelog_topic

log = logging.getLogger(__name__)

# A changelog as Faust creates one for a table that is not windowed.
CHANGELOG_CONFIGS = {"cleanup.policy": "compact"}


def changelog_name(app_id: str, table: str, partitions: int) -> str:
    """The changelog of *table* for a raw topic of *partitions* partitions."""
    return f"{app_id}-{table}-p{partitions}-changelog"


class CountedChangelogTable(faust.Table):
    """A Faust table whose changelog's name carries its partition count."""

    def _changelog_topic_name(self) -> str:
        partitions = self.partitions or self.app.conf.topic_partitions
        return changelog_name(self.app.conf.id, self.name, partitions)


def use_partitions(table: faust.types.TableT, partitions: int) -> None:
    """Give *table* (not yet started) *partitions* partitions, and the changelog of that count."""
    table.partitions = partitions
    rebuild_changelog_topic(table)


def other_changelogs(topics: set[str], app_id: str, table: str, current: str) -> list[str]:
    """The changelogs of *table* among *topics* other than *current*: those of
    other partition counts, and the one of earlier versions without a count."""
    pattern = re.compile(rf"{re.escape(app_id)}-{re.escape(table)}(-p\d+)?-changelog")
    return sorted(t for t in topics if t != current and pattern.fullmatch(t))


async def partition_counts(admin: Any, topics: list[str]) -> dict[str, int]:
    """Partition count of each topic of *topics* that exists."""
    existing = set(await admin.list_topics()) & set(topics)
    if not existing:
        return {}
    described = await describe_with_partitions(admin, sorted(existing))
    return {d["topic"]: len(d["partitions"]) for d in described}


async def align_changelog(clients: KafkaClients, table: faust.types.TableT, topics: Topics) -> None:
    """Give *table* the changelog of ``logins.raw``'s partition count (see the
    module docstring). Waits while Kafka is unreachable; a refusal (no right
    to create topics, say) is logged and the worker runs on with the
    configured count, as it would with a raw topic that gained partitions."""
    app_id = table.app.conf.id
    backoff, attempt = Backoff(), 0
    while True:
        try:
            partitions = await _changelog_partitions(clients, app_id, table.name, topics)
            break
        except (TimeoutError, KafkaError, OSError) as exc:
            if not kafka_unavailable(exc):
                log.error(
                    "cannot give seen_devices' changelog the partition count of %s (%r): "
                    "lookups read PostgreSQL while the two differ",
                    topics.raw,
                    exc,
                )
                return
            attempt += 1
            delay = backoff.delay(attempt)
            log.warning(
                "cannot read the partition count of %s yet (%r); again in %.1f s",
                topics.raw,
                exc,
                delay,
            )
            await asyncio.sleep(delay)
    use_partitions(table, partitions)


async def _changelog_partitions(
    clients: KafkaClients, app_id: str, table: str, topics: Topics
) -> int:
    """Create the raw topic and the changelog of its count unless they exist;
    return that count."""
    async with clients.admin_session() as admin:
        raw = await _count_creating(admin, raw_topic_spec(topics), topics.replication_factor)
        changelog = changelog_name(app_id, table, raw)
        spec = TopicSpec(changelog, raw, CHANGELOG_CONFIGS)
        count = await _count_creating(admin, spec, topics.replication_factor)
        if count != raw:
            # Only a client that named it before any worker created it (say a
            # consumer subscribed by hand, on a broker that auto-creates).
            log.error(
                "%s has %d partitions, not %s's %d: delete it while no worker runs; "
                "until then lookups read PostgreSQL",
                changelog,
                count,
                topics.raw,
                raw,
            )
        left = other_changelogs(set(await admin.list_topics()), app_id, table, changelog)
        if left:
            log.info(
                "seen_devices uses %s (%s has %d partitions); %s no worker of this "
                "version reads: delete once no older worker runs",
                changelog,
                topics.raw,
                raw,
                ", ".join(left),
            )
        return raw


async def _count_creating(admin: Any, spec: TopicSpec, replication_setting: int) -> int:
    """The partition count of *spec*'s topic, created first unless it exists
    (an existing topic needs no right to create topics). Whoever creates it,
    every worker reads the same count."""
    counts = await partition_counts(admin, [spec.name])
    if spec.name not in counts:
        await ensure_topics(admin, [spec], replication_setting)
        counts = await partition_counts(admin, [spec.name])
    if spec.name not in counts:
        raise KafkaTimeoutError(f"{spec.name} not yet described with its partitions")
    return counts[spec.name]


def co_partitioned(raw: int | None, changelog: int | None) -> bool:
    """Do the raw topic and the changelog have the same, known, partition count?"""
    return raw is not None and raw == changelog
