"""The pipeline's one agent: ``logins.raw`` -> PostgreSQL and the output topics.

Per batch of raw records, ``process_logins``

1. turns each record into a masked login or a rejection (pure: stream.core.batch);
2. writes the rows, the rejections and the devices' state in one PostgreSQL
   transaction (stream.postgres.writer), which returns each device's absolute state;
3. puts those states in the Faust table ``seen_devices`` and its changelog,
   at the raw partition of the device (stream.worker.device_table);
4. publishes masked logins to ``logins.masked`` and rejections to
   ``logins.rejected`` for downstream consumers (each can be turned off);
5. returns, and only then does ``take_events`` acknowledge the raw offsets,
   so a crash anywhere before replays the batch instead of losing it.
"""

from __future__ import annotations

import gc
import logging
import time
from functools import partial

import faust

from stream.core.batch import LoginBatch
from stream.core.keyring import load_keyring
from stream.core.masking import Masker
from stream.core.records import RawLogin, Rejection
from stream.core.transform import reject
from stream.postgres.rows import login_row
from stream.postgres.schema import tables_of
from stream.postgres.writer import BatchWriter, Written
from stream.worker.app import (
    app,
    masked_topic,
    metrics,
    raw_topic,
    rejected_topic,
    seen_devices,
    settings,
    stats,
)
from stream.worker.dependencies import dependencies
from stream.worker.device_table import store_entries
from stream.worker.faust_patches.internals import aiokafka_producer
from stream.worker.producing import Deliveries, KeyedRecord, send_many, until_delivered

log = logging.getLogger(__name__)

# An output record larger than this is left off its topic (logged, counted):
# Kafka's default message.max.bytes is 1 MiB, and retrying a record the
# broker can never take would stall the partition. Its row is in PostgreSQL.
MAX_OUTPUT_RECORD_BYTES = 900_000


# A worker allocates a few short-lived objects per record and keeps few:
# collecting the young generation every 700 allocations (Python's default)
# ran the collector dozens of times a batch, each walking Faust's long-lived
# objects too. Collect less often, and freeze what exists at start-up so
# that full collections leave it alone.
GC_YOUNG_THRESHOLD = 20_000


@app.agent(raw_topic)
async def process_logins(stream: faust.StreamT[bytes]) -> None:
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    gc.freeze()
    masker = Masker(load_keyring(settings))
    writer = BatchWriter(settings.database_url, tables_of(settings))
    dependencies.sink = writer.sink  # its retries make the worker not ready
    # Faust creates topics when an agent consumes them or on its own sends;
    # ours go through aiokafka batches, so create the outputs up front.
    await masked_topic.maybe_declare()
    await rejected_topic.maybe_declare()
    try:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            batch = LoginBatch.of(
                ((raw_login(e), e.message.partition) for e in events), masker, login_row
            )
            started = time.perf_counter()
            refusal = partial(refused_row, batch, masker)
            written = await writer.write(batch.rows, batch.rejections, refusal)
            metrics.observe_batch(
                settings.logins_table, len(batch.rows), time.perf_counter() - started
            )
            metrics.observe_committed(batch.logins)
            await until_delivered(partial(publish, batch, written), "a batch's outputs")
            count(batch, written)
    finally:
        await writer.close()


def raw_login(event: faust.EventT) -> RawLogin:
    message = event.message
    return RawLogin.from_kafka(
        body=event.value,
        headers=dict(event.headers or {}),
        key=message.key,
        timestamp_ms=int(message.timestamp * 1000),
        position=f"{message.topic}:{message.partition}:{message.offset}",
    )


def refused_row(batch: LoginBatch, masker: Masker, index: int, reason: str) -> Rejection:
    """The rejection of a login whose row the database refused: its raw body,
    encrypted, so a key holder can see what the database would not take."""
    return reject(batch.raws[index], reason, masker)


async def publish(batch: LoginBatch, written: Written) -> Deliveries:
    """The devices' new state to ``seen_devices``, masked logins and rejections to
    their output topics; the futures resolve once Kafka holds them all."""
    producer = aiokafka_producer(app)
    entries = {device: state.entry for device, state in written.devices.items()}
    deliveries = await store_entries(seen_devices, producer, entries, batch.device_partitions())
    if settings.publish_masked:
        refused = {index for index, _ in written.refused}
        masked = [
            (login.masked_device_id.encode(), login.dumps())
            for index, login in enumerate(batch.logins)
            if index not in refused
        ]
        deliveries += await send_many(producer, masked_topic.get_topic_name(), fitting(masked))
    if settings.publish_rejected:
        rejections = [(r.message_id.encode(), r.dumps()) for r in written.rejections]
        deliveries += await send_many(
            producer, rejected_topic.get_topic_name(), fitting(rejections)
        )
    return deliveries


def fitting(records: list[KeyedRecord]) -> list[KeyedRecord]:
    """*records* without those too large for any Kafka topic (counted)."""
    kept = [record for record in records if len(record[1]) <= MAX_OUTPUT_RECORD_BYTES]
    if len(kept) < len(records):
        stats.unpublished += len(records) - len(kept)
        log.error(
            "%d output records too large for Kafka left off their topic", len(records) - len(kept)
        )
    return kept


def count(batch: LoginBatch, written: Written) -> None:
    stats.masked += len(batch.logins)
    stats.extra_fields_dropped += sum(login.dropped_fields for login in batch.logins)
    stats.rows_written += written.new_rows
    stats.rows_already_present += len(batch.rows) - written.new_rows - len(written.refused)
    for rejection in written.rejections:
        stats.rejections[rejection.reason] += 1
