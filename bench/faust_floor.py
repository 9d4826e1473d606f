"""A Faust app that does nothing with its records: the ceiling of any Faust hop.

``faust -A bench.faust_floor worker`` reads ``MASKSTREAM_TOPIC_RAW`` with the
same transport, monitor and settings as the pipeline's workers, counts the
records in batches and writes the running count to
``$FLOOR_COUNT_DIR/<pid>.count``. The stream benchmark runs it beside the
pipeline: no real work can make a Faust hop faster than this.
"""

from __future__ import annotations

import os
from pathlib import Path

import faust

from stream.common import settings as settings_module
from stream.worker.faust_patches import transport as kafka_transport
from stream.worker.faust_patches.batches import take_batches
from stream.worker.monitor import LeanMonitor

settings = settings_module.load()
kafka_transport.register()

app = faust.App(
    settings.app_id,
    broker=f"{kafka_transport.SCHEME}://{settings.kafka_bootstrap_servers.split(',')[0]}",
    store="memory://",
    datadir=str(settings.data_dir),  # as the workers: not the current directory
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    autodiscover=False,
    monitor=LeanMonitor(),
)
raw_topic = kafka_transport.RawBytesTopic(
    app, topics=[settings.topics.raw], key_type=bytes, value_type=bytes, value_serializer="raw"
)


@app.agent(raw_topic)
async def count_records(stream: faust.StreamT[bytes]) -> None:
    count_file = Path(os.environ["FLOOR_COUNT_DIR"]) / f"{os.getpid()}.count"
    partial = count_file.with_suffix(".partial")
    seen = 0
    async for events in take_batches(stream, settings.batch_size, settings.batch_seconds):
        seen += len(events)
        partial.write_text(str(seen))
        partial.replace(count_file)  # never read half written
