"""Counters a worker keeps about what it processed, logged periodically."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class PipelineStats:
    """Counts only: never values, so logging them exposes no PII."""

    masked: int = 0
    extra_fields_dropped: int = 0
    rows_written: int = 0
    rows_already_present: int = 0
    unpublished: int = 0  # output records too large for Kafka
    rejections: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        rejected = sum(self.rejections.values())
        top = ", ".join(f"{reason}: {n}" for reason, n in self.rejections.most_common(5))
        return (
            f"masked={self.masked} rows_written={self.rows_written} "
            f"duplicates_skipped={self.rows_already_present} rejected={rejected} "
            f"extra_fields_dropped={self.extra_fields_dropped}" + (f" [{top}]" if top else "")
        )
