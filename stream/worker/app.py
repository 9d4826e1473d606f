"""The Faust application of a worker: the app, its topics and its table.

:func:`build_app` wires settings to Faust: the app, the raw topic it
consumes, the two output topics it publishes to and the ``seen_devices``
table. The agent that moves data between them is registered on it by
:mod:`stream.worker.agents`, the pages by :mod:`stream.worker.pages`, both
from :func:`stream.worker.build.build_worker`. Nothing here reads the
environment or exits: ``stream.app`` does that, once.

A worker refuses to start without a masking key: :func:`build_app` raises
(KeyRingError) and never builds an app that could process PII unmasked.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import faust

from stream.common import logs
from stream.common.kafka_security import KafkaClients, KafkaSecurity
from stream.common.partitioning import partition_for_key
from stream.common.ports import choose_port
from stream.common.settings import Settings
from stream.core.records import MAX_RAW_RECORD_BYTES
from stream.worker.dependencies import Dependencies
from stream.worker.faust_patches import table_store
from stream.worker.faust_patches import transport as kafka_transport
from stream.worker.faust_patches.internals import forget_unacked
from stream.worker.faust_patches.worker_process import CRASH_EXIT_STATUS, Worker
from stream.worker.keyring_source import LiveKeyRing
from stream.worker.metrics import WorkerMetrics
from stream.worker.monitor import LeanMonitor
from stream.worker.stats import PipelineStats
from stream.worker.table_partitions import CountedChangelogTable, align_changelog

log = logging.getLogger(__name__)

# A worker stopping after an agent crashed exits by then, stopped or not.
CRASH_STOP_DEADLINE_SECONDS = 60.0


@dataclass(frozen=True)
class WorkerApp:
    """A worker's Faust app and what the agent and pages use of it."""

    settings: Settings
    app: faust.App
    raw_topic: faust.types.TopicT
    masked_topic: faust.types.TopicT
    rejected_topic: faust.types.TopicT
    seen_devices: faust.types.TableT
    # What this worker processed, for the periodic log line and the metrics.
    stats: PipelineStats
    metrics: WorkerMetrics
    # What the probes and the sink found of PostgreSQL and Kafka, for /ready.
    dependencies: Dependencies
    # The masker of the current key ring, re-read on an interval and on SIGHUP.
    keyring: LiveKeyRing


def build_app(settings: Settings) -> WorkerApp:
    """The app, topics and table *settings* describe (raises without a key ring
    or with an unusable Kafka security setting)."""
    keyring = LiveKeyRing.from_settings(settings)
    security = KafkaSecurity.from_settings(settings)
    app = faust_app(settings, security)
    raw_topic, masked_topic, rejected_topic = topics(app, settings)
    seen_devices = seen_devices_table(app, settings)
    app.before_start.append(
        partial(
            align_changelog,
            KafkaClients(settings.kafka_bootstrap_servers, security),
            seen_devices,
            settings.topics,
        )
    )
    keep_current(app, keyring, settings.keyring_refresh_seconds)
    stats = PipelineStats()
    return WorkerApp(
        settings=settings,
        app=app,
        raw_topic=raw_topic,
        masked_topic=masked_topic,
        rejected_topic=rejected_topic,
        seen_devices=seen_devices,
        stats=stats,
        metrics=WorkerMetrics(app, stats),
        dependencies=Dependencies(),
        keyring=keyring,
    )


def keep_current(app: WorkerFaustApp, keyring: LiveKeyRing, refresh_seconds: float) -> None:
    """Re-read the key ring every *refresh_seconds* (0: never) and on SIGHUP.

    A Faust timer rather than a task of our own: the app starts and stops it
    with its other services.
    """

    async def install_sighup() -> None:
        keyring.refresh_on_sighup(asyncio.get_running_loop())

    app.before_start.append(install_sighup)
    if refresh_seconds > 0:

        async def refresh_keyring() -> None:
            await keyring.refresh_async()

        app.timer(refresh_seconds, name="refresh_keyring")(refresh_keyring)


class WorkerFaustApp(faust.App):
    """Faust's app, with steps that run before any of its services starts,
    and a worker that stops when an agent crashes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Awaited in order when the app first starts, before its consumer,
        #: producer and tables (so before Faust declares any topic).
        self.before_start: list[Callable[[], Awaitable[None]]] = []
        #: The agent whose crash stopped the worker (it then exits non-zero).
        self.crashed_agent: str | None = None

    async def on_first_start(self) -> None:
        for step in self.before_start:
            await step()
        await super().on_first_start()

    async def _on_agent_error(self, agent: faust.types.AgentT, exc: BaseException) -> None:
        await super()._on_agent_error(agent, exc)
        self.on_agent_crash(agent.name, exc)

    def on_agent_crash(self, agent: str, exc: BaseException) -> None:
        """Stop the worker as SIGTERM does (acknowledged offsets committed, the
        group left at once), to exit with ``CRASH_EXIT_STATUS`` (see
        stream.worker.faust_patches.worker_process); a stop that still hangs
        ends the process after ``CRASH_STOP_DEADLINE_SECONDS``. Logs the
        exception's type only: its message may quote a login."""
        if self.crashed_agent is not None:
            return
        self.crashed_agent = agent
        log.error(
            "agent %s crashed (%s): stopping this worker, to exit with status %d so that "
            "its supervisor starts it again; its partitions go to the other workers meanwhile",
            agent,
            type(exc).__name__,
            CRASH_EXIT_STATUS,
        )
        forget_unacked(self)  # the crashed agent's records: read again by the next owner
        deadline = threading.Timer(CRASH_STOP_DEADLINE_SECONDS, os._exit, [CRASH_EXIT_STATUS])
        deadline.daemon = True
        deadline.start()
        os.kill(os.getpid(), signal.SIGTERM)


def faust_app(settings: Settings, kafka_security: KafkaSecurity) -> WorkerFaustApp:
    """The Faust app, on our transport and table store (registered here)."""
    kafka_transport.register(
        settings.topics.replication_factor,
        kafka_transport.FetchSettings(settings.fetch_min_bytes, settings.fetch_wait_ms),
    )
    table_store.register()
    return WorkerFaustApp(
        settings.app_id,
        broker=[
            f"{kafka_transport.SCHEME}://{server}"
            for server in settings.kafka_bootstrap_servers.split(",")
        ],
        broker_credentials=kafka_security.faust_credentials(),
        logging_config=logs.faust_logging_config(),
        # RocksDB under datadir by default: a restart reads only the changelog's
        # tail, and RAM does not grow with the devices (MASKSTREAM_TABLE_STORE).
        store=table_store.store_url(settings.table_store),
        topic_partitions=settings.topics.partitions,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
        # Several workers may run on one host: take the configured port if free.
        web_port=choose_port(settings.worker_web_port, set()),
        web_host=settings.worker_web_host,
        datadir=str(settings.data_dir),
        producer_acks=-1,
        # Batch masked records and changelog updates into few produce requests.
        producer_linger=0.02,
        producer_max_batch_size=256 * 1024,
        producer_max_request_size=2 * 1024 * 1024,
        # A raw record may hold a 1 MiB body: fetch at least one whole record of
        # a partition per request (an older broker would otherwise send part of
        # it, and aiokafka skips a record it cannot read whole).
        consumer_max_fetch_size=MAX_RAW_RECORD_BYTES,
        # Topics created moments ago are assigned within seconds (see there).
        consumer_metadata_max_age_ms=kafka_transport.METADATA_MAX_AGE_MS,
        # Kafka's default partitioning, without aiokafka's byte-at-a-time murmur2.
        producer_partitioner=partition_for_key,
        # Commit by time (every few seconds) rather than every few hundred records:
        # each commit first flushes the producer, and replaying a few seconds of
        # records after a crash costs nothing (rows are unique per message id).
        broker_commit_every=50 * settings.batch_size,
        stream_buffer_maxsize=4 * settings.batch_size,
        autodiscover=False,
        monitor=LeanMonitor(),
        Worker=Worker,  # its SIGUSR1 stack dump leaves out local variables (PII)
    )


def topics(
    app: faust.App, settings: Settings
) -> tuple[faust.types.TopicT, faust.types.TopicT, faust.types.TopicT]:
    """The raw topic the agent consumes and the two output topics."""
    # internal=True: the worker creates missing topics with our partition count
    # (and the raw topic with its retention, as the bridge does) before consuming.
    raw_topic = kafka_transport.RawBytesTopic(
        app,
        topics=[settings.topics.raw],
        key_type=bytes,
        value_type=bytes,
        value_serializer="raw",
        partitions=settings.topics.partitions,
        retention=timedelta(hours=settings.topics.raw_retention_hours),
        # Every body SQS accepts fits, as on the topic the bridge creates.
        config={"max.message.bytes": str(MAX_RAW_RECORD_BYTES)},
        internal=True,
    )
    # Output topics for downstream consumers: JSON bytes that the agent encodes
    # itself (see stream.core.records for why), masked logins keyed by masked device id,
    # rejections by message id.
    masked_topic, rejected_topic = (
        app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            value_serializer="raw",
            partitions=settings.topics.partitions,
            internal=True,
        )
        for name in (settings.topics.masked, settings.topics.rejected)
    )
    return raw_topic, masked_topic, rejected_topic


def seen_devices_table(app: faust.App, settings: Settings) -> faust.types.TableT:
    """The ``seen_devices`` table."""
    # Keys are masked device ids as bytes. An entry's changelog partition is the
    # raw partition of its device's logins (stream.worker.device_table writes it there), so each
    # entry lives with, and moves with, the raw partition that updates it.
    # Its changelog's name carries its partition count: stream.worker.table_partitions.
    table = CountedChangelogTable(
        app,
        name="seen_devices",
        beacon=app.tables.beacon,
        key_type=bytes,
        value_type=bytes,  # SeenDevice JSON, stored raw: see stream.core.records
        partitions=settings.topics.partitions,
        options=table_store.table_options(settings.table_store),
    )
    app.tables.add(table)
    return table
