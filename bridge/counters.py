"""The bridge's counters, kept in one small class.

Everything the bridge reports (the periodic log line, the summary at exit, and
later a Prometheus exporter) reads from this one object, so the numbers in the
log and in metrics can never disagree. All updates happen on the event loop
thread, so plain integers are enough.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Counters:
    """Message counts since the bridge started.

    - ``received``: messages returned by ReceiveMessage (a redelivery counts again).
    - ``forwarded``: messages whose Kafka write was acknowledged (acks=all).
    - ``deleted``: messages deleted from SQS after their acknowledgement.
    - ``retried``: retried operations, per message: a produce sent again, or a
      delete attempted again after a failure.
    - ``released``: messages handed back to SQS with visibility 0 at a stop,
      because Kafka had not acknowledged them in time: another receiver gets
      them at once instead of after the visibility timeout.
    - ``failed``: messages the bridge gave up on. They stay in SQS, which
      redelivers them (downstream de-duplicates by message id) or, after
      ``maxReceiveCount``, moves them to the dead-letter queue.
    """

    received: int = 0
    forwarded: int = 0
    deleted: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0

    def snapshot(self) -> dict[str, int]:
        """The counts as a plain mapping, e.g. for an exporter or a test."""
        return asdict(self)

    def summary(self, in_flight: int | None = None) -> str:
        """One log line, ``key=value`` pairs so log search can pick them apart."""
        parts = [f"{name}={value}" for name, value in self.snapshot().items()]
        if in_flight is not None:
            parts.append(f"in_flight={in_flight}")
        return " ".join(parts)
