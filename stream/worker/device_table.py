"""Write ``seen_devices`` entries a batch at a time, co-partitioned with ``logins.raw``.

Assigning ``table[key] = value`` makes Faust send that one entry to the
table's changelog through ``Topic.send_soon``, serializer, producer buffer
and all. The entries of a batch are known together, so they go into the
local store directly (each into the database of its partition, see
stream.worker.faust_patches.table_store) and to the changelog as one
aiokafka batch per partition. Recovery and standbys read them as usual.

An entry's changelog partition is the raw partition its device's logins
arrive on (the bridge keys raw records by a hash of the device id), not the
partition Kafka's rule would give the masked id: Faust assigns a worker the
changelog partitions of the raw partitions it consumes, so each entry lives
with the one worker that updates it and moves with it on a rebalance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import faust
from aiokafka import AIOKafkaProducer

from stream.core.records import SeenDevice
from stream.worker.faust_patches.table_store import note_delivered, put_entries
from stream.worker.producing import Deliveries, KeyedRecord, send_to_partitions

log = logging.getLogger(__name__)


class DeviceStore:
    """The one entry point that stores a batch's device states: in the
    worker's ``seen_devices`` table and in its changelog."""

    def __init__(self, table: faust.types.TableT, producer: Callable[[], AIOKafkaProducer]) -> None:
        self.table = table
        self.producer = producer  # looked up per batch, as Faust may replace it
        self._warned_missing: set[int] = set()

    async def store(
        self, entries: Mapping[str, SeenDevice], partitions: Mapping[str, int]
    ) -> Deliveries:
        """Put *entries* (masked device id -> entry) in the table and in its
        changelog at each device's raw partition (*partitions*); the futures
        resolve once Kafka holds them."""
        groups: dict[int, list[KeyedRecord]] = {}
        for device, entry in entries.items():
            record = KeyedRecord(device.encode(), entry.dumps())
            groups.setdefault(partitions[device], []).append(record)
        producer = self.producer()
        topic = self.table.changelog_topic.get_topic_name()
        changelog_partitions = await producer.partitions_for(topic)
        if not groups.keys() <= changelog_partitions:
            groups = self._without_missing(groups, changelog_partitions, topic)
        put_entries(self.table, {p: [r[:2] for r in rs] for p, rs in groups.items()})
        deliveries = await send_to_partitions(producer, topic, groups)
        note_delivered(self.table, deliveries)
        return deliveries

    def _without_missing(
        self, groups: dict[int, list[KeyedRecord]], existing: set[int], topic: str
    ) -> dict[int, list[KeyedRecord]]:
        """*groups* without the raw partitions *topic* has no partition for: the
        raw topic gained partitions while this worker ran (see
        stream.worker.table_partitions). Their entries stay in PostgreSQL only
        until the workers restart and recreate the changelog."""
        missing = groups.keys() - existing
        if not missing <= self._warned_missing:
            self._warned_missing |= missing
            log.warning(
                "%s has no partition %s: the raw topic gained partitions; their devices' "
                "seen_devices entries are kept in PostgreSQL only until the workers restart",
                topic,
                ", ".join(map(str, sorted(missing))),
            )
        return {p: records for p, records in groups.items() if p in existing}
