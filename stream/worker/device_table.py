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

from collections.abc import Mapping

import faust
from aiokafka import AIOKafkaProducer

from stream.core.records import SeenDevice
from stream.worker.faust_patches.table_store import note_delivered, put_entries
from stream.worker.producing import Deliveries, KeyedRecord, send_to_partitions


async def store_entries(
    table: faust.types.TableT,
    producer: AIOKafkaProducer,
    entries: Mapping[str, SeenDevice],
    partitions: Mapping[str, int],
) -> Deliveries:
    """Put *entries* (masked device id -> entry) in *table* and in its changelog
    at each device's partition; the futures resolve once Kafka holds them."""
    groups: dict[int, list[KeyedRecord]] = {}
    for device, entry in entries.items():
        groups.setdefault(partitions[device], []).append((device.encode(), entry.dumps()))
    put_entries(table, groups)
    deliveries = await send_to_partitions(producer, table.changelog_topic.get_topic_name(), groups)
    note_delivered(table, deliveries)
    return deliveries
