"""Freshness of committed data: seconds from a login's SQS ``SentTimestamp`` to its row's commit.

A histogram an operator reads as "p99 of logins reach the table within N s",
kept per batch rather than per row: the batch's sent times are sorted once
(in C) and each bucket's count is one binary search, so a batch of 500 rows
costs 17 bisects instead of 500 observations. Pure: the caller passes the
clock's reading.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field

# 10 ms (a batch written at once on a quiet pipeline) to an hour (a backlog
# drained after an outage); roughly 1-2.5-5 steps, as Prometheus' defaults.
FRESHNESS_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip


def cumulative_counts(
    sent_ms_sorted: list[int], now_ms: float, bounds: Iterable[float]
) -> list[int]:
    """For each bound b, how many sent times are at most b seconds before *now_ms*.

    age <= b  <=>  sent >= now - b, so the count is what lies right of the
    first sent time not older than the bound.
    """
    total = len(sent_ms_sorted)
    return [total - bisect_left(sent_ms_sorted, now_ms - bound * 1000) for bound in bounds]


@dataclass
class FreshnessTally:
    """Running histogram of freshness, and the newest committed row's sent time."""

    bounds: tuple[float, ...] = FRESHNESS_BUCKETS
    cumulative: list[int] = field(default_factory=lambda: [0] * len(FRESHNESS_BUCKETS))
    count: int = 0
    sum_seconds: float = 0.0
    newest_sent_ms: int | None = None

    def add(self, sent_ms: list[int], committed_ms: float) -> None:
        """Count one committed batch whose rows were sent at *sent_ms* (epoch ms)."""
        if not sent_ms:
            return
        ordered = sorted(sent_ms)
        for index, count in enumerate(cumulative_counts(ordered, committed_ms, self.bounds)):
            self.cumulative[index] += count
        self.count += len(ordered)
        self.sum_seconds += (len(ordered) * committed_ms - sum(ordered)) / 1000
        newest = ordered[-1]
        if self.newest_sent_ms is None or newest > self.newest_sent_ms:
            self.newest_sent_ms = newest
