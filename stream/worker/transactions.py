"""Exactly-once outputs: each raw partition's outputs are published in Kafka
transactions that also commit the partition's offset.

Why a transaction spans batches: a transaction costs five requests to the
brokers (AddPartitionsToTxn, the produce, AddOffsetsToTxn, TxnOffsetCommit,
EndTxn) and about 1.5 ms of a worker's CPU, whatever it holds; one per batch
and partition cost a third of a worker's CPU (docs/performance.md). So a
partition's transaction stays open, taking batch after batch, for
``MASKSTREAM_TRANSACTION_SECONDS``, then commits with the offset after the
last. The outputs reach read_committed consumers that much later; the rows
are in PostgreSQL already. A transaction that fails aborts every batch it
took: the consumer goes back to the committed offset and reads them again
(their rows are there, so exactly what they wrote is published again, below).

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
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import OffsetAndMetadata

from stream.common.kafka_security import KafkaClients
from stream.common.published_marks import published_through
from stream.worker.producing import Deliveries, KeyedRecord, send_for_raw_partition

log = logging.getLogger(__name__)

#: Another producer has the partition's transactional id now: we lost it.
FENCED = (ProducerFenced, InvalidProducerEpoch)

#: The longest a transaction may take to commit (normally milliseconds; a
#: coordinator's failover, seconds). aiokafka can wait for ever on a
#: coordinator that died (the fault suite, killing the active controller),
#: holding every later commit of the worker back; past this the transaction
#: is given up like any failed one: aborted, its batches read again and
#: published by a new producer (which fences this one). Below Kafka's
#: transaction timeout (aiokafka's default, 60 s).
COMMIT_TIMEOUT_SECONDS = 30.0


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


class PartitionPublisher:
    """One raw partition's transactional producer, its :class:`Floor`, and the
    transaction it keeps open over successive batches.

    The batches' records are held until the transaction commits, then sent in
    one go: a produce request per output topic and transaction rather than per
    batch (on three replicas each request costs the brokers far more than its
    bytes). Nothing is visible before the commit either way."""

    def __init__(self, producer: AIOKafkaProducer, floor: Floor) -> None:
        self.producer = producer
        self.floor = floor
        # Held while a batch is added or the transaction commits: the two never interleave.
        self.lock = asyncio.Lock()
        self.opened_at: float | None = None  # monotonic time the first batch was added
        self.offset: OffsetAndMetadata | None = None  # the raw offset it commits
        self.masked: list[KeyedRecord] = []
        self.rejected: list[KeyedRecord] = []

    def due(self, now: float, interval: float) -> bool:
        """Has the open transaction been open *interval* seconds or more?"""
        return self.opened_at is not None and now - self.opened_at >= interval

    def add(self, share: PartitionShare) -> None:
        """Take *share*'s records and offset into the open transaction (opening
        one if none is); they are sent and committed by :meth:`commit`."""
        if self.opened_at is None:
            self.opened_at = time.monotonic()
        self.masked += share.masked
        self.rejected += share.rejected
        self.offset = OffsetAndMetadata(share.next_offset, share.metadata)
        # Published, for this owner's next batches, and for this batch if it
        # is delivered again (its changelog write failed, say: the whole
        # delivery is retried) so that the transaction holds its records
        # once. If the transaction aborts, the floor is read again from the
        # committed offset (a new publisher).
        self.floor = replace(
            self.floor,
            commit=share.next_offset,
            publish=max(self.floor.publish, share.next_offset),
        )

    async def commit(self, raw: TopicPartition, group_id: str, topics: tuple[str, str]) -> None:
        """Send the open transaction's records to *topics* (masked, rejected) and
        commit them with its raw offset (nothing if none is open); a
        :class:`KafkaTimeoutError` if that takes COMMIT_TIMEOUT_SECONDS."""
        if self.opened_at is None or self.offset is None:
            return
        try:
            await asyncio.wait_for(self._commit(raw, group_id, topics), COMMIT_TIMEOUT_SECONDS)
        except TimeoutError as exc:
            raise KafkaTimeoutError(
                f"raw partition {raw.partition}: the transaction did not commit"
                f" in {COMMIT_TIMEOUT_SECONDS:.0f} s"
            ) from exc

    async def _commit(self, raw: TopicPartition, group_id: str, topics: tuple[str, str]) -> None:
        assert self.offset is not None
        await self.producer.begin_transaction()
        deliveries: Deliveries = []
        for topic, records in zip(topics, (self.masked, self.rejected), strict=True):
            deliveries += await send_for_raw_partition(self.producer, topic, raw.partition, records)
        await self.producer.send_offsets_to_transaction({raw: self.offset}, group_id)
        await self.producer.commit_transaction()
        self.masked, self.rejected, self.opened_at = [], [], None
        await asyncio.gather(*deliveries)


class TransactionalOutputs:
    """A transactional producer per raw partition this worker publishes, each
    transaction taking the batches of up to *interval* seconds."""

    def __init__(
        self,
        clients: KafkaClients,
        group_id: str,
        raw_topic: str,
        masked_topic: str,
        rejected_topic: str,
        assigned: Callable[[], set[int]],
        rewind: Callable[[set[int]], Awaitable[None]],
        interval: float,
    ) -> None:
        self._clients = clients
        self._group_id = group_id
        self._raw_topic = raw_topic
        self._topics = (masked_topic, rejected_topic)
        self._assigned = assigned  # the raw partitions the consumer holds now
        # Seeks raw partitions back to their committed offsets: an aborted
        # transaction took batches with it that the consumer has moved past.
        self._rewind = rewind
        self._interval = interval
        self._publishers: dict[int, PartitionPublisher] = {}
        # Partitions whose producer was fenced since they were last assigned.
        self._lost: set[int] = set()
        self._committer: asyncio.Task[None] | None = None

    def transactional_id(self, partition: int) -> str:
        return f"{self._group_id}-{self._raw_topic}-{partition}"

    async def floors(self, partitions: set[int]) -> dict[int, Floor | None]:
        """For each of *partitions*: its :class:`Floor`, or None if this worker
        may not publish the partition (not assigned, or fenced)."""
        return {p: await self._floor(p) for p in sorted(partitions)}

    async def _floor(self, partition: int) -> Floor | None:
        if partition in self._lost:
            return None
        publisher = self._publishers.get(partition)
        if publisher is None:
            if partition not in self._assigned():
                return None
            publisher = self._publishers[partition] = await self._take_over(partition)
        return publisher.floor

    async def _take_over(self, partition: int) -> PartitionPublisher:
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
        except AssertionError as exc:
            # aiokafka asserts that it knows a broker when it looks for the
            # transaction coordinator; while Kafka restarts, it may know none.
            await producer.stop()
            raise KafkaConnectionError(f"no broker to find the coordinator at ({exc})") from exc
        except BaseException:
            await producer.stop()
            raise
        found = committed.get(raw)
        offset = found.offset if found is not None and found.offset >= 0 else 0
        marked = published_through(found.metadata) if found is not None else None
        return PartitionPublisher(producer, Floor(offset, max(offset, marked or 0), marked))

    async def publish(self, shares: Sequence[PartitionShare]) -> Deliveries:
        """Add each share to its partition's open transaction, committing those
        open *interval* seconds (all of them at an interval of 0); a partition
        lost to another worker publishes nothing. Raises on Kafka being
        unavailable (the caller retries). Returns no deliveries: the
        transactions deliver them."""
        await asyncio.gather(*(self._publish(share) for share in shares))
        if self._committer is None and self._interval > 0:
            self._committer = asyncio.create_task(self._commit_when_due())
        return []

    async def _publish(self, share: PartitionShare) -> None:
        publisher = self._publishers.get(share.partition)
        if publisher is None or share.partition in self._lost:
            return
        async with publisher.lock:
            if publisher is not self._publishers.get(share.partition):
                raise KafkaError("the partition's transaction ended meanwhile; publish again")
            try:
                if share.masked or share.rejected or share.next_offset > publisher.floor.commit:
                    publisher.add(share)
                if publisher.due(time.monotonic(), self._interval):
                    await publisher.commit(self._raw(share.partition), self._group_id, self._topics)
            except FENCED as exc:
                await self._failed(share.partition, exc)  # the next owner publishes it
            except TransactionalIdAuthorizationFailed:
                raise
            except BaseException as exc:
                # Never commit a transaction a batch left half-sent (a stop
                # cancels it, too): it ends unfinished, and aborts.
                await self._failed(share.partition, exc)
                raise

    async def _commit(self, partition: int, publisher: PartitionPublisher) -> None:
        """Commit *partition*'s open transaction; a failure ends it (and is logged)."""
        async with publisher.lock:
            if publisher is not self._publishers.get(partition):
                return
            try:
                await publisher.commit(self._raw(partition), self._group_id, self._topics)
            except Exception as exc:
                await self._failed(partition, exc)
                log.warning("raw partition %d: committing its outputs failed (%r)", partition, exc)

    async def _commit_when_due(self) -> None:
        """Commit the transactions open *interval* seconds, batches or none."""
        while True:
            await asyncio.sleep(self._interval / 4)
            now = time.monotonic()
            for partition, publisher in list(self._publishers.items()):
                if publisher.due(now, self._interval):
                    await self._commit(partition, publisher)

    async def _failed(self, partition: int, exc: BaseException) -> None:
        """End *partition*'s transaction after *exc*: fenced, the partition is
        lost; otherwise the transaction aborts, and the consumer goes back to
        the committed offset for the batches it held."""
        if isinstance(exc, FENCED):
            log.warning(
                "raw partition %d: another worker took it over (%s); publishing nothing more "
                "of it until it is assigned here again",
                partition,
                type(exc).__name__,
            )
            await self._drop(partition, lost=True)
        elif isinstance(exc, TransactionalIdAuthorizationFailed):
            return
        else:
            await self._drop(partition, lost=False)
            if isinstance(exc, Exception):  # not a stop
                try:
                    await self._rewind({partition})
                except Exception as rewind_exc:  # revoked meanwhile, or stopping
                    log.warning("raw partition %d: no rewind (%r)", partition, rewind_exc)

    def _raw(self, partition: int) -> TopicPartition:
        return TopicPartition(self._raw_topic, partition)

    async def _drop(self, partition: int, lost: bool) -> None:
        publisher = self._publishers.pop(partition, None)
        if lost:
            self._lost.add(partition)
        if publisher is not None:
            try:
                await asyncio.wait_for(publisher.producer.stop(), COMMIT_TIMEOUT_SECONDS)
            except Exception as exc:  # a fenced producer may fail to close cleanly
                log.debug("closing the producer of raw partition %d: %r", partition, exc)

    async def revoke(self, partitions: set[int]) -> None:
        """Commit what *partitions* published, and close their producers: no
        longer this worker's. A partition assigned here again is taken over afresh."""
        for partition in partitions:
            publisher = self._publishers.get(partition)
            if publisher is not None:
                await self._commit(partition, publisher)
            await self._drop(partition, lost=False)
            self._lost.discard(partition)

    async def close(self) -> None:
        """Commit what was published, and close every producer."""
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
        await self.revoke(set(self._publishers) | self._lost)
