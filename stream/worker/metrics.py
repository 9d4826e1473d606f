"""Prometheus metrics of a worker, served on its web port at ``/metrics``.

Counters are read from :class:`~stream.worker.stats.PipelineStats` when scraped,
so the periodic log line and the metrics can never disagree, and the hot
path pays nothing for metrics. Consumer lag is read from Faust's monitor
(committed offset vs. high-water mark per assigned partition). Labels name
topics, partitions and rejection reasons; never values.
"""

from __future__ import annotations

from collections.abc import Iterator

import faust
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from stream.worker.stats import PipelineStats

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
        self.registry.register(StatsCollector(stats))
        self.registry.register(LagCollector(app))

    def observe_batch(self, table: str, rows: int, seconds: float) -> None:
        self.batch_size.labels(table).observe(rows)
        self.sink_seconds.labels(table).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
