"""The bridge's HTTP endpoints: Prometheus ``/metrics``, ``/health``, ``/ready``.

Counters are read from :class:`bridge.counters.Counters` at scrape time, so
the log line and the metrics never disagree and the hot path pays nothing;
so are the age of the oldest message held (its SentTimestamp, one scan of
what is held per scrape) and the SQS and Kafka outages. ``/ready`` answers
503 with the reason while either service is out: the bridge moves nothing
then, though it is alive (``/health``) and a restart would not help.
The SQS queue depth, and its dead-letter queue's, are sampled every
``DEPTH_INTERVAL`` seconds on the bridge's own SQS client, never on the
scrape itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bridge.counters import Counters
from bridge.outage import OutageLog
from stream.common.redrive import parse_redrive_policy

log = logging.getLogger(__name__)

DEPTH_INTERVAL = 15.0
DEPTH_ATTRIBUTES = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


class Observed(Protocol):
    """What the endpoints read of the forwarder (:class:`bridge.forwarder.Forwarder`)."""

    counters: Counters

    @property
    def in_flight(self) -> int: ...
    @property
    def pollers(self) -> int: ...
    @property
    def open_polls(self) -> int: ...
    def oldest_held_sent_ms(self) -> int | None: ...
    def outages(self) -> list[OutageLog]: ...


def problems(forwarder: Observed, kafka_started: bool) -> list[str]:
    """Why the bridge is not ready: Kafka never answered, or SQS or Kafka is out now."""
    found = [] if kafka_started else ["Kafka has not answered yet"]
    return found + [p for p in (o.problem() for o in forwarder.outages()) if p is not None]


@dataclass
class WatchedQueue:
    """One queue as the endpoints see it: its forwarder, its SQS adapter (for the depth
    samples) and whether its Kafka producer has started; then the last samples."""

    name: str
    forwarder: Observed
    queue: Any = None
    kafka_started: Callable[[], bool] = lambda: True
    depth: dict[str, int] = field(default_factory=dict)
    dead_letters: int | None = None
    dead_letter_url: str | None = None


def queue_name(url: str) -> str:
    """A queue's name, the last part of its URL: the metrics' ``queue`` label."""
    return url.rstrip("/").rpartition("/")[2] or url


def all_problems(watched: Sequence[WatchedQueue]) -> list[str]:
    """:func:`problems` of every queue; named by queue when the bridge reads several."""
    found = []
    for lane in watched:
        prefix = f"{lane.name}: " if len(watched) > 1 else ""
        found += [prefix + p for p in problems(lane.forwarder, lane.kafka_started())]
    return found


class BridgeCollector:
    """Per queue: counters, messages held and their oldest's age, pollers, outages,
    and the last sampled queue depths; each metric labelled with the queue's name."""

    def __init__(
        self, watched: Sequence[WatchedQueue], clock: Callable[[], float] = time.time
    ) -> None:
        self.watched = watched
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        label = ["queue"]
        families: dict[str, Any] = {}

        def family(kind: Any, name: str, help_text: str, labels: list[str] = label) -> Any:
            if name not in families:
                families[name] = kind(name, help_text, labels=labels)
            return families[name]

        for lane in self.watched:
            forwarder, queue = lane.forwarder, [lane.name]
            for name, value in forwarder.counters.snapshot().items():
                family(
                    CounterMetricFamily,
                    f"maskstream_bridge_messages_{name}",
                    f"SQS messages {name}",
                ).add_metric(queue, value)
            gauges: tuple[tuple[str, str, float], ...] = (
                ("in_flight", "Messages received and not yet deleted", forwarder.in_flight),
                ("pollers", "Poller loops running", forwarder.pollers),
                ("open_polls", "ReceiveMessage calls waiting on SQS", forwarder.open_polls),
                (
                    "oldest_held_age_seconds",
                    "Age (since SentTimestamp) of the oldest message held",
                    self._oldest_age(forwarder),
                ),
            )
            for name, help_text, gauge in gauges:
                family(GaugeMetricFamily, f"maskstream_bridge_{name}", help_text).add_metric(
                    queue, gauge
                )
            outage = family(
                GaugeMetricFamily,
                "maskstream_bridge_outage",
                "1 while the service is unavailable",
                ["queue", "service"],
            )
            for log in forwarder.outages():
                outage.add_metric([lane.name, log.service.lower()], int(log.down))
            depth = family(
                GaugeMetricFamily,
                "maskstream_sqs_queue_depth",
                "Approximate messages in the queue",
                ["queue", "state"],
            )
            for state, value in sorted(lane.depth.items()):
                depth.add_metric([lane.name, state], value)
            if lane.dead_letters is not None:
                family(
                    GaugeMetricFamily,
                    "maskstream_sqs_dead_letter_depth",
                    "Approximate messages in the queue's dead-letter queue",
                ).add_metric(queue, lane.dead_letters)
        yield from families.values()

    def _oldest_age(self, forwarder: Observed) -> float:
        oldest = forwarder.oldest_held_sent_ms()
        return 0.0 if oldest is None else max(0.0, self.clock() - oldest / 1000)


class BridgeEndpoints:
    """Serves the endpoints and samples each queue's depth until stopped."""

    def __init__(self, watched: Sequence[WatchedQueue]) -> None:
        self.watched = watched
        self.registry = CollectorRegistry()
        self.registry.register(BridgeCollector(watched))
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
        found = all_problems(self.watched)
        return web.json_response(
            {"ready": not found, "problems": found}, status=503 if found else 200
        )

    async def _sample_depth(self) -> None:
        while True:
            for lane in self.watched:
                try:
                    await sample_depth(lane)
                except Exception as exc:  # a metrics sample must never stop the bridge
                    log.warning("depth of %s not sampled: %s", lane.name, exc)
            await asyncio.sleep(DEPTH_INTERVAL)


async def sample_depth(lane: WatchedQueue) -> None:
    """The queue's depth and (if it has one) its dead-letter queue's."""
    client = lane.queue.client
    attributes = await client.get_queue_attributes(
        lane.queue.url, [*DEPTH_ATTRIBUTES.values(), "RedrivePolicy"]
    )
    lane.depth = {state: int(attributes.get(name, 0)) for state, name in DEPTH_ATTRIBUTES.items()}
    policy = parse_redrive_policy(attributes.get("RedrivePolicy"))
    if policy is None:
        return
    if lane.dead_letter_url is None:
        name, account, _ = policy
        lane.dead_letter_url = await client.get_queue_url(name, account)
    dead = await client.get_queue_attributes(lane.dead_letter_url, ["ApproximateNumberOfMessages"])
    lane.dead_letters = int(dead.get("ApproximateNumberOfMessages", 0))
