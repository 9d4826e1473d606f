"""Faust's monitor without its per-record timing.

Faust's ``Monitor`` sensor runs four hooks for every record (in, stream in,
stream out, out), keeping counters and timings that only Faust's own
``/stats`` page shows. maskstream reports through Prometheus
(:mod:`stream.worker.metrics`) instead, so those hooks are switched off here; they
cost about a tenth of a do-nothing agent's time. What the metrics do read,
committed and end offsets per partition for consumer lag, is kept: Faust
updates it on commits and fetches, not through these hooks.
"""

from __future__ import annotations

from typing import Any

from faust.sensors import Monitor


class LeanMonitor(Monitor):
    """A ``Monitor`` that keeps offsets and rebalance state but times no record."""

    def on_message_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_out(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_message_out(self, *args: Any, **kwargs: Any) -> None:
        return None
