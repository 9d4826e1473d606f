"""The figures a status snapshot holds, as plain data, and the rate derived from them.

Every service's part is either its figures or a :class:`Problem` saying why
there are none; nothing here does I/O, so :mod:`.render` and the tests build
snapshots by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

# The one-shot rate counts the rows ingested within this window (see current_rate).
RATE_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Problem:
    """A service that could not be asked, or answered with an error.

    ``target`` is where we looked (URL, host:port), or None when nothing is
    configured; ``reason`` is a few words, never a stack trace.
    """

    reason: str
    target: str | None = None
    verb: str = "unreachable"

    def line(self, service: str) -> str:
        if self.target is None:
            return f"{service}: {self.reason}"
        return f"{service}: {self.verb} at {self.target} ({self.reason})"


@dataclass(frozen=True)
class DeadLetters:
    """The dead-letter queue from the source queue's redrive policy."""

    name: str
    max_receive_count: int | None
    depth: int | None = None
    problem: str | None = None


@dataclass(frozen=True)
class QueueDepth:
    url: str
    visible: int
    in_flight: int
    delayed: int
    dead_letters: DeadLetters | None  # None: the queue has no redrive policy


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group has committed nothing here yet
    end: int
    lag: int


@dataclass(frozen=True)
class TopicLag:
    topic: str
    partitions: tuple[PartitionLag, ...] | None  # None: the topic does not exist

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions or ())


@dataclass(frozen=True)
class ConsumerLag:
    servers: str
    group: str
    topics: tuple[TopicLag, ...]


@dataclass(frozen=True)
class PartitionSummary:
    """A partitioned table's partitions: how many, the first and last day they
    hold (the oldest kept, after retention), and their size with indexes."""

    count: int
    oldest: date | None
    newest: date | None  # the last day of the newest partition
    total_bytes: int


@dataclass(frozen=True)
class DatabaseCounts:
    """Counts from PostgreSQL; None where the table or column does not exist yet."""

    target: str
    rows: int | None
    devices: int | None
    rows_in_window: int | None
    rejections: int | None
    top_reasons: tuple[tuple[str, int], ...] = ()
    tables: tuple[str, str] = ("user_logins", "rejected_logins")
    # Per table name, for the partitioned ones (plain tables have none).
    partitions: tuple[tuple[str, PartitionSummary], ...] = ()


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    monotonic: float
    sqs: tuple[QueueDepth | Problem, ...] | Problem  # one per queue; a Problem if none answered
    kafka: ConsumerLag | Problem
    postgres: DatabaseCounts | Problem

    @property
    def problems(self) -> list[str]:
        """Names of the services shown as problems (the exit status depends on it)."""
        queues = self.sqs if isinstance(self.sqs, tuple) else (self.sqs,)
        parts = {"kafka": self.kafka, "postgres": self.postgres}
        broken = ["sqs"] if any(isinstance(q, Problem) for q in queues) else []
        return broken + [name for name, part in parts.items() if isinstance(part, Problem)]


@dataclass(frozen=True)
class Rate:
    per_second: float
    basis: str


def current_rate(snapshot: Snapshot, previous: Snapshot | None = None) -> Rate | None:
    """Rows per second: between two snapshots if there are two, else over the last minute.

    The one-shot figure counts rows whose ``ingested_at`` is within the window,
    so it needs no earlier reading; in ``--watch`` the row delta between two
    refreshes is exact and follows changes faster.
    """
    if not isinstance(snapshot.postgres, DatabaseCounts):
        return None
    now = snapshot.postgres
    if previous is not None and isinstance(previous.postgres, DatabaseCounts):
        elapsed = snapshot.monotonic - previous.monotonic
        if now.rows is not None and previous.postgres.rows is not None and elapsed > 0:
            delta = now.rows - previous.postgres.rows
            return Rate(delta / elapsed, f"over the last {elapsed:.1f} s")
    if now.rows_in_window is None:
        return None
    return Rate(now.rows_in_window / RATE_WINDOW_SECONDS, f"over the last {RATE_WINDOW_SECONDS} s")
