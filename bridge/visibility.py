"""Held messages kept invisible in SQS while the bridge works, and given back at a stop.

While Kafka is slow a message may be held longer than its visibility timeout;
the extender pushes the timeout ahead of it so that SQS does not hand it to
another consumer mid-flight. What a stop cannot finish is released with
visibility 0, so another bridge takes it at once instead of after the rest
of its timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

from bridge.counters import Counters
from bridge.inflight import Held, InFlight
from bridge.outage import OutageLog, describe, log
from bridge.ports import MAX_BATCH_ENTRIES, QueuePort

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Visibility:
    """Extends the visibility of held messages, and releases them (visibility 0) on request."""

    def __init__(
        self,
        queue: QueuePort,
        inflight: InFlight,
        *,
        timeout: int,
        counters: Counters,
        outage: OutageLog,
        clock: Callable[[], float],
    ) -> None:
        self._queue = queue
        self._inflight = inflight
        self._timeout = timeout
        self._counters = counters
        self._sqs = outage
        self._clock = clock
        self._extensions: set[asyncio.Task[None]] = set()

    @property
    def extensions(self) -> set[asyncio.Task[None]]:
        """Extension calls now on their way (a stop waits for them before releasing)."""
        return self._extensions

    async def extend_loop(self) -> None:
        """Keep each held message invisible until the bridge is done with it.

        A message is extended once a third of its timeout has passed, leaving
        two thirds for the call to land; each batch call runs on its own, so
        one slow call cannot hold up the next round.
        """
        period = min(15.0, max(0.5, self._timeout / 4))
        while True:
            await asyncio.sleep(period)
            self._extend_due()

    def _extend_due(self) -> None:
        horizon = self._clock() + self._timeout * 2 / 3
        due = [h for h in self._inflight if h.visible_until < horizon and not h.extending]
        for chunk in chunks(due, MAX_BATCH_ENTRIES):
            for held in chunk:
                held.extending = True
            task = asyncio.ensure_future(self._extend(chunk))
            self._extensions.add(task)
            task.add_done_callback(self._extensions.discard)

    async def _extend(self, chunk: Sequence[Held]) -> None:
        timeout = self._timeout
        started = self._clock()
        try:
            failures = await self._queue.change_visibility(
                [h.message.receipt_handle for h in chunk], timeout
            )
        except Exception as exc:
            self._sqs.failure(f"ChangeMessageVisibilityBatch: {describe(exc)}")
            return
        finally:
            for held in chunk:
                held.extending = False
        self._sqs.success()
        failed = {f.index: f for f in failures}
        for index, held in enumerate(chunk):
            if index not in failed:
                held.visible_until = started + timeout
            elif held in self._inflight:
                log.warning(
                    "could not extend visibility of message %s (%s); it may be delivered "
                    "again, downstream de-duplicates it by message id",
                    held.message.message_id,
                    failed[index].code,
                )
                held.visible_until = float("inf")  # do not try again

    def release(self, waiting: Sequence[Held]) -> asyncio.Future[list[None]]:
        """Give *waiting* back with visibility 0: one call per ten, all started at once."""
        calls = [self._release(chunk) for chunk in chunks(waiting, MAX_BATCH_ENTRIES)]
        return asyncio.gather(*calls)

    async def _release(self, chunk: Sequence[Held]) -> None:
        try:
            failures = await self._queue.change_visibility(
                [h.message.receipt_handle for h in chunk], 0
            )
        except Exception as exc:
            self._sqs.failure(f"ChangeMessageVisibilityBatch: {describe(exc)}")
            return
        failed = {f.index for f in failures}
        released = [h for i, h in enumerate(chunk) if i not in failed]
        self._counters.released += len(released)
        self._inflight.forget(released)
