"""The pipeline's one agent: ``logins.raw`` -> PostgreSQL and the output topics.

:func:`register_agent` puts the agent on a worker's app. When it starts, it
builds the collaborators of the steps in :mod:`stream.worker.pipeline`
(masker, PostgreSQL writer, ``seen_devices`` store, output topics) and runs
them on each batch of raw records; ``take_batches`` acknowledges the raw
offsets only once a batch's steps have returned.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, cast

import faust
from faust.types import TP

from stream.common.kafka_security import KafkaClients
from stream.core.records import RawLogin
from stream.postgres.connect import database_of
from stream.postgres.schema import tables_of
from stream.postgres.writer import BatchWriter
from stream.worker.app import WorkerApp
from stream.worker.device_table import DeviceStore
from stream.worker.faust_patches import transport
from stream.worker.faust_patches.batches import take_batches
from stream.worker.faust_patches.internals import aiokafka_producer
from stream.worker.outputs import KafkaOutputs
from stream.worker.pipeline import Collaborators, Publishing, process_batch
from stream.worker.transactions import TransactionalOutputs

# The agent's name as Faust (and the watchdog's reports) know it.
AGENT_NAME = "stream.worker.agents.process_logins"

# A worker allocates a few short-lived objects per record and keeps few:
# collecting the young generation every 700 allocations (Python's default)
# ran the collector dozens of times a batch, each walking Faust's long-lived
# objects too. Collect less often, and freeze what exists at start-up so
# that full collections leave it alone.
GC_YOUNG_THRESHOLD = 20_000


def register_agent(worker: WorkerApp) -> faust.types.AgentT:
    """Put the agent that processes ``logins.raw`` on *worker*'s app."""
    settings = worker.settings

    async def process_logins(stream: faust.types.StreamT[bytes]) -> None:
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        gc.freeze()
        writer = BatchWriter(database_of(settings), tables_of(settings))
        worker.dependencies.sink = writer.sink  # its retries make the worker not ready
        # Faust creates topics when an agent consumes them or on its own sends;
        # ours go through aiokafka batches, so create the outputs up front.
        await worker.masked_topic.maybe_declare()
        await worker.rejected_topic.maybe_declare()
        outputs = output_topics(worker)
        parts = collaborators(worker, writer, outputs)
        try:
            async for events in take_batches(stream, settings.batch_size, settings.batch_seconds):
                # The key ring's latest masker, taken between batches: a refresh
                # (stream.worker.keyring_source) never splits a batch over two rings.
                if parts.masker is not worker.keyring.masker:
                    parts = replace(parts, masker=worker.keyring.masker)
                await process_batch(raw_records(events), parts)
        finally:
            # Faust cancels a stopping agent's task twice (the actor, then its
            # service's futures), and the second cut this short: the open
            # transactions went uncommitted, and the next start processed
            # their batches again. Shielded, the commits finish while the
            # worker stops.
            await asyncio.shield(close(writer, outputs))

    return worker.app.agent(worker.raw_topic, name=AGENT_NAME)(process_logins)


async def close(writer: BatchWriter, outputs: KafkaOutputs | TransactionalOutputs) -> None:
    """Commit the open transactions (their outputs and raw offsets), then
    close the database connections."""
    try:
        if isinstance(outputs, TransactionalOutputs):
            await outputs.close()
    finally:
        await writer.close()


def output_topics(worker: WorkerApp) -> KafkaOutputs | TransactionalOutputs:
    """The output topics, published in transactions that commit the raw
    offsets (then Faust's own commits are bookkeeping only), unless
    MASKSTREAM_EXACTLY_ONCE is off or nothing is published."""
    settings, app = worker.settings, worker.app
    masked, rejected = worker.masked_topic.get_topic_name(), worker.rejected_topic.get_topic_name()
    if not settings.exactly_once or not (settings.publish_masked or settings.publish_rejected):
        return KafkaOutputs(partial(aiokafka_producer, app), masked, rejected)
    raw_topic = worker.raw_topic.get_topic_name()
    consumer = cast(transport.Consumer, app.consumer)
    outputs = TransactionalOutputs(
        KafkaClients.from_settings(settings),
        app.conf.id,
        raw_topic,
        masked,
        rejected,
        lambda: {tp.partition for tp in app.consumer.assignment() if tp.topic == raw_topic},
        lambda partitions: consumer.refetch([TP(raw_topic, p) for p in sorted(partitions)]),
        settings.transaction_seconds,
    )
    consumer.offsets_in_transactions = True

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[TP] = args[0]
        await outputs.revoke({tp.partition for tp in revoked if tp.topic == raw_topic})

    app.on_partitions_revoked.connect(on_revoked)
    return outputs


def collaborators(
    worker: WorkerApp, writer: BatchWriter, outputs: KafkaOutputs | TransactionalOutputs
) -> Collaborators:
    """The real collaborators of the agent's steps."""
    settings = worker.settings
    producer = partial(aiokafka_producer, worker.app)
    return Collaborators(
        masker=worker.keyring.masker,
        writer=writer,
        devices=DeviceStore(worker.seen_devices, producer),
        outputs=outputs,
        publishing=Publishing(
            masked=settings.publish_masked,
            rejected=settings.publish_rejected,
            attributes=settings.copy_attributes,
        ),
        stats=worker.stats,
        metrics=worker.metrics,
        logins_table=settings.logins_table,
        envelope=settings.envelope,
    )


def raw_records(events: Sequence[faust.types.EventT]) -> Iterator[tuple[RawLogin, int]]:
    """Each event's raw login and raw partition."""
    for event in events:
        message = event.message
        yield (
            RawLogin.from_kafka(
                body=event.value,
                headers=dict(event.headers or {}),
                key=message.key,
                timestamp_ms=int(message.timestamp * 1000),
                position=f"{message.topic}:{message.partition}:{message.offset}",
                offset=message.offset,
            ),
            message.partition,
        )
