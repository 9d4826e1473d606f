"""The status screen as text: pure formatting of a :class:`.figures.Snapshot`, no I/O.

Everything here takes figures and returns strings, so the screen an operator
reads is tested without any server (tests/test_status.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from stream.ops.status.figures import (
    ConsumerLag,
    DatabaseCounts,
    PartitionLag,
    PartitionSummary,
    Problem,
    QueueDepth,
    Rate,
    Snapshot,
)

# Partitions shown on one line of a topic's lag; more wrap onto further lines.
PARTITIONS_PER_LINE = 8
# ANSI: cursor home, clear to end of line, clear to end of screen, clear screen.
HOME, CLEAR_LINE, CLEAR_BELOW, CLEAR_SCREEN = "\x1b[H", "\x1b[K", "\x1b[J", "\x1b[2J"


def _n(value: int) -> str:
    return f"{value:,}"


def render_sqs(part: QueueDepth | Problem) -> list[str]:
    if isinstance(part, Problem):
        return [part.line("sqs")]
    lines = [
        f"sqs: {part.url}",
        f"  messages: {_n(part.visible)} visible, {_n(part.in_flight)} in flight, "
        f"{_n(part.delayed)} delayed",
    ]
    dlq = part.dead_letters
    if dlq is None:
        lines.append("  dead letters: no redrive policy on this queue")
    else:
        after = f", after {dlq.max_receive_count} receives" if dlq.max_receive_count else ""
        if dlq.problem is not None:
            lines.append(f"  dead letters ({dlq.name}{after}): unreadable ({dlq.problem})")
        else:
            lines.append(f"  dead letters ({dlq.name}{after}): {_n(dlq.depth or 0)}")
    return lines


def _queues(
    part: tuple[QueueDepth | Problem, ...] | Problem,
) -> tuple[QueueDepth | Problem, ...]:
    return part if isinstance(part, tuple) else (part,)


def _partition_cells(partitions: Sequence[PartitionLag]) -> list[str]:
    return [
        f"p{p.partition} {_n(p.lag)}{'' if p.committed is not None else '*'}" for p in partitions
    ]


def render_kafka(part: ConsumerLag | Problem) -> list[str]:
    if isinstance(part, Problem):
        return [part.line("kafka")]
    lines = [f"kafka: {part.servers}, consumer group {part.group}"]
    width = max(len(t.topic) for t in part.topics) if part.topics else 0
    uncommitted = False
    for topic in part.topics:
        if topic.partitions is None:
            lines.append(f"  {topic.topic:<{width}}  no such topic yet")
            continue
        cells = _partition_cells(topic.partitions)
        uncommitted |= any(p.committed is None for p in topic.partitions)
        head = f"  {topic.topic:<{width}}  lag {_n(topic.total):>9}"
        rows = [
            cells[i : i + PARTITIONS_PER_LINE] for i in range(0, len(cells), PARTITIONS_PER_LINE)
        ]
        for index, row in enumerate(rows or [[]]):
            prefix = head if index == 0 else " " * len(head)
            lines.append(f"{prefix}   {'  '.join(row)}".rstrip())
    if uncommitted:
        lines.append("  * nothing committed by the group yet: lag counts from the log start")
    return lines


def _rate_text(rate: Rate | None) -> str:
    if rate is None:
        return "unknown (no ingested_at column yet: a worker adds it on start)"
    return f"{rate.per_second:,.1f} msgs/s ({rate.basis})"


def _size(total_bytes: int) -> str:
    """Bytes in the largest unit that keeps a number of at least 1 (1024-based)."""
    value, unit = float(total_bytes), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{total_bytes:,} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"


def render_partitions(summary: PartitionSummary) -> str:
    """One line: a partitioned table's partitions."""
    if summary.count == 0 or summary.oldest is None:
        return f"    partitions: {summary.count} (a worker makes the first on start)"
    return (
        f"    partitions: {_n(summary.count)}, {summary.oldest} (oldest kept) to"
        f" {summary.newest}, {_size(summary.total_bytes)}"
    )


def render_postgres(part: DatabaseCounts | Problem, rate: Rate | None) -> list[str]:
    if isinstance(part, Problem):
        return [part.line("postgres")]
    logins, rejected = part.tables
    lines = [f"postgres: {part.target}"]
    if part.rows is None:
        lines.append(f"  {logins}: not created yet (a worker creates it on start)")
    else:
        lines.append(f"  {logins}: {_n(part.rows)} rows, {_n(part.devices or 0)} seen devices")
        lines.extend(render_partitions(s) for table, s in part.partitions if table == logins)
        lines.append(f"  rate: {_rate_text(rate)}")
    if part.rejections is None:
        lines.append(f"  {rejected}: not created yet")
        return lines
    lines.append(f"  {rejected}: {_n(part.rejections)} rows")
    lines.extend(render_partitions(s) for table, s in part.partitions if table == rejected)
    if part.top_reasons:
        width = max(len(_n(count)) for _, count in part.top_reasons)
        lines.append(f"  top {len(part.top_reasons)} rejection reasons:")
        lines.extend(f"    {_n(count):>{width}}  {reason}" for reason, count in part.top_reasons)
    return lines


def render(snapshot: Snapshot, rate: Rate | None) -> str:
    """The status screen as text, one section per service."""
    stamp = snapshot.taken_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = [
        [f"maskstream status at {stamp}"],
        *(render_sqs(queue) for queue in _queues(snapshot.sqs)),
        render_kafka(snapshot.kafka),
        render_postgres(snapshot.postgres, rate),
    ]
    return "\n\n".join("\n".join(section) for section in sections)


def frame(text: str, first: bool) -> str:
    """*text* drawn over the previous screen: home, each line cleared to its end, rest cleared.

    Overwriting in place rather than clearing first keeps the screen from
    flickering between refreshes.
    """
    start = CLEAR_SCREEN + HOME if first else HOME
    body = "".join(f"{line}{CLEAR_LINE}\n" for line in text.splitlines())
    return f"{start}{body}{CLEAR_BELOW}"
