"""The bridge's HTTP endpoints: Prometheus ``/metrics``, ``/health``, ``/ready``.

Counters are read from :class:`bridge.counters.Counters` at scrape time, so
the log line and the metrics never disagree and the hot path pays nothing.
The SQS queue depth is sampled every ``DEPTH_INTERVAL`` seconds (one
GetQueueAttributes call on the bridge's own client), never on the scrape itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bridge.counters import Counters

log = logging.getLogger(__name__)

DEPTH_INTERVAL = 15.0
DEPTH_ATTRIBUTES = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


class BridgeCollector:
    """Counters, messages held in flight, and the last sampled queue depth."""

    def __init__(self, counters: Counters, in_flight: Callable[[], int]) -> None:
        self.counters = counters
        self.in_flight = in_flight
        self.queue_depth: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        for name, value in self.counters.snapshot().items():
            yield CounterMetricFamily(
                f"maskstream_bridge_messages_{name}", f"SQS messages {name}", value=value
            )
        yield GaugeMetricFamily(
            "maskstream_bridge_in_flight",
            "Messages received and not yet deleted",
            value=self.in_flight(),
        )
        depth = GaugeMetricFamily(
            "maskstream_sqs_queue_depth", "Approximate messages in the queue", labels=["state"]
        )
        for state, value in sorted(self.queue_depth.items()):
            depth.add_metric([state], value)
        yield depth


class BridgeEndpoints:
    """Serves the endpoints and samples the queue depth until stopped."""

    def __init__(
        self,
        collector: BridgeCollector,
        ready: Callable[[], bool],
        queue: Any,
    ) -> None:
        """*queue* is the bridge's :class:`bridge.sqs.queue.SqsQueue` (its client and URL)."""
        self.collector = collector
        self.ready = ready
        self.queue = queue
        self.registry = CollectorRegistry()
        self.registry.register(collector)
        self._runner: web.AppRunner | None = None
        self._sampler: asyncio.Task[None] | None = None

    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self._sampler = asyncio.create_task(self._sample_depth())
        log.info("metrics on http://%s:%d/metrics", host, port)

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _ready(self, request: web.Request) -> web.Response:
        ready = self.ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _sample_depth(self) -> None:
        while True:
            try:
                attributes = await self.queue.client.get_queue_attributes(
                    self.queue.url, list(DEPTH_ATTRIBUTES.values())
                )
                self.collector.queue_depth = {
                    state: int(attributes.get(name, 0)) for state, name in DEPTH_ATTRIBUTES.items()
                }
            except Exception as exc:  # a metrics sample must never stop the bridge
                log.warning("queue depth not sampled: %s", exc)
            await asyncio.sleep(DEPTH_INTERVAL)
