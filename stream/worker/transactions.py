"""Exactly-once outputs: each raw partition's share of a batch is published in
one Kafka transaction that also commits the partition's offset.

Why per raw partition: a transaction and the offsets it commits must belong
to one owner, and only Kafka can tell a zombie (a worker paused past its
session, whose partitions moved) from the owner. Each raw partition *p* has
its own transactional id (``<group>-<raw topic>-<p>``); a worker that starts
publishing *p* opens a producer with that id, which fences the previous
owner's producer and ends its open transaction (committed if it had asked
to commit, aborted otherwise). A fenced producer publishes nothing more: the
worker that fenced it reads the partition from the offset committed last and
publishes from there.

What a batch publishes again: a worker that committed a batch's rows to
PostgreSQL and died before its Kafka transaction committed leaves those
rows in PostgreSQL and nothing in the output topics (an aborted transaction
is invisible to ``read_committed`` consumers). The next owner processes the
batch again; PostgreSQL inserts nothing, but each row records the raw
record that wrote it (``raw_position``), so exactly those records are
published again, and a second copy of the same SQS message (a bridge that
died before deleting it) publishes nothing (``Written.wrote``).

Records below the committed offset that the new owner still fetched (its
position was read before the previous owner's last transaction completed)
are left out: their outputs are committed already (:meth:`floor`).

Faust's own offset commits become bookkeeping only while this is on
(``transport.Consumer.offsets_in_transactions``): a plain commit racing a
transactional one could move the offset back. Consumers that read
uncommitted see, in normal operation, each output once too; under faults
they may see records of aborted transactions (docs/design.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import OffsetAndMetadata

from stream.common.kafka_security import KafkaClients
from stream.common.published_marks import published_through
from stream.worker.producing import Deliveries, KeyedRecord, send_many

log = logging.getLogger(__name__)

#: Another producer has the partition's transactional id now: we lost it.
FENCED = (ProducerFenced, InvalidProducerEpoch)


@dataclass(frozen=True)
class Floor:
    """What a worker that took a raw partition over may do below which offset.

    *commit*: the partition's committed offset (found when it took the
    partition over, then each of its commits): below it the outputs are
    published already, no offset behind it is ever committed (a batch
    fetched before the previous owner's last commit moves nothing back),
    and a commit never passes a record that was not processed: it moves
    only over the run of offsets that starts there (:func:`contiguous_end`).
    *publish*: below it nothing is published: *commit*, or further where
    ``maskstream replay`` marked how far the outputs were published
    (stream.common.published_marks). *tracked*: False where offsets are
    committed elsewhere (at least once: Faust commits them)."""

    commit: int
    publish: int
    marked: int | None = None  # the replay's mark, carried forward in commits
    tracked: bool = True


def contiguous_end(start: int, offsets: Iterable[int]) -> int:
    """The offset after the run of *offsets* that starts at *start* (offsets
    below it are done already). A record left out of a batch (fetched in an
    earlier consumer generation, say) ends the run: committing past it would
    lose it; the transport's stalled-partition repair reads it again."""
    end = start
    for offset in sorted(offsets):
        if offset == end:
            end += 1
        elif offset > end:
            break
    return end


@dataclass
class PartitionShare:
    """One raw partition's records of a batch, and the offset after its last."""

    partition: int
    next_offset: int
    masked: list[KeyedRecord] = field(default_factory=list)
    rejected: list[KeyedRecord] = field(default_factory=list)
    # The committed offset's metadata (the replay's mark, while still ahead).
    metadata: str = ""


class TransactionalOutputs:
    """A transactional producer per raw partition this worker publishes."""

    def __init__(
        self,
        clients: KafkaClients,
        group_id: str,
        raw_topic: str,
        masked_topic: str,
        rejected_topic: str,
        assigned: Callable[[], set[int]],
    ) -> None:
        self._clients = clients
        self._group_id = group_id
        self._raw_topic = raw_topic
        self._masked_topic = masked_topic
        self._rejected_topic = rejected_topic
        self._assigned = assigned  # the raw partitions the consumer holds now
        self._producers: dict[int, AIOKafkaProducer] = {}
        self._floors: dict[int, Floor] = {}
        # Partitions whose producer was fenced since they were last assigned.
        self._lost: set[int] = set()

    def transactional_id(self, partition: int) -> str:
        return f"{self._group_id}-{self._raw_topic}-{partition}"

    async def floors(self, partitions: set[int]) -> dict[int, Floor | None]:
        """For each of *partitions*: its :class:`Floor`, or None if this worker
        may not publish the partition (not assigned, or fenced)."""
        return {p: await self._floor(p) for p in sorted(partitions)}

    async def _floor(self, partition: int) -> Floor | None:
        if partition in self._lost:
            return None
        if partition not in self._producers:
            if partition not in self._assigned():
                return None
            await self._take_over(partition)
        return self._floors[partition]

    async def _take_over(self, partition: int) -> None:
        """Open the partition's producer (fencing its previous owner, whose open
        transaction the broker ends), then read the partition's committed offset."""
        producer = self._clients.producer(
            transactional_id=self.transactional_id(partition),
            acks="all",
            enable_idempotence=True,
            max_batch_size=256 * 1024,
            max_request_size=2 * 1024 * 1024,
        )
        try:
            await producer.start()
            raw = TopicPartition(self._raw_topic, partition)
            async with self._clients.admin_session() as admin:
                committed = await admin.list_consumer_group_offsets(
                    self._group_id, partitions=[raw]
                )
        except BaseException:
            await producer.stop()
            raise
        found = committed.get(raw)
        offset = found.offset if found is not None and found.offset >= 0 else 0
        marked = published_through(found.metadata) if found is not None else None
        self._producers[partition] = producer
        self._floors[partition] = Floor(offset, max(offset, marked or 0), marked)

    async def publish(self, shares: Sequence[PartitionShare]) -> Deliveries:
        """Publish each share and commit its partition's offset, one
        transaction a partition; a partition lost to another worker publishes
        nothing. Raises on Kafka being unavailable (the caller retries).
        Returns no deliveries: each transaction is committed already."""
        await asyncio.gather(*(self._publish(share) for share in shares))
        return []

    async def _publish(self, share: PartitionShare) -> None:
        producer = self._producers.get(share.partition)
        if producer is None or share.partition in self._lost:
            return
        try:
            await producer.begin_transaction()
            deliveries = await send_many(producer, self._masked_topic, share.masked)
            deliveries += await send_many(producer, self._rejected_topic, share.rejected)
            raw = TopicPartition(self._raw_topic, share.partition)
            offset = OffsetAndMetadata(share.next_offset, share.metadata)
            await producer.send_offsets_to_transaction({raw: offset}, self._group_id)
            await producer.commit_transaction()
            await asyncio.gather(*deliveries)
            floor = self._floors.get(share.partition)
            if floor is not None:
                self._floors[share.partition] = replace(floor, commit=share.next_offset)
        except FENCED as exc:
            log.warning(
                "raw partition %d: another worker took it over (%s); publishing nothing more "
                "of it until it is assigned here again",
                share.partition,
                type(exc).__name__,
            )
            await self._drop(share.partition, lost=True)
        except TransactionalIdAuthorizationFailed:
            raise
        except (TimeoutError, KafkaError, OSError):
            # The transaction is aborted (or its producer dropped, and the next
            # attempt opens a new one and reads the committed offset again).
            await self._drop(share.partition, lost=False)
            raise

    async def _drop(self, partition: int, lost: bool) -> None:
        producer = self._producers.pop(partition, None)
        self._floors.pop(partition, None)
        if lost:
            self._lost.add(partition)
        if producer is not None:
            try:
                await producer.stop()
            except Exception as exc:  # a fenced producer may fail to close cleanly
                log.debug("closing the producer of raw partition %d: %r", partition, exc)

    async def revoke(self, partitions: set[int]) -> None:
        """Close the producers of *partitions*, no longer this worker's; a
        partition assigned here again is taken over afresh."""
        for partition in partitions:
            await self._drop(partition, lost=False)
            self._lost.discard(partition)

    async def close(self) -> None:
        await self.revoke(set(self._producers) | self._lost)
