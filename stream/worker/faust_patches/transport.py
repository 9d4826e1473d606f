"""Faust's aiokafka transport, with one change that makes rebalances lossless.

Faust remembers the last offset it read per partition and, on the next
record, (a) treats any jump as a "gap" of offsets that need no processing and
acknowledges it, and (b) drops records older than that offset as already
read. Records from a fetch that was in flight when a rebalance seeked the
partition back to its committed offset arrive out of order, so (a) acks
records that were never processed and (b) then drops them when they are
fetched again: they are lost. The fault suite shows it (a worker joining and
leaving lost a few dozen of 20,000 messages).

This transport forgets read offsets, so every fetched record is processed
and no gap is ever acknowledged unprocessed. The price is that records seen
twice around a rebalance are processed twice, which this pipeline absorbs
(rows are unique per message id, and ``seen_devices`` counts only rows
that a transaction inserted).
Our topics hold no transaction markers or compacted holes, the only real
gaps that logic existed for.

It also replaces the loop that hands fetched records to the streams. Faust's
races every record's delivery against "flow suspended" with
``Service.wait_first``: four tasks and an ``asyncio.wait`` per record, which
capped a do-nothing agent at about 4,000 records/s here. Delivery only
blocks when a stream's buffer is full, so this loop awaits it directly.

A record this loop fetches but does not deliver is lost unless its partition
is rewound to it: aiokafka's position is already past it, and an offset that
is never acknowledged also stops every later commit of its partition. That
happened at the end of rebalances: Faust's recovery makes the new stream
partitions fetchable, seeks them to their committed offsets, and only then
resumes flow control, which empties every stream's queue. Records fetched in
between were queued, thrown away unacknowledged, and the worker went idle
with rows missing (the fault suite, about one run in five). So while a
rebalance is under way or flow is suspended, this loop delivers only
changelog records (recovery reads them) and rewinds the partition of any
other record to it; it is fetched again once the streams run.

For the same reason it iterates fetched batches itself instead of through
Faust's ``getmany``, which silently drops the rest of a batch when flow
stops or the generation changes mid-batch, and the records of a partition
paused since the fetch: those are held back and rewound too. A rewind only
ever seeks backwards, because a rebalance may have seeked the partition back
to its committed offset meanwhile; seeking forward from there would skip
the records in between and leave the partition with its fetch position at
the end and its commits stuck: the signature of the stalls the fault
suite's replay case showed before the stalled-partition repair (which
stays, as a safety net).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError
from faust.transport import drivers
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode import ServiceT
from mode.utils.futures import notify

from stream.worker.faust_patches.durability import DurableTransport

SCHEME = "maskstream-kafka"
# How often a fetch loop held up by a full stream queue looks again.
ROOM_POLL_SECONDS = 0.002

# How stale a worker consumer's view of topics and partitions may get. A
# worker creates missing topics, then subscribes; right after CreateTopics
# returns, the broker's metadata may not list the topic yet (10 of 20 probes
# on the local broker), and the group's assignment then leaves it out until
# aiokafka's next periodic refresh: Faust's default of 5 minutes, during which
# the worker consumes nothing. Refreshing every few seconds costs one small
# metadata request per worker, and also finds added partitions as quickly.
METADATA_MAX_AGE_MS = 5_000


@dataclass(frozen=True)
class FetchSettings:
    """How long a worker's fetch may wait at the broker for how much data.

    Faust asks for whatever a fetch can return at once (``fetch.min.bytes``
    1, waiting up to 1.5 s), so a busy partition's fetch comes back for every
    produce request the bridge makes. On three replicas each answer costs the
    brokers about as much as the produce did, and those answers were a
    quarter of their requests (docs/performance.md). Waiting for
    *min_bytes* or *max_wait_ms*, whichever comes first, answers a few times
    a second instead, at up to *max_wait_ms* of latency."""

    min_bytes: int = 1
    max_wait_ms: int = 1500  # Faust's


class ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, whose consumer fetches by :class:`FetchSettings`."""

    #: MASKSTREAM_FETCH_MIN_BYTES and MASKSTREAM_FETCH_WAIT_MS. Set by ``register``.
    fetch = FetchSettings()

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes no fetch_min_bytes and its own wait; the consumer hands
        # both to its fetcher when it starts, after this.
        consumer._fetch_min_bytes = self.fetch.min_bytes
        consumer._fetch_max_wait_ms = self.fetch.max_wait_ms
        return consumer


class ForgetfulReadOffsets(dict):
    """A read-offset map whose lookups always say "nothing read yet"."""

    def __getitem__(self, key: Hashable) -> None:
        return None

    def get(self, key: Hashable, default: Any = None) -> Any:
        return default


class Consumer(aiokafka_driver.Consumer):
    #: Set when each batch's Kafka transaction commits its raw offsets
    #: (stream.worker.transactions): Faust's own commits are then bookkeeping
    #: only, as a plain commit racing a transactional one could move an
    #: offset back.
    offsets_in_transactions = False

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = ForgetfulReadOffsets()
        self._last_committed_seen: dict[TP, int | None] = {}
        self._stalled_before: set[TP] = set()
        self._seek_committed: dict[TP, int] = {}

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        stopping = self._stopped.is_set
        fetcher_stopping = fetcher._stopped.is_set  # type: ignore[attr-defined]
        commit_every = self._commit_every
        to_message = self._to_message
        track_end_offset = self.app.monitor.track_tp_end_offset
        try:
            while not (stopping() or fetcher_stopping()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active_partitions = await self._wait_next_records(1.0)
                await asyncio.sleep(0)  # a fetch can return at once, again and again
                if records is None or self.should_stop:
                    break
                generation = self.app.consumer_generation_id
                queues = {}
                for tp in records:  # once a fetch, not once a record
                    track_end_offset(tp, self.highwater(tp))
                    queues[tp] = self._stream_queues(tp)
                handlers = await self._handlers(records)
                held_back: dict[TP, int] = {}  # partition -> first offset not delivered
                for tp, record in self.scheduler.iterate(records):
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if tp in held_back:
                        continue
                    if any(queue.full() for queue in queues[tp]):
                        await self._room_in(queues[tp])
                    handler = handlers.get(tp)
                    if handler is None or not self._may_deliver(tp, generation, active_partitions):
                        held_back[tp] = record.offset
                        continue
                    await handler(to_message(tp, record))
                for tp, offset in held_back.items():
                    await self._rewind(tp, offset)
                if held_back:
                    # A rebalance is still ending: don't spin fetching and
                    # rewinding the same records while it does.
                    await asyncio.sleep(0.05)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    def track_many(self, messages: Iterable[Message]) -> None:
        """Count *messages* as unacknowledged until :meth:`ack_many`, as Faust's
        stream iterator does one by one: a rebalance waits for them
        (``Consumer.wait_empty``)."""
        unacked = self._unacked_messages
        for message in messages:
            if not message.tracked:
                message.tracked = True
                unacked.add(message)

    def ack_many(self, messages: Iterable[Message]) -> None:
        """Acknowledge *messages* for one stream, as ``Message.ack`` and
        ``Consumer.ack`` would one by one (the reference count, then the
        offset bookkeeping commits read), under one hold of the ack lock and
        with one wake-up of a rebalance waiting for acks: per message, those
        calls took the lock three times and cost about 2 µs."""
        acking_topics = self.app.topics._acking_topics  # type: ignore[attr-defined]
        committed_offsets = self._committed_offset
        unacked = self._unacked_messages
        with ack_lock:
            try:
                for message in messages:
                    if message.acked:
                        continue
                    message.refcount = max(message.refcount - 1, 0)
                    if message.refcount:
                        continue  # another stream still holds it
                    message.acked = True
                    if message.topic not in acking_topics:
                        continue
                    tp, offset = message.tp, message.offset
                    committed = committed_offsets[tp]
                    if committed is not None and offset < committed:
                        continue
                    acked_index = self._acked_index[tp]
                    if offset not in acked_index:
                        unacked.discard(message)
                        acked_index.add(offset)
                        self._acked[tp].append(offset)
                        self._n_acked += 1
            finally:
                notify(self._waiting_for_ack)

    async def _handlers(self, tps: Iterable[TP]) -> dict[TP, Any]:
        """The conductor's delivery handler of each of *tps* (those it has).

        Faust's consumer hands each record to the conductor's ``on_message``,
        a coroutine that takes the conductor's lock to look up the record's
        handler. The lock only guards the lookup against the map
        being rebuilt (a subscription change), so the handlers of a fetch are
        looked up under it once. A handler that a rebalance makes stale is
        harmless: records of another generation are held back before it runs.
        """
        conductor = self.app.topics
        async with conductor._tp_to_callback_lock:  # type: ignore[attr-defined]
            by_tp = conductor._tp_to_callback  # type: ignore[attr-defined]
            return {tp: by_tp[tp] for tp in tps if tp in by_tp}

    def _stream_queues(self, tp: TP) -> tuple[Any, ...]:
        """The queues of the streams that read *tp*'s topic."""
        channels = self.app.topics._tp_index.get(tp, ())  # type: ignore[attr-defined]
        return tuple(channel.queue for channel in channels)

    async def _room_in(self, queues: tuple[Any, ...]) -> None:
        """Wait until none of *queues* is full.

        Faust's delivery waits for room in a full stream queue with a new task
        and an ``asyncio.wait`` for every record, and while a backlog drains
        the queue is full nearly all the time: that was a fifth of a
        do-nothing agent's time. Here a few cheap checks wait for a whole
        batch's worth of room instead.
        """
        while any(queue.full() for queue in queues) and not self.should_stop:
            await asyncio.sleep(ROOM_POLL_SECONDS)

    def _may_deliver(self, tp: TP, generation: int, active_partitions: set[TP] | None) -> bool:
        """Whether a record of *tp*, fetched in consumer *generation*, may go
        to its stream now. Faust's ``getmany`` silently drops the rest of a
        batch when flow stops or the generation changes, and the records of a
        partition paused since the fetch; here they are held back instead."""
        app = self.app
        if self.suspend_flow.is_set() or not self.flow_active:
            return False
        if app.consumer_generation_id != generation:
            return False
        if app.rebalancing and not self._is_changelog_tp(tp):
            return False
        return (
            active_partitions is None or tp in active_partitions or tp in self._buffered_partitions
        )

    def stalled_partitions(self) -> dict[TP, str]:
        """Assigned stream partitions with records waiting and no commit since
        the last call while nothing of theirs is queued for an agent, each
        described by its committed offset, fetch position and highwater (to
        tell "never fetched" from "fetched and dropped")."""
        previous, seen, stalled = self._last_committed_seen, {}, {}
        for tp in sorted(self.assignment()):
            if self._is_changelog_tp(tp):
                continue
            committed, highwater = self._committed_offset.get(tp), self.highwater(tp)
            seen[tp] = committed
            if no_progress(previous, tp, committed, highwater) and self._nothing_queued(tp):
                stalled[tp] = (
                    f"{tp.topic}:{tp.partition} {committed}/{self._position(tp)}/{highwater}"
                )
        self._last_committed_seen = seen
        return stalled

    def _nothing_queued(self, tp: TP) -> bool:
        """No record of *tp*'s topic waits in a stream buffer: its agent is idle."""
        return all(queue.empty() for queue in self._stream_queues(tp))

    def stalled_twice(self, stalled: Mapping[TP, str]) -> list[TP]:
        """Those of *stalled* that were stalled at the previous check too."""
        again = [tp for tp in stalled if tp in self._stalled_before]
        self._stalled_before = set(stalled) - set(again)
        return again

    async def refetch(self, partitions: list[TP]) -> None:
        """Seek *partitions* back to their committed offsets, so that records
        fetched but never processed are read again (processing twice is
        harmless here: rows are unique per message id)."""
        consumer = self._thread._ensure_consumer()
        await self._thread.call_thread(seek_back_to_committed, consumer, partitions)

    def _position(self, tp: TP) -> int | None:
        consumer = self._thread._consumer
        return None if consumer is None else fetch_position(consumer, tp)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """As Faust's, remembering where each partition's processing starts:
        its committed offset exactly (Faust stores 0 as None, which
        :meth:`_new_offset` must tell apart from "unknown"), or, with none
        committed yet, its earliest offset (``auto_offset_reset``)."""
        committed = await super().seek_to_committed()
        starts = {
            tp: offset for tp, offset in committed.items() if offset is not None and offset >= 0
        }
        fresh = [tp for tp in committed if tp not in starts]
        if fresh:
            earliest = await self.earliest_offsets(*fresh)
            starts.update({tp: offset for tp, offset in earliest.items() if offset is not None})
        self._seek_committed.update(
            {TP(tp.topic, tp.partition): offset for tp, offset in starts.items()}
        )
        return committed

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        if self.offsets_in_transactions:
            return True  # committed already, by the batches' transactions
        return await super()._commit(offsets)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:  # its next owner's commits make ours stale
            self._seek_committed.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit for *tp*: the end of the run of acknowledged
        offsets that starts at its committed offset; None while that record
        itself is not acknowledged.

        Faust's version commits over missing records at the head of the run:
        always when the committed offset is 0 (stored as None) or nothing is
        committed yet, one record otherwise. Records lost to a race around a rebalance were then
        committed as processed: the replay fault case, which starts from
        offset 0, lost thousands of rows. Here the commit waits, and
        the stalled-partition repair reads the missing records again.
        """
        committed = self._committed_offset[tp] or self._seek_committed.get(tp)
        if committed is None or self._gap[tp]:
            return super()._new_offset(tp)
        return next_commit(self._acked[tp], self._acked_index[tp], committed)

    async def seek_wait(self, partitions: Mapping[TP, int | None]) -> None:
        """Seek and wait, reading a negative or missing offset as "from the start".

        Faust's table recovery seeks standby changelog partitions to the offset
        before the earliest it knows. While the broker cannot name the earliest
        (a group coordinator moving after a worker was killed), that came out
        below -1, or None, and aiokafka's refusal crashed the worker (the fault
        suite, twice). Reading a standby changelog from its start is always safe.
        """
        await super().seek_wait({tp: seek_target(offset) for tp, offset in partitions.items()})

    async def _rewind(self, tp: TP, offset: int) -> None:
        """Make sure *offset* of *tp* is fetched again, for a record held back;
        runs in the consumer's own thread."""
        if tp not in self.assignment():
            return  # revoked: its next owner starts at the committed offset
        consumer = self._thread._ensure_consumer()
        await self._thread.call_thread(rewind_to, consumer, tp, offset)


async def rewind_to(consumer: AIOKafkaConsumer, tp: TP, offset: int) -> None:
    """In the consumer's thread: seek *tp* back to *offset* if it was fetched
    past it, but never forward: a rebalance may have seeked it back to its
    committed offset since, and seeking forward from there would skip every
    record in between (they would never be processed, and the partition's
    commits would stop at the first of them)."""
    partition = TopicPartition(tp.topic, tp.partition)
    with contextlib.suppress(IllegalStateError):  # revoked meanwhile
        if must_rewind(fetch_position(consumer, tp), offset):
            consumer.seek(partition, offset)


async def seek_back_to_committed(consumer: AIOKafkaConsumer, partitions: list[TP]) -> None:
    """In the consumer's thread: each partition to its committed offset, or
    its start when nothing is committed."""
    for tp in (TopicPartition(tp.topic, tp.partition) for tp in partitions):
        with contextlib.suppress(IllegalStateError):  # revoked meanwhile
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)


def next_commit(acked: list[int], acked_index: set[int], committed: int) -> int | None:
    """The next offset to commit after *committed*, given the *acked* offsets
    (which it sorts and consumes, keeping *acked_index* in step); None when
    the record at *committed* is not acknowledged yet."""
    acked.sort()
    already = bisect.bisect_left(acked, committed)  # processed again after a seek
    done = acked[:already]
    if not acked[already:] or acked[already] != committed:
        del acked[:already]
        acked_index.difference_update(done)
        return None
    end = already
    while end + 1 < len(acked) and acked[end + 1] == acked[end] + 1:
        end += 1
    done = acked[: end + 1]
    del acked[: end + 1]
    acked_index.difference_update(done)
    return done[-1] + 1


def no_progress(
    previous: Mapping[TP, int | None], tp: TP, committed: int | None, highwater: int | None
) -> bool:
    """Whether records wait in *tp* (its *committed* offset is below its
    *highwater*) with the same committed offset as at the *previous* check.
    A partition the previous check did not see (the first check, or newly
    assigned) has had no time to make progress, so it does not count."""
    return (
        bool(highwater)
        and (committed or 0) < (highwater or 0)
        and tp in previous
        and previous[tp] == committed
    )


def fetch_position(consumer: AIOKafkaConsumer, tp: TP) -> int | None:
    """The offset *consumer* fetches next for *tp*; None when unassigned or
    being reset (without waiting for the reset, as ``position()`` does)."""
    subscription = consumer._subscription.subscription
    if subscription is None:
        return None
    state = subscription.assignment.state_value(TopicPartition(tp.topic, tp.partition))
    return state.position if state is not None and state.has_valid_position else None


def must_rewind(position: int | None, offset: int) -> bool:
    """Whether a partition at fetch *position* must seek back for *offset*
    to be fetched again (an unknown position is being reset to the start or
    to the committed offset, neither of which is past it)."""
    return position is not None and position > offset


def seek_target(offset: int | None) -> int:
    """The offset to seek to for Faust's *offset*: a negative or missing one
    means "from the start"."""
    return offset if offset is not None and offset > 0 else 0


class RawBytesTopic(faust.Topic):
    """A topic whose keys and values are the record's bytes, delivered as they are.

    Faust decodes every record through its serializer registry (key and value
    loaders, codec lookups, settings read through descriptors), about a tenth
    of a do-nothing agent's time, to return the very bytes it was given when
    the topic's types are ``bytes`` and its serializer ``raw``. This topic
    builds the event directly. Clones (agents clone their topic) keep it.
    """

    def _compile_decode(self) -> None:
        app = self.app
        event_type: Any = app.conf.Event  # typed as a special form upstream

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return event_type(app, message.key, message.value, message.headers, message)

        self.decode = decode  # type: ignore[method-assign]


class Transport(DurableTransport):
    Consumer = Consumer


def register(replication_setting: int = 0, fetch: FetchSettings | None = None) -> None:
    """Make ``maskstream-kafka://host:port`` broker URLs use this transport,
    creating topics with *replication_setting* (0: min(3, brokers)) and
    fetching by *fetch* (Faust's own settings if None)."""
    Transport.replication_setting = replication_setting
    ConsumerThread.fetch = fetch or FetchSettings()
    drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
