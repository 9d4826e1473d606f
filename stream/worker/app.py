"""The Faust application: ``faust -A stream.app worker -l info``.

This module wires configuration to Faust: the app, the raw topic it consumes,
the two output topics it publishes to and the ``seen_devices`` table. The
agent that moves data between them lives in :mod:`stream.worker.agents`, which
imports this module (``stream.app`` imports both, for ``faust -A``).

A worker refuses to start without a masking key: it exits with one line
naming the variables to set, and never processes PII unmasked.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import faust

from stream.common import logs
from stream.common import settings as settings_module
from stream.common.kafka_security import KafkaSecurity, KafkaSecurityError
from stream.common.partitioning import partition_for_key
from stream.common.ports import choose_port
from stream.core.keyring import KeyRingError, load_keyring
from stream.core.records import MAX_RAW_RECORD_BYTES
from stream.worker.faust_patches import table_store
from stream.worker.faust_patches import transport as kafka_transport
from stream.worker.faust_patches.stack_dump import Worker
from stream.worker.metrics import WorkerMetrics
from stream.worker.monitor import LeanMonitor
from stream.worker.stats import PipelineStats

settings = settings_module.load()

try:
    load_keyring(settings)
    kafka_security = KafkaSecurity.from_settings(settings)
except (KeyRingError, KafkaSecurityError) as exc:
    sys.exit(f"maskstream worker: {exc}")

kafka_transport.register(settings.topics.replication_factor)
table_store.register()

app = faust.App(
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
masked_topic = app.topic(
    settings.topics.masked,
    key_type=bytes,
    value_type=bytes,
    value_serializer="raw",
    partitions=settings.topics.partitions,
    internal=True,
)
rejected_topic = app.topic(
    settings.topics.rejected,
    key_type=bytes,
    value_type=bytes,
    value_serializer="raw",
    partitions=settings.topics.partitions,
    internal=True,
)

# Keys are masked device ids as bytes. An entry's changelog partition is the
# raw partition of its device's logins (stream.worker.device_table writes it there), so each
# entry lives with, and moves with, the raw partition that updates it.
seen_devices = app.Table(
    "seen_devices",
    key_type=bytes,
    value_type=bytes,  # SeenDevice JSON, stored raw: see stream.core.records
    partitions=settings.topics.partitions,
    options=table_store.table_options(settings.table_store),
)

# What this worker processed, for the periodic log line (and metrics later).
stats = PipelineStats()
metrics = WorkerMetrics(app, stats)
