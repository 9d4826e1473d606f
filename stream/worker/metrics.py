"""Prometheus metrics of a worker, served on its web port at ``/metrics``.

Counters are read from :class:`~stream.worker.stats.PipelineStats` when scraped,
so the periodic log line and the metrics can never disagree, and the hot
path pays nothing for metrics. Consumer lag is read from Faust's monitor
(committed offset vs. high-water mark per assigned partition). Labels name
topics, partitions and rejection reasons; never values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import faust
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from stream.core.freshness import FreshnessTally
from stream.core.records import MaskedLogin
from stream.worker.stats import PipelineStats

# What a health page reports: its problems, empty when all is well.
Problems = Callable[[], list[str]]

BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class StatsCollector:
    """Exposes the pipeline counters as Prometheus counters."""

    def __init__(self, stats: PipelineStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        for name, help_text, value in (
            ("maskstream_logins_masked", "Valid logins masked and forwarded", stats.masked),
            ("maskstream_rows_written", "Rows inserted into the logins table", stats.rows_written),
            (
                "maskstream_rows_already_present",
                "Rows skipped because their message id was already stored",
                stats.rows_already_present,
            ),
            (
                "maskstream_extra_fields_dropped",
                "Unknown fields removed from valid logins",
                stats.extra_fields_dropped,
            ),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        rejections = CounterMetricFamily(
            "maskstream_rejections", "Messages rejected, by reason", labels=["reason"]
        )
        for reason, count in sorted(stats.rejections.items()):
            rejections.add_metric([reason], count)
        yield rejections


class LagCollector:
    """Consumer lag per assigned partition: high-water mark minus committed offset."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "maskstream_consumer_lag",
            "Records not yet committed by this worker, per partition",
            labels=["topic", "partition"],
        )
        monitor = self.app.monitor
        committed = monitor.tp_committed_offsets or {}
        for tp, end in sorted((monitor.tp_end_offsets or {}).items()):
            lag.add_metric([tp.topic, str(tp.partition)], max(0, end - committed.get(tp, 0)))
        yield lag


class FreshnessCollector:
    """SQS sent -> row committed, as a histogram, and the newest committed row's
    sent time (staleness = now - it); see :mod:`stream.core.freshness`."""

    def __init__(self) -> None:
        self.tally = FreshnessTally()

    def collect(self) -> Iterator[Metric]:
        tally = self.tally
        buckets = [
            (str(bound), count) for bound, count in zip(tally.bounds, tally.cumulative, strict=True)
        ]
        yield HistogramMetricFamily(
            "maskstream_freshness_seconds",
            "Seconds from a login's SQS SentTimestamp to the commit of its row",
            buckets=[*buckets, ("+Inf", tally.count)],
            sum_value=tally.sum_seconds,
        )
        if tally.newest_sent_ms is not None:  # no row yet: no value rather than 1970
            yield GaugeMetricFamily(
                "maskstream_newest_committed_sent_timestamp_seconds",
                "SQS SentTimestamp of the newest row this worker committed (Unix seconds)",
                value=tally.newest_sent_ms / 1000,
            )


class HealthCollector:
    """``/health`` and ``/ready`` as gauges (1 = 200, 0 = 503), so an alert can see
    a worker that answers its scrape but would fail its probe."""

    def __init__(self, healthy: Problems, ready: Problems) -> None:
        self.healthy = healthy
        self.ready = ready

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "maskstream_worker_healthy", "1 while /health answers 200", value=not self.healthy()
        )
        yield GaugeMetricFamily(
            "maskstream_worker_ready", "1 while /ready answers 200", value=not self.ready()
        )


class WorkerMetrics:
    """The registry a worker serves, plus the histograms its sinks observe."""

    def __init__(self, app: faust.App, stats: PipelineStats) -> None:
        self.registry = CollectorRegistry()
        self.batch_size = Histogram(
            "maskstream_sink_batch_size",
            "Rows per batch written to PostgreSQL",
            ["table"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.sink_seconds = Histogram(
            "maskstream_sink_seconds",
            "Seconds to commit one batch in PostgreSQL, retries included",
            ["table"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.freshness = FreshnessCollector()
        self.registry.register(StatsCollector(stats))
        self.registry.register(LagCollector(app))
        self.registry.register(self.freshness)

    def observe_batch(self, table: str, rows: int, seconds: float) -> None:
        self.batch_size.labels(table).observe(rows)
        self.sink_seconds.labels(table).observe(seconds)

    def observe_committed(self, logins: Sequence[MaskedLogin]) -> None:
        """A batch of *logins* was just committed: count their freshness (per batch)."""
        self.freshness.tally.add([login.sent_at_ms for login in logins], time.time() * 1000)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
