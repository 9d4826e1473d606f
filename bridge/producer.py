"""The Kafka side of the bridge: the raw record, the producer, the raw topic.

The producer is idempotent with acks=all, so an acknowledgement means the
record is durably in the topic exactly once per send; only then may the bridge
delete the SQS message. Bodies go out as the exact bytes SQS delivered.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)

from bridge.ports import RawRecord, SqsMessage
from stream.common.canonical import raw_record_key
from stream.common.kafka_security import KafkaClients, KafkaSecurity
from stream.common.partitioning import murmur2, partition_for_key
from stream.common.raw_records import (
    HEADER_ATTRIBUTE_PREFIX,
    HEADER_ATTRIBUTE_TYPE_PREFIX,
    HEADER_DEDUPLICATION_ID,
    HEADER_GROUP_ID,
    HEADER_MESSAGE_ID,
    HEADER_RECEIVE_COUNT,
    HEADER_SENT_TIMESTAMP,
    MAX_RAW_RECORD_BYTES,
)
from stream.common.settings import Settings
from stream.common.topic_admin import ensure_topics, raw_topic_spec

log = logging.getLogger(__name__)

# The body field whose hash keys each raw record (MASKSTREAM_BRIDGE_KEY_FIELD).
DEFAULT_KEY_FIELD = "device_id"

# Largest produce request: one record of the largest SQS body (1 MiB on AWS
# since 2025) with its key and headers. The raw topic is created with the
# same max.message.bytes, since a broker's default (1 MiB + 12) is too small.
MAX_REQUEST_BYTES = MAX_RAW_RECORD_BYTES
# A broken producer is replaced at most this often, so a persistent error
# (e.g. missing ACLs) cannot turn into a reconnect storm.
MIN_SECONDS_BETWEEN_RESTARTS = 5.0


def to_record(
    message: SqsMessage, key_field: str = DEFAULT_KEY_FIELD, envelope: str = "auto"
) -> RawRecord:
    """Key by a hash of the login's *key_field* (so a device's logins share a
    partition; inside an SNS or EventBridge envelope, the inner login's), or
    by message id when there is no such field; the body is forwarded
    unchanged, the time is SentTimestamp, and the SQS metadata and message
    attributes become headers."""
    headers = [
        (HEADER_MESSAGE_ID, message.message_id.encode()),
        (HEADER_RECEIVE_COUNT, str(message.receive_count).encode()),
    ]
    if message.sent_timestamp_ms is not None:
        headers.append((HEADER_SENT_TIMESTAMP, str(message.sent_timestamp_ms).encode()))
    if message.group_id is not None:
        headers.append((HEADER_GROUP_ID, message.group_id.encode()))
    if message.deduplication_id is not None:
        headers.append((HEADER_DEDUPLICATION_ID, message.deduplication_id.encode()))
    for attribute in message.attributes:
        headers.append((HEADER_ATTRIBUTE_PREFIX + attribute.name, attribute.value))
        if attribute.data_type != "String":
            type_header = HEADER_ATTRIBUTE_TYPE_PREFIX + attribute.name
            headers.append((type_header, attribute.data_type.encode()))
    return RawRecord(
        key=raw_record_key(message.body, key_field, envelope) or message.message_id.encode(),
        value=message.body,
        headers=tuple(headers),
        timestamp_ms=message.sent_timestamp_ms,
    )


def producer_options(settings: Settings) -> dict[str, Any]:
    """AIOKafkaProducer keyword arguments: durable, idempotent, batched for throughput."""
    compression = settings.bridge_compression.lower()
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": "maskstream-bridge",
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": settings.bridge_linger_ms,
        "max_batch_size": settings.bridge_batch_bytes,
        "max_request_size": MAX_REQUEST_BYTES,
        "compression_type": None if compression in ("", "none") else compression,
        "partitioner": partition_for_key,
        **KafkaSecurity.from_settings(settings).aiokafka_options(),
    }


class ErrorKind(enum.Enum):
    """What to do with a message whose produce failed."""

    RETRY = "retry"  # transient: send it again after a backoff
    DROP = "drop"  # this record can never be written: leave it to SQS's redrive policy
    RESTART = "restart"  # the producer itself is unusable: replace it, then retry


_UNWRITABLE = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    UnsupportedForMessageFormatError,
)


def classify_error(exc: BaseException) -> ErrorKind:
    """Sort a produce failure; unknown non-retriable errors replace the producer.

    aiokafka reports connection loss as retriable and a full buffer or a slow
    metadata fetch as KafkaTimeoutError; anything else non-retriable, such as a
    fenced or closed idempotent producer, leaves that producer unable to send again.
    """
    if isinstance(exc, _UNWRITABLE):
        return ErrorKind.DROP
    if isinstance(exc, KafkaTimeoutError) or (isinstance(exc, KafkaError) and exc.retriable):
        return ErrorKind.RETRY
    return ErrorKind.RESTART


async def ensure_topic(settings: Settings) -> bool:
    """Create the raw topic unless it exists; return whether it was created.

    It is replicated as MASKSTREAM_REPLICATION_FACTOR says (by default
    min(3, brokers), ``min.insync.replicas`` one less, so that with acks=all
    an acknowledgement means two copies when there are three). An existing
    topic is left exactly as it is, with a warning if it has fewer copies:
    changing partitions, replicas or retention of a live topic is an
    operator's decision, not a side effect of starting a bridge.
    """
    kafka = KafkaClients.from_settings(settings)
    async with kafka.admin_session(
        client_id="maskstream-bridge-admin", request_timeout_ms=15_000
    ) as admin:
        return bool(
            await ensure_topics(
                admin, [raw_topic_spec(settings.topics)], settings.topics.replication_factor
            )
        )


Listener = Callable[[list[Any], BaseException | None], None]


@dataclass
class _OpenBatch:
    """A partition's batch being filled: aiokafka's builder and who to tell about it."""

    builder: Any
    tokens: list[Any] = field(default_factory=list)


# Room for the record's framing and its three small headers.
RECORD_OVERHEAD_BYTES = 256


def record_size(record: RawRecord) -> int:
    """Upper bound of *record*'s size inside a batch, to refuse what no batch can carry."""
    return len(record.key) + len(record.value) + RECORD_OVERHEAD_BYTES


def _no_listener(tokens: list[Any], error: BaseException | None) -> None:
    raise RuntimeError("KafkaSink.listen() was not called")


class KafkaSink:
    """The bridge's idempotent producer, fed one batch per partition at a time.

    aiokafka's ``send()`` costs a coroutine, a future and a callback per
    record; at thousands of records a second that is a large part of the
    bridge's CPU, and the bridge is bound by CPU. So the sink fills one
    aiokafka ``BatchBuilder`` per partition itself (partitioned like the Java
    client: murmur2 of the key), submits it with ``send_batch`` when it is
    full or its linger time is up, and tells its listener the outcome once
    per batch, with the tokens of all its records. The producer is replaced
    when it becomes unusable.
    """

    def __init__(
        self,
        settings: Settings,
        factory: Callable[..., Any] = AIOKafkaProducer,
        clock: Callable[[], float] = time.monotonic,
        topic_creator: Callable[[Settings], Awaitable[bool]] = ensure_topic,
    ) -> None:
        self._settings = settings
        self._topic_creator = topic_creator
        # The sink lingers itself; aiokafka should send a submitted batch at once.
        self._options = producer_options(settings) | {"linger_ms": 0}
        self._linger = settings.bridge_linger_ms / 1000
        self._topic = settings.topics.raw
        self._factory = factory
        self._clock = clock
        self._listener: Listener = _no_listener
        self._producer: Any = None
        self._partitions: list[int] = []
        self._open: dict[int, _OpenBatch] = {}
        self._linger_timer: asyncio.TimerHandle | None = None
        self._broken = False
        self._started_at = float("-inf")
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()

    def listen(self, listener: Listener) -> None:
        """Call *listener(tokens, error)* once per batch: error None means acknowledged."""
        self._listener = listener

    @property
    def started(self) -> bool:
        """Whether a producer has started, i.e. Kafka answered (the bridge's readiness)."""
        return self._producer is not None

    async def _new_producer(self) -> Any:
        producer = self._factory(**self._options)
        try:
            await producer.start()
            self._partitions = sorted(await producer.partitions_for(self._topic))
        except BaseException:
            await _quietly(producer.stop(), timeout=5.0)
            raise
        return producer

    async def start(self) -> None:
        """Make sure the raw topic exists, then connect.

        Raises if Kafka is unreachable; the caller retries with backoff.
        """
        topics = self._settings.topics
        if await self._topic_creator(self._settings):
            log.info(
                "created topic %s (%d partitions, retention %dh)",
                topics.raw,
                topics.partitions,
                topics.raw_retention_hours,
            )
        else:
            log.info("topic %s exists", topics.raw)
        self._producer = await self._new_producer()
        self._started_at = self._clock()

    async def send(self, record: RawRecord, token: Any) -> None:
        """Add *record* to its partition's batch; the listener hears of it with *token*.

        Raises (and reports nothing) if the record can never be written or no
        producer is available.
        """
        if self._broken:
            await self._replace()
        size = record_size(record)
        if size > MAX_REQUEST_BYTES:
            raise MessageSizeTooLargeError(
                f"a record of about {size} bytes exceeds the {MAX_REQUEST_BYTES}-byte limit"
            )
        key = record.key
        partition = self._partitions[(murmur2(key) & 0x7FFFFFFF) % len(self._partitions)]
        if not self._append(partition, record, token):
            await self._submit(partition)
            self._append(partition, record, token)  # a new batch always takes its first record

    def _append(self, partition: int, record: RawRecord, token: Any) -> bool:
        """Append to the partition's open batch, opening one if needed; False if full."""
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = _OpenBatch(self._producer.create_batch())
            if self._linger_timer is None:
                self._linger_timer = asyncio.get_running_loop().call_later(
                    self._linger, self._linger_expired
                )
        added = batch.builder.append(
            timestamp=record.timestamp_ms,
            key=record.key,
            value=record.value,
            headers=list(record.headers),
        )
        if added is None:
            return False
        batch.tokens.append(token)
        return True

    def _linger_expired(self) -> None:
        """Submit every open batch at once, so aiokafka sends them in one request."""
        self._linger_timer = None
        for partition in list(self._open):
            self._in_background(self._submit(partition))

    def _in_background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _submit(self, partition: int) -> None:
        """Hand the partition's open batch to aiokafka; the outcome goes to the listener."""
        batch = self._open.pop(partition, None)
        if batch is None or not batch.tokens:
            return
        try:
            delivery = await self._producer.send_batch(
                batch.builder, self._topic, partition=partition
            )
        except Exception as exc:
            self._report(batch.tokens, exc)
            return
        delivery.add_done_callback(functools.partial(self._delivered, batch.tokens))

    def _delivered(self, tokens: list[Any], delivery: asyncio.Future[Any]) -> None:
        if delivery.cancelled():
            self._report(tokens, KafkaConnectionError("delivery cancelled"))
        else:
            self._report(tokens, delivery.exception())

    def _report(self, tokens: list[Any], error: BaseException | None) -> None:
        if error is not None and classify_error(error) is ErrorKind.RESTART:
            self.mark_broken(error)
        self._listener(tokens, error)

    def mark_broken(self, exc: BaseException) -> None:
        """Schedule a replacement producer before the next send."""
        if not self._broken:
            log.warning(
                "Kafka producer unusable (%s: %s); a new one will be started",
                type(exc).__name__,
                exc,
            )
        self._broken = True

    async def _replace(self) -> None:
        async with self._lock:
            if not self._broken:
                return
            if self._clock() - self._started_at < MIN_SECONDS_BETWEEN_RESTARTS:
                raise KafkaConnectionError("producer was replaced moments ago; waiting")
            self._started_at = self._clock()
            new = await self._new_producer()
            old, self._producer, self._broken = self._producer, new, False
            # Batches the old producer never got are sent again through the new one.
            unsent, self._open = list(self._open.values()), {}
            for batch in unsent:
                self._listener(batch.tokens, KafkaConnectionError("producer replaced"))
            self._in_background(_quietly(old.stop(), timeout=10.0))
            log.info("new Kafka producer started")

    async def stop(self, timeout: float) -> bool:
        """Submit what is batched, flush and close within *timeout* seconds.

        Returns whether everything was flushed in time.
        """
        if self._producer is None:
            return True
        deadline = self._clock() + timeout
        for partition in list(self._open):
            self._in_background(self._submit(partition))
        if self._background:
            await asyncio.wait(set(self._background), timeout=max(0.0, deadline - self._clock()))
        flushed = await _quietly(self._producer.stop(), timeout=max(0.5, deadline - self._clock()))
        for task in list(self._background):
            task.cancel()
        return flushed


async def _quietly(awaitable: Any, timeout: float) -> bool:
    """Await a clean-up step for at most *timeout* seconds; report success, never raise."""
    try:
        await asyncio.wait_for(awaitable, timeout)
    except Exception as exc:
        log.debug("clean-up step failed: %s: %s", type(exc).__name__, exc)
        return False
    return True
