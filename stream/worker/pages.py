"""The worker's web pages and its periodic self-check.

- ``/seen-devices/<masked device id>/``: a device's ``seen_devices`` entry;
- ``/metrics``: Prometheus; ``/health`` and ``/ready``: what an orchestrator
  asks (both turn unhealthy when the self-check finds the agent stopped or a
  partition stalled, see :mod:`stream.worker.watchdog`; ``/ready`` alone while
  PostgreSQL or Kafka is unreachable, see :mod:`stream.worker.dependencies`).
"""

from __future__ import annotations

import logging
import time

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from stream.core.records import SeenDevice
from stream.postgres.connect import database_of
from stream.postgres.rows import device_entry
from stream.worker import watchdog
from stream.worker.app import WorkerApp
from stream.worker.dependencies import probe_forever
from stream.worker.faust_patches.internals import partition_count, recovery_completed
from stream.worker.faust_patches.table_store import local_entry
from stream.worker.metrics import HealthCollector
from stream.worker.table_partitions import co_partitioned

log = logging.getLogger(__name__)


def register_pages(worker: WorkerApp, agent: faust.types.AgentT) -> None:
    """Put the pages, the self-check timer (which watches *agent*) and the
    dependency probe on *worker*'s app."""
    app, metrics, seen_devices = worker.app, worker.metrics, worker.seen_devices
    settings, stats, dependencies = worker.settings, worker.stats, worker.dependencies
    database = database_of(settings)

    @app.timer(interval=watchdog.CHECK_INTERVAL_SECONDS)
    async def self_check() -> None:
        """Log the counters, and check that the agent consumes and partitions move."""
        log.info("pipeline: %s", stats.summary())
        stopped = watchdog.report_stopped_agents((agent,))
        stalled = await watchdog.repair_stalled_partitions(app)
        if dependencies.problems(time.monotonic()):
            # Partitions wait for the database or the broker: a restart would not
            # move them, so they do not count against liveness (readiness says why).
            stalled = []
        watchdog.health.record(stopped, stalled, time.monotonic())

    @app.task
    async def probe_dependencies() -> None:
        """From start-up on: PostgreSQL (and the schema) and Kafka, for ``/ready``."""
        await probe_forever(app, settings, dependencies)

    def liveness_problems() -> list[str]:
        return watchdog.health.problems(time.monotonic())

    def readiness_problems() -> list[str]:
        """Liveness problems, then the dependencies' (see the module docstring)."""
        return liveness_problems() + dependencies.problems(time.monotonic())

    metrics.registry.register(HealthCollector(liveness_problems, readiness_problems))

    @app.page("/seen-devices/{device}/")
    class SeenDeviceView(View):
        """``GET /seen-devices/<masked device id>/``: that device's ``seen_devices`` entry.

        From this worker's table if it holds the device's partition, otherwise
        from PostgreSQL, where the entry is written in the transaction of the
        device's rows: exact either way, and any worker can answer. While the
        raw topic and the changelog differ in partitions (the raw topic gained
        some since the workers started), always from PostgreSQL.
        """

        async def get(self, request: Request, device: str) -> Response:
            entry, source = None, "table"
            local = None
            if co_partitioned(
                partition_count(app, worker.raw_topic.get_topic_name()),
                partition_count(app, seen_devices.changelog_topic.get_topic_name()),
            ):
                local = local_entry(seen_devices, device.encode())
            if local is not None:
                entry = SeenDevice.loads(local)
            else:
                source = "database"
                async with await database.connect_async(connect_timeout=5) as conn:
                    entry = await device_entry(conn, settings.devices_table, device)
            if entry is None:
                return self.json({"error": "device not seen", "device": device}, status=404)
            fields = entry.asdict()
            return self.json(
                {"device": device, **fields, "source": source, "observed_at": time.time()}
            )

    @app.page("/metrics")
    async def prometheus_metrics(web: View, request: Request) -> Response:
        # aiohttp takes the charset separately; the exposition format is UTF-8 text.
        content_type = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")
        return web.bytes(metrics.exposition(), content_type=content_type)

    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        """Liveness: the event loop answers and the last self-checks found the
        agent consuming and no partition stalled (see stream.worker.watchdog). A
        worker that answers HTTP but moves no data is unhealthy: restarting it is the cure.
        An unreachable database or broker is not: a restart cannot mend it."""
        problems = liveness_problems()
        return web.json(
            {"status": "unhealthy" if problems else "ok", "problems": problems},
            status=503 if problems else 200,
        )

    @app.page("/ready")
    async def ready(web: View, request: Request) -> Response:
        """Readiness: healthy (as /health), partitions assigned and tables recovered,
        not rebalancing, PostgreSQL and Kafka reachable and the sink not retrying."""
        recovered = recovery_completed(app)
        problems = readiness_problems()
        is_ready = recovered and not app.rebalancing and not problems
        return web.json(
            {
                "ready": is_ready,
                "rebalancing": app.rebalancing,
                "recovered": recovered,
                "problems": problems,
            },
            status=200 if is_ready else 503,
        )
