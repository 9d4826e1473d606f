"""Hand Kafka many keyed records at once: one aiokafka batch per partition.

aiokafka's ``send()`` costs a coroutine, a future, a partitioner call and a
metadata check per record: about 45 µs here, more than masking the login.
The agent already holds a whole batch of records, so it builds one
``BatchBuilder`` per partition itself (the output partition of the raw
partition the records came from, or the changelog partition it chooses) and
submits each with ``send_batch``. The records go
through the same producer as everything else the worker writes, so Faust's
flush before each offset commit covers them too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from stream.common.retry import Backoff

log = logging.getLogger(__name__)


class KeyedRecord(NamedTuple):
    """One output record: key, value and (rarely) headers."""

    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


Deliveries = list[asyncio.Future[Any]]


def output_partition(raw_partition: int, partitions: Sequence[int]) -> int:
    """The partition of an output topic that carries *raw_partition*'s records:
    the same number where the topic has as many partitions, else that number
    modulo its count.

    Why not Kafka's default rule on the masked key: the bridge keys raw records
    by the device, so a device's logins share a raw partition, and with this
    rule an output partition too, in order. And a raw partition's batches then
    touch one partition of each output topic, so its transaction carries one
    produce request and one commit marker per topic instead of one per partition:
    on three replicas the brokers' cost is in requests, not bytes
    (docs/performance.md).
    """
    return partitions[raw_partition % len(partitions)]


async def send_for_raw_partition(
    producer: AIOKafkaProducer, topic: str, raw_partition: int, records: Sequence[KeyedRecord]
) -> Deliveries:
    """Submit *records*, the outputs of *raw_partition*'s records, to their
    partition of *topic* (:func:`output_partition`)."""
    if not records:
        return []
    partitions = sorted(await producer.partitions_for(topic))
    return await send_to_partitions(
        producer, topic, {output_partition(raw_partition, partitions): records}
    )


async def send_to_partitions(
    producer: AIOKafkaProducer, topic: str, groups: Mapping[int, Iterable[KeyedRecord]]
) -> Deliveries:
    """Submit each group of records to its partition of *topic*.

    A batch that fills up is submitted and a new one started, so any number of
    records fits; a record too large for an empty batch raises ValueError.
    """
    deliveries = []
    for partition, group in groups.items():
        batch = producer.create_batch()
        for key, value, record_headers in group:
            headers = list(record_headers)  # aiokafka's C batch builder takes only a list
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise ValueError(f"a record of {len(value)} bytes does not fit in a batch")
        deliveries.append(await producer.send_batch(batch, topic, partition=partition))
    return deliveries


async def until_delivered(send: Callable[[], Awaitable[Deliveries]], what: str) -> None:
    """Run *send* and wait for every delivery it starts; after a Kafka error,
    back off and run it again, for as long as it takes.

    Whole batches are sent again, so what *send* writes must be harmless
    twice: output records (consumers de-duplicate on the message id) and
    seen_devices entries (absolute values, not increments) are.
    """
    backoff, attempt = Backoff(), 0
    while True:
        try:
            await asyncio.gather(*await send())
            return
        except (KafkaError, ProducerSendError) as exc:
            attempt += 1
            delay = backoff.delay(attempt)
            log.warning("Kafka did not take %s (%r); again in %.1f s", what, exc, delay)
            await asyncio.sleep(delay)
