"""Acknowledged messages deleted from SQS, ten to a DeleteMessageBatch call.

Only what Kafka acknowledged ever reaches the deleter, so nothing is deleted
before its acknowledgement. One queue for all pollers keeps batches full
whichever poll a message came from.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from bridge.counters import Counters
from bridge.inflight import Held, InFlight
from bridge.outage import OutageLog, describe, log
from bridge.ports import MAX_BATCH_ENTRIES, EntryFailure, QueuePort, QueueRefused

# How long a part-filled delete batch waits for more acknowledgements: deletes
# are cheap to delay (the message stays invisible) and each call costs CPU.
DELETE_LINGER_SECONDS = 0.02


class Deleter:
    """Batches acknowledged messages into deletes and runs them concurrently, within slots."""

    def __init__(
        self,
        queue: QueuePort,
        inflight: InFlight,
        *,
        slots: int,
        counters: Counters,
        outage: OutageLog,
        backoff: Callable[[int], float],
        check_task: Callable[[asyncio.Task[None]], None],
    ) -> None:
        """*slots* bounds the concurrent delete calls (and so the threads they take);
        *check_task* sees each finished call, so a crash in one stops the bridge."""
        self._queue = queue
        self._inflight = inflight
        self._counters = counters
        self._sqs = outage
        self._backoff = backoff
        self._check_task = check_task
        self._acked: collections.deque[Held] = collections.deque()
        self._ack_ready = asyncio.Event()
        self._deletes: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(slots)

    @property
    def calls(self) -> set[asyncio.Task[None]]:
        """Delete calls now running (a stop cancels what is left of them)."""
        return self._deletes

    def add(self, acknowledged: list[Held]) -> None:
        """Queue messages Kafka acknowledged for deletion."""
        self._acked.extend(acknowledged)
        self._ack_ready.set()

    async def run(self) -> None:
        """Batch every poller's acknowledged messages into deletes of ten, run concurrently."""
        while True:
            batch = await self._next_batch()
            await self._slots.acquire()
            task = asyncio.ensure_future(self._delete(batch))
            self._deletes.add(task)
            task.add_done_callback(self._delete_done)

    def _delete_done(self, task: asyncio.Task[None]) -> None:
        self._deletes.discard(task)
        self._slots.release()
        self._check_task(task)

    async def _next_batch(self) -> list[Held]:
        """Ten acknowledged messages, or fewer once a part-filled batch has lingered."""
        acked = self._acked
        while not acked:
            self._ack_ready.clear()
            await self._ack_ready.wait()
        if len(acked) < MAX_BATCH_ENTRIES:
            await asyncio.sleep(DELETE_LINGER_SECONDS)
        return [acked.popleft() for _ in range(min(MAX_BATCH_ENTRIES, len(acked)))]

    async def _delete(self, batch: list[Held]) -> None:
        """Delete *batch*, retrying failed entries; expired receipts are logged and dropped."""
        attempt = 0
        while batch:
            try:
                failures = await self._queue.delete([h.message.receipt_handle for h in batch])
            except QueueRefused:
                raise
            except Exception as exc:
                self._sqs.failure(f"DeleteMessageBatch: {describe(exc)}")
                retry = batch
            else:
                self._sqs.success()
                retry = self._settle(batch, failures)
            if not retry:
                return
            attempt += 1
            self._counters.retried += len(retry)
            await asyncio.sleep(self._backoff(attempt))
            batch = retry

    def _settle(self, batch: list[Held], failures: list[EntryFailure]) -> list[Held]:
        """Account for one DeleteMessageBatch response; return the entries worth retrying."""
        if not failures:
            self._counters.deleted += len(batch)
            self._inflight.forget(batch)
            return []
        failed = {f.index: f for f in failures}
        retry: list[Held] = []
        finished: list[Held] = []
        given_up: list[tuple[Held, EntryFailure]] = []
        for index, held in enumerate(batch):
            failure = failed.get(index)
            if failure is None:
                self._counters.deleted += 1
                finished.append(held)
            elif failure.receipt_expired or failure.sender_fault:
                self._counters.failed += 1
                given_up.append((held, failure))
                finished.append(held)
            else:
                retry.append(held)
        if given_up:
            # One line a batch: a call whose answer was lost (and was retried)
            # fails every entry it had already deleted.
            held, failure = given_up[0]
            log.warning(
                "could not delete %d of %d messages (e.g. %s: %s: %s); already deleted if an "
                "earlier answer was lost, else SQS delivers them again and downstream "
                "de-duplicates them by message id",
                len(given_up),
                len(batch),
                held.message.message_id,
                failure.code,
                failure.message,
            )
        self._inflight.forget(finished)
        return retry
