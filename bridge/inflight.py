"""The messages the bridge holds: each from its receive until it is deleted, given up or released.

Pollers reserve room in the :class:`InFlightGate` before each receive, so a
slow Kafka stops the intake instead of growing memory; :class:`InFlight`
frees that room as the bridge finishes with each message, and tells a stop
when nothing is held any more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bridge.ports import RawRecord, SqsMessage


@dataclass(eq=False, slots=True)
class Held:
    """A received message the bridge is responsible for until it is deleted or given up."""

    message: SqsMessage
    record: RawRecord
    visible_until: float
    sent_at: float = 0.0
    attempts: int = 0
    acked: bool = False
    extending: bool = False


class InFlightGate:
    """Bounds the messages the bridge holds; pollers reserve room before each receive."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._closed = False
        self._changed = asyncio.Event()

    @property
    def used(self) -> int:
        return self._used

    async def acquire(self, count: int) -> bool:
        """Wait for room for *count* messages; False once the gate is closed."""
        while not self._closed and self._used + count > self._limit:
            self._changed.clear()
            await self._changed.wait()
        if self._closed:
            return False
        self._used += count
        return True

    def release(self, count: int) -> None:
        self._used -= count
        self._changed.set()

    @property
    def room(self) -> int:
        """Messages that may still be taken on (negative never: the gate enforces it)."""
        return self._limit - self._used

    def close(self) -> None:
        self._closed = True
        self._changed.set()


class InFlight:
    """The held messages, and the gate whose room they take."""

    def __init__(self, limit: int) -> None:
        self.gate = InFlightGate(limit)
        self._held: set[Held] = set()
        self._drained = asyncio.Event()
        self._drained.set()

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, held: Held) -> bool:
        return held in self._held

    def __iter__(self) -> Iterator[Held]:
        return iter(self._held)

    def take(self, batch: Iterable[Held]) -> None:
        """The bridge is now responsible for *batch* (their room was reserved by the poller)."""
        self._held.update(batch)
        self._drained.clear()

    def forget(self, done: list[Held]) -> None:
        """The bridge is finished with these (deleted or given up): free their slots."""
        held = self._held
        gone = [h for h in done if h in held]
        held.difference_update(gone)
        self.gate.release(len(gone))
        if not held:
            self._drained.set()

    def oldest_sent_ms(self) -> int | None:
        """SentTimestamp of the oldest message held (None if none is, or none says):
        an O(held) scan, for a metrics scrape, never on the data path."""
        return min(
            (h.record.timestamp_ms for h in self._held if h.record.timestamp_ms is not None),
            default=None,
        )

    def unacknowledged(self) -> list[Held]:
        """What Kafka has not acknowledged yet."""
        return [h for h in self._held if not h.acked]

    async def drained(self) -> None:
        """Return once nothing is held."""
        await self._drained.wait()
