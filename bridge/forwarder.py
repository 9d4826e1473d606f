"""The bridge's pipeline: poll SQS, produce to Kafka, delete what Kafka acknowledged.

One message's path::

    poller --ReceiveMessage--> held --sink.send()--> Kafka batch --report-->
        acknowledged: delete queue --deleter--> DeleteMessageBatch
        failed: backoff, send again (or, if it can never be written, leave it in SQS)

Pollers reserve room under the in-flight bound before each receive, so a slow
Kafka stops the intake instead of growing memory. Their number adapts between
``pollers`` and ``max_pollers``: a poll that comes back full while room remains
starts another poller (the queue holds more than the open polls fetch, as
against a remote SQS where each call takes tens of milliseconds); any other
poll retires its poller down to the floor. While messages wait, an
extender pushes their visibility timeout ahead of them, so SQS does not hand
them to someone else mid-flight. A message leaves the bridge only when it is
deleted, released or given up; nothing is deleted before its acknowledgement.

A stop strands nothing. A long poll still open at SQS when the process exits
goes on receiving messages that nobody will forward: they stay invisible for
the visibility timeout and gain a receive count (five such restarts can send a
message to the dead-letter queue unprocessed). So a stop issues no new polls,
waits for the open ones (their wait is capped at half the shutdown timeout),
forwards what they return, deletes what Kafka acknowledges, and releases what
is still unacknowledged near the deadline with visibility 0, so another bridge
takes it at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from bridge.counters import Counters
from bridge.producer import (
    DEFAULT_KEY_FIELD,
    ErrorKind,
    RawRecord,
    classify_error,
    to_record,
)
from bridge.sqs import MAX_BATCH_ENTRIES, MAX_WAIT_SECONDS, EntryFailure, SqsMessage
from stream.common.retry import backoff_delay
from stream.common.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a part-filled delete batch waits for more acknowledgements: deletes
# are cheap to delay (the message stays invisible) and each call costs CPU.
DELETE_LINGER_SECONDS = 0.02
# Concurrent visibility changes on top of the deletes (extensions, releases).
VISIBILITY_CALLS = 2
# How often the housekeeping loop checks idleness, stalls and the stats clock.
TICK_SECONDS = 0.25


class QueuePort(Protocol):
    """What the forwarder needs from SQS (see :class:`bridge.sqs.SqsQueue`)."""

    async def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[SqsMessage]: ...

    async def delete(self, receipt_handles: Sequence[str]) -> list[EntryFailure]: ...

    async def change_visibility(
        self, receipt_handles: Sequence[str], timeout: int
    ) -> list[EntryFailure]: ...


class SinkPort(Protocol):
    """What the forwarder needs from Kafka (see :class:`bridge.producer.KafkaSink`).

    ``send`` takes a record and a token; later the listener given to
    ``listen`` gets the tokens of each batch with its outcome (None: acknowledged).
    """

    def listen(self, listener: Callable[[list[Any], BaseException | None], None]) -> None: ...

    async def start(self) -> None: ...

    async def send(self, record: RawRecord, token: Any) -> None: ...

    async def stop(self, timeout: float) -> bool: ...


@dataclass(frozen=True)
class ForwarderConfig:
    """The forwarder's knobs, decoupled from where they were read."""

    pollers: int
    wait_seconds: int
    max_in_flight: int
    visibility_timeout: int
    shutdown_timeout: float
    stats_interval: float
    exit_when_idle: float | None = None
    # The body field whose hash keys each raw record (see stream.common.canonical).
    key_field: str = DEFAULT_KEY_FIELD
    # No acknowledgement for this long while messages wait: Kafka is slow or down.
    stall_warning_seconds: float = 10.0
    # A message sent this long ago and still unacknowledged is produced again:
    # a batch handed to a producer that was then replaced may never report
    # back. Duplicates are harmless downstream (rows are unique per message id).
    resend_after_seconds: float = 60.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    # Ceiling of the adaptive poller count; None keeps exactly ``pollers``.
    max_pollers: int | None = None
    # After a part-filled receive, a poller waits this long so that its next
    # receive finds a fuller queue (see receive_pause).
    receive_linger: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, exit_when_idle: float | None) -> ForwarderConfig:
        return cls(
            pollers=settings.bridge_pollers,
            max_pollers=settings.bridge_max_pollers,
            receive_linger=settings.bridge_receive_linger_ms / 1000,
            wait_seconds=settings.bridge_wait_seconds,
            max_in_flight=settings.bridge_max_in_flight,
            visibility_timeout=settings.bridge_visibility_timeout,
            shutdown_timeout=settings.bridge_shutdown_timeout,
            stats_interval=settings.bridge_stats_interval,
            exit_when_idle=exit_when_idle,
            key_field=settings.bridge_key_field,
        )

    @property
    def poll_ceiling(self) -> int:
        """The most pollers that may run at once (never fewer than the floor)."""
        return max(self.pollers, self.max_pollers or self.pollers)

    @property
    def deleters(self) -> int:
        """Concurrent delete calls: as many as pollers can be, so deletes keep up with receives."""
        return self.poll_ceiling

    @property
    def sqs_calls(self) -> int:
        """Concurrent SQS calls other than receives: deletes and visibility changes."""
        return self.deleters + VISIBILITY_CALLS

    @property
    def receive_batch(self) -> int:
        return max(1, min(MAX_BATCH_ENTRIES, self.max_in_flight))

    @property
    def receive_wait(self) -> int:
        """The long-poll wait: within the idle time that ends the run, and half the stop budget.

        A stop waits for every open poll, so a poll must end with half of the
        shutdown timeout left to forward or release what it brought.
        """
        stop_budget = max(1, int(self.shutdown_timeout / 2))
        wait = min(self.wait_seconds, MAX_WAIT_SECONDS, stop_budget)
        if self.exit_when_idle is not None:
            wait = min(wait, max(1, int(self.exit_when_idle)))
        return wait


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def describe(exc: BaseException) -> str:
    """An error for the log: its type and message; never a message body."""
    name, text = type(exc).__name__, str(exc)
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


class OutageLog:
    """Log an outage once when it begins, every *repeat* seconds while it lasts, once at its end.

    A broker that is down makes every call fail; one clear line per phase
    says more to an operator than a line per failed call.
    """

    def __init__(self, service: str, clock: Callable[[], float], repeat: float = 30.0) -> None:
        self._service = service
        self._clock = clock
        self._repeat = repeat
        self._since: float | None = None
        self._last_logged = 0.0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failure(self, detail: str) -> None:
        now = self._clock()
        if self._since is None:
            self._since = self._last_logged = now
            log.warning("%s unavailable: %s; retrying with backoff", self._service, detail)
        elif now - self._last_logged >= self._repeat:
            self._last_logged = now
            log.warning(
                "%s still unavailable after %.0fs: %s", self._service, now - self._since, detail
            )

    def success(self) -> None:
        if self._since is not None:
            log.info("%s available again after %.0fs", self._service, self._clock() - self._since)
            self._since = None


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


def receive_pause(returned: int, batch: int, linger: float) -> float:
    """How long a poller waits before its next receive: *linger* after a part-filled batch.

    Every call costs about the same CPU whatever it carries, and a long poll
    returns as soon as any message is there: while messages trickle in, a
    poller that asks again at once gets one or two a call. Waiting a moment
    lets the next receive (and the delete after it) carry up to ten. A full
    batch or an empty one (the long poll already waited) goes on at once.
    """
    if returned <= 0 or returned >= batch:
        return 0.0
    return linger


class Scale(enum.Enum):
    """What a poller does after a receive."""

    GROW = "grow"  # start one more poller
    KEEP = "keep"
    RETIRE = "retire"  # this poller ends


def scale_after_receive(
    returned: int,
    batch: int,
    pollers: int,
    floor: int,
    ceiling: int,
    room: int,
    *,
    lingered: bool = False,
) -> Scale:
    """Grow while polls come back full and in-flight room remains; retire on any other poll.

    A full batch means the queue held at least that much more: another poll
    would have found work too. One poller per full poll grows the count
    quickly (like TCP slow start) yet never past *ceiling*, nor past what
    the in-flight bound can still take. A part-filled or empty poll means
    the open polls already take all there is, and each extra one only
    splits the same messages into more calls (CPU per message grows with
    calls, not messages), so its poller ends, down to *floor*. A full batch
    after the poller *lingered* (see :func:`receive_pause`) is what the
    linger was for, not a backlog: it keeps the count.
    """
    if returned >= batch:
        grow = not lingered and pollers < ceiling and room >= batch
        return Scale.GROW if grow else Scale.KEEP
    return Scale.RETIRE if pollers > floor else Scale.KEEP


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


class Forwarder:
    """Moves messages from a queue to a sink, deleting each only after its acknowledgement."""

    def __init__(
        self,
        queue: QueuePort,
        sink: SinkPort,
        config: ForwarderConfig,
        counters: Counters | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._queue = queue
        self._sink = sink
        self._config = config
        self.counters = counters or Counters()
        self._clock = clock
        self._rand = rand
        self._held: set[Held] = set()
        self._acked: collections.deque[Held] = collections.deque()
        self._ack_ready = asyncio.Event()
        self._gate = InFlightGate(config.max_in_flight)
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._idle_since: float | None = None
        self._last_ack = float("-inf")
        self._kafka = OutageLog("Kafka", clock)
        self._sqs = OutageLog("SQS", clock)
        self._resends: set[asyncio.Task[None]] = set()
        self._extensions: set[asyncio.Task[None]] = set()
        self._pollers: set[asyncio.Task[None]] = set()
        self._pollers_started = 0
        # Pollers not retired: counted at the decision itself, because a task
        # leaves _pollers only a loop turn after it ends, and two pollers
        # retiring in the same turn must not both see room above the floor.
        self._polling = 0
        self._open_polls = 0
        self._deletes: set[asyncio.Task[None]] = set()
        self._delete_slots = asyncio.Semaphore(config.deleters)
        self._crashed = False
        sink.listen(self._on_delivery)

    # -- public -----------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Messages received and not yet deleted or given up."""
        return len(self._held)

    @property
    def open_polls(self) -> int:
        """ReceiveMessage calls now waiting on SQS."""
        return self._open_polls

    @property
    def pollers(self) -> int:
        """Poller loops now running (between the floor and the ceiling while running)."""
        return self._polling

    def request_stop(self, reason: str) -> None:
        """Stop polling and drain; a second request stops waiting for the drain."""
        if self._stop.is_set():
            log.warning("stop requested again (%s): exiting without waiting for Kafka", reason)
            self._hurry.set()
            return
        log.info(
            "stopping (%s): no new receives; flushing %d held messages", reason, len(self._held)
        )
        self._stop.set()

    async def run(self) -> bool:
        """Forward until asked to stop; return False only if an internal task crashed."""
        if not await self._start_sink():
            log.info("stopped before Kafka became reachable: %s", self.counters.summary(0))
            return True
        for _ in range(self._config.pollers):
            self._start_poller()
        extender = self._spawn(self._extend_loop(), "extender")
        others = [
            self._spawn(self._delete_loop(), "deleter"),
            self._spawn(self._housekeeping(), "housekeeping"),
        ]
        await self._stop.wait()
        await self._shutdown(extender, others)
        return not self._crashed

    # -- start and stop ----------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._check_task)
        return task

    def _check_task(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("bridge task %s crashed", task.get_name(), exc_info=task.exception())
        self._crashed = True
        self.request_stop("internal error")

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when a stop is requested."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _start_sink(self) -> bool:
        """Connect to Kafka, retrying with backoff; False if stopped first."""
        attempt = 0
        while not self._stop.is_set():
            start = asyncio.ensure_future(self._sink.start())
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not start.done():
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)
                return False
            exc = start.exception()
            if exc is None:
                self._kafka.success()
                return True
            attempt += 1
            self._kafka.failure(f"cannot start producer: {describe(exc)}")
            await self._sleep(self._backoff(attempt))
        return False

    async def _shutdown(
        self, extender: asyncio.Task[None], others: list[asyncio.Task[None]]
    ) -> None:
        """Await open polls, forward and delete what they hold, release the rest; all bounded.

        Every wait ends early on a second stop request (``_hurry``). The
        release runs even then: it is one quick call per ten messages.
        """
        deadline = self._clock() + self._config.shutdown_timeout
        release_at = deadline - min(2.0, self._config.shutdown_timeout / 4)
        self._gate.close()  # pollers waiting for room end at once; no new polls start
        await self._until_done(self._pollers, release_at)
        if self._held:
            await self._until(self._drained.wait(), release_at)
        self._hurry.set()  # from here on, scheduled re-sends do nothing
        # No new extensions, and none still on its way: one landing after a
        # release would hide the message again.
        extender.cancel()
        await self._until_done(self._extensions, deadline)
        await self._release_unacknowledged(deadline)
        self._warn_leftovers()
        everything = [
            *self._pollers,
            extender,
            *others,
            *self._resends,
            *self._extensions,
            *self._deletes,
        ]
        for task in everything:
            task.cancel()
        await asyncio.gather(*everything, return_exceptions=True)
        if not await self._sink.stop(timeout=max(1.0, deadline - self._clock())):
            log.warning("Kafka producer did not close cleanly")
        log.info("bridge stopped: %s", self.counters.summary(len(self._held)))

    async def _until(self, awaitable: Awaitable[Any], deadline: float) -> None:
        """Await *awaitable* until *deadline* or a second stop request, whichever comes first."""
        work = asyncio.ensure_future(awaitable)
        hurry = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait(
            {work, hurry},
            timeout=max(0.0, deadline - self._clock()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        for task in (work, hurry):
            task.cancel()
        await asyncio.gather(work, hurry, return_exceptions=True)

    async def _until_done(self, tasks: set[asyncio.Task[None]], deadline: float) -> None:
        """Wait (bounded as :meth:`_until`) for every task of *tasks* now running."""
        if tasks:
            await self._until(asyncio.wait(set(tasks)), deadline)

    async def _release_unacknowledged(self, deadline: float) -> None:
        """Give back what Kafka has not acknowledged with visibility 0: another bridge takes it now.

        Left alone, such a message would stay invisible for the rest of its
        visibility timeout. One produced but not yet acknowledged may still
        reach Kafka; forwarded again, it is de-duplicated downstream.
        """
        waiting = [h for h in self._held if not h.acked]
        if not waiting:
            return
        calls = [self._release(chunk) for chunk in chunks(waiting, MAX_BATCH_ENTRIES)]
        await self._until(asyncio.gather(*calls), deadline)

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
        self.counters.released += len(released)
        self._forget(released)

    def _warn_leftovers(self) -> None:
        """Say what a stop could not finish, and what becomes of it."""
        if self._open_polls:
            log.warning(
                "%d polls still open at SQS after the stop budget; what they receive returns "
                "after its visibility timeout",
                self._open_polls,
            )
        if self._held:
            log.warning(
                "%d messages not deleted or released in time; left in SQS, they "
                "return after their visibility timeout",
                len(self._held),
            )

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(
            attempt, self._config.backoff_base, self._config.backoff_cap, self._rand()
        )

    # -- receive and produce -----------------------------------------------------------

    def _start_poller(self) -> None:
        self._polling += 1
        self._pollers_started += 1
        task = self._spawn(self._poll(), f"poller-{self._pollers_started}")
        self._pollers.add(task)
        task.add_done_callback(self._pollers.discard)

    async def _poll(self) -> None:
        """Receive and hand over until stopped, or until a poll that is not full retires it."""
        batch = self._config.receive_batch
        failures = 0
        pause = 0.0
        while not self._stop.is_set():
            if not await self._gate.acquire(batch):
                return
            started = self._clock()
            try:
                messages = await self._receive(batch)
            except Exception as exc:
                self._gate.release(batch)
                self._idle_since = None
                failures += 1
                self._sqs.failure(f"ReceiveMessage: {describe(exc)}")
                await self._sleep(self._backoff(failures))
                continue
            failures = 0
            self._sqs.success()
            self._gate.release(batch - len(messages))
            self._note_receive(started, len(messages))
            await self._hold(messages, started)
            if self._rescale(len(messages), batch, lingered=pause > 0) is Scale.RETIRE:
                return
            pause = receive_pause(len(messages), batch, self._config.receive_linger)
            if pause:
                await self._sleep(pause)

    async def _receive(self, batch: int) -> list[SqsMessage]:
        """One long poll, counted while open so a stop knows what it waits for."""
        self._open_polls += 1
        try:
            return await self._queue.receive(
                batch, self._config.receive_wait, self._config.visibility_timeout
            )
        finally:
            self._open_polls -= 1

    def _rescale(self, returned: int, batch: int, *, lingered: bool) -> Scale:
        """Apply :func:`scale_after_receive`; nothing grows once a stop is requested."""
        if self._stop.is_set():
            return Scale.KEEP
        config = self._config
        decision = scale_after_receive(
            returned,
            batch,
            self._polling,
            config.pollers,
            config.poll_ceiling,
            self._gate.room,
            lingered=lingered,
        )
        if decision is Scale.GROW:
            self._start_poller()
        elif decision is Scale.RETIRE:
            self._polling -= 1
        return decision

    def _note_receive(self, started: float, count: int) -> None:
        if count:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = started

    async def _hold(self, messages: list[SqsMessage], received_at: float) -> None:
        """Take responsibility for one receive's messages and hand them to Kafka."""
        if not messages:
            return
        visible_until = received_at + self._config.visibility_timeout
        batch = [Held(m, to_record(m, self._config.key_field), visible_until) for m in messages]
        self._held.update(batch)
        self._drained.clear()
        self.counters.received += len(batch)
        for held in batch:
            await self._send(held)

    async def _send(self, held: Held) -> None:
        held.sent_at = self._clock()
        try:
            await self._sink.send(held.record, held)
        except Exception as exc:
            self._produce_failed(held, exc)

    def _on_delivery(self, batch: list[Held], error: BaseException | None) -> None:
        """The sink's report for one Kafka batch: acknowledged, or failed with *error*."""
        # A message produced again (see _resend_stuck) may be reported twice.
        batch = [h for h in dict.fromkeys(batch) if not h.acked and h in self._held]
        if not batch:
            return
        if error is not None:
            for held in batch:
                self._produce_failed(held, error)
            return
        for held in batch:
            held.acked = True
        self._last_ack = self._clock()
        self.counters.forwarded += len(batch)
        self._kafka.success()
        self._acked.extend(batch)
        self._ack_ready.set()

    def _produce_failed(self, held: Held, exc: BaseException) -> None:
        if classify_error(exc) is ErrorKind.DROP:
            self.counters.failed += 1
            log.error(
                "message %s can never be written to Kafka (%s); left in SQS for its redrive policy",
                held.message.message_id,
                describe(exc),
            )
            self._forget([held])
            return
        held.attempts += 1
        self.counters.retried += 1
        self._kafka.failure(f"{describe(exc)}; holding {len(self._held)} messages")
        asyncio.get_running_loop().call_later(self._backoff(held.attempts), self._resend, held)

    def _resend(self, held: Held) -> None:
        if held not in self._held or self._hurry.is_set():
            return
        task = asyncio.ensure_future(self._send(held))
        self._resends.add(task)
        task.add_done_callback(self._resends.discard)

    def _forget(self, done: list[Held]) -> None:
        """The bridge is finished with these (deleted or given up): free their slots."""
        held = self._held
        gone = [h for h in done if h in held]
        held.difference_update(gone)
        self._gate.release(len(gone))
        if not held:
            self._drained.set()

    # -- delete -------------------------------------------------------------------------

    async def _delete_loop(self) -> None:
        """Batch every poller's acknowledged messages into deletes of ten, run concurrently.

        One queue for all pollers keeps batches full whichever poll a message
        came from; the slots bound the concurrent calls (and so the threads).
        """
        while True:
            batch = await self._next_delete_batch()
            await self._delete_slots.acquire()
            task = asyncio.ensure_future(self._delete(batch))
            self._deletes.add(task)
            task.add_done_callback(self._delete_done)

    def _delete_done(self, task: asyncio.Task[None]) -> None:
        self._deletes.discard(task)
        self._delete_slots.release()
        self._check_task(task)

    async def _next_delete_batch(self) -> list[Held]:
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
            except Exception as exc:
                self._sqs.failure(f"DeleteMessageBatch: {describe(exc)}")
                retry = batch
            else:
                self._sqs.success()
                retry = self._settle_deletes(batch, failures)
            if not retry:
                return
            attempt += 1
            self.counters.retried += len(retry)
            await asyncio.sleep(self._backoff(attempt))
            batch = retry

    def _settle_deletes(self, batch: list[Held], failures: list[EntryFailure]) -> list[Held]:
        """Account for one DeleteMessageBatch response; return the entries worth retrying."""
        if not failures:
            self.counters.deleted += len(batch)
            self._forget(batch)
            return []
        failed = {f.index: f for f in failures}
        retry: list[Held] = []
        finished: list[Held] = []
        for index, held in enumerate(batch):
            failure = failed.get(index)
            if failure is None:
                self.counters.deleted += 1
                finished.append(held)
            elif failure.receipt_expired or failure.sender_fault:
                self.counters.failed += 1
                log.warning(
                    "could not delete message %s (%s: %s); SQS will deliver it again and "
                    "downstream de-duplicates it by message id",
                    held.message.message_id,
                    failure.code,
                    failure.message,
                )
                finished.append(held)
            else:
                retry.append(held)
        self._forget(finished)
        return retry

    # -- visibility, idleness, stats ------------------------------------------------------

    async def _extend_loop(self) -> None:
        """Keep each held message invisible until the bridge is done with it.

        A message is extended once a third of its timeout has passed, leaving
        two thirds for the call to land; each batch call runs on its own, so
        one slow call cannot hold up the next round.
        """
        period = min(15.0, max(0.5, self._config.visibility_timeout / 4))
        while True:
            await asyncio.sleep(period)
            self._extend_due()

    def _extend_due(self) -> None:
        horizon = self._clock() + self._config.visibility_timeout * 2 / 3
        due = [h for h in self._held if h.visible_until < horizon and not h.extending]
        for chunk in chunks(due, MAX_BATCH_ENTRIES):
            for held in chunk:
                held.extending = True
            task = asyncio.ensure_future(self._extend(chunk))
            self._extensions.add(task)
            task.add_done_callback(self._extensions.discard)

    async def _extend(self, chunk: Sequence[Held]) -> None:
        timeout = self._config.visibility_timeout
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
            elif held in self._held:
                log.warning(
                    "could not extend visibility of message %s (%s); it may be delivered "
                    "again, downstream de-duplicates it by message id",
                    held.message.message_id,
                    failed[index].code,
                )
                held.visible_until = float("inf")  # do not try again

    async def _housekeeping(self) -> None:
        """Exit when idle, warn when Kafka stops acknowledging, log the counters."""
        config = self._config
        next_stats = self._clock() + config.stats_interval
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = self._clock()
            self._check_stall(now)
            self._resend_stuck(now)
            if now >= next_stats:
                next_stats = now + config.stats_interval
                log.info(
                    "bridge stats: %s pollers=%d",
                    self.counters.summary(len(self._held)),
                    self._polling,
                )
            if self._is_idle(now):
                self.request_stop(f"queue empty for {config.exit_when_idle:g}s, all forwarded")

    def _check_stall(self, now: float) -> None:
        """Kafka is stalled if messages wait and none was acknowledged for a while.

        Progress, not the age of the oldest message, is what counts: after an
        outage the backlog drains over seconds while acknowledgements flow.
        """
        waiting = [h.sent_at for h in self._held if not h.acked]
        if not waiting:
            return
        quiet = now - max(self._last_ack, min(waiting))
        if quiet >= self._config.stall_warning_seconds:
            self._kafka.failure(
                f"no acknowledgement for {quiet:.0f}s; holding {len(self._held)} messages, "
                "extending their visibility"
            )

    def _resend_stuck(self, now: float) -> None:
        """Produce again what has waited too long for an acknowledgement.

        Kafka restarting under an idempotent producer can leave a batch whose
        delivery never resolves; without this the message would be held (and
        kept invisible) until the bridge stops.
        """
        if self._hurry.is_set():
            return
        limit = self._config.resend_after_seconds
        stuck = [h for h in self._held if not h.acked and h.sent_at and now - h.sent_at >= limit]
        for held in stuck:
            held.sent_at = now
            self.counters.retried += 1
            self._resend(held)
        if stuck:
            log.warning(
                "%d messages unacknowledged for %.0fs; producing them again", len(stuck), limit
            )

    def _is_idle(self, now: float) -> bool:
        limit = self._config.exit_when_idle
        return (
            limit is not None
            and not self._stop.is_set()
            and self._idle_since is not None
            and now - self._idle_since >= limit
            and not self._held
        )
