"""The pollers: ReceiveMessage long polls, as many as the queue keeps busy.

Pollers reserve room under the in-flight bound before each receive, so a
slow Kafka stops the intake instead of growing memory. Their number adapts
between ``pollers`` and ``max_pollers``: a poll that comes back full while
room remains starts another poller (the queue holds more than the open polls
fetch, as against a remote SQS where each call takes tens of milliseconds);
any other poll retires its poller down to the floor.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bridge.config import ForwarderConfig
from bridge.inflight import InFlightGate
from bridge.outage import OutageLog, describe
from bridge.ports import QueuePort, QueueRefused, SqsMessage


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


class Pollers:
    """Runs the poller loops, counts the open polls, and notes when the queue went idle."""

    def __init__(
        self,
        queue: QueuePort,
        gate: InFlightGate,
        hand_over: Callable[[list[SqsMessage], float], Awaitable[None]],
        *,
        config: ForwarderConfig,
        stop: asyncio.Event,
        outage: OutageLog,
        clock: Callable[[], float],
        backoff: Callable[[int], float],
        sleep: Callable[[float], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]],
    ) -> None:
        """*hand_over* takes each receive's messages and when it started; *sleep* wakes
        early once *stop* is set; *spawn* starts a named task that the bridge watches."""
        self._queue = queue
        self._gate = gate
        self._hand_over = hand_over
        self._config = config
        self._stop = stop
        self._sqs = outage
        self._clock = clock
        self._backoff = backoff
        self._sleep = sleep
        self._spawn = spawn
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = 0
        # Pollers not retired: counted at the decision itself, because a task
        # leaves _tasks only a loop turn after it ends, and two pollers
        # retiring in the same turn must not both see room above the floor.
        self._polling = 0
        self._open_polls = 0
        self._idle_since: float | None = None

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """The poller tasks still running (a stop awaits them)."""
        return self._tasks

    @property
    def running(self) -> int:
        """Poller loops now running (between the floor and the ceiling while running)."""
        return self._polling

    @property
    def open_polls(self) -> int:
        """ReceiveMessage calls now waiting on SQS."""
        return self._open_polls

    @property
    def idle_since(self) -> float | None:
        """When the current run of empty receives began; None while messages come."""
        return self._idle_since

    def start(self) -> None:
        """Start one more poller."""
        self._polling += 1
        self._started += 1
        task = self._spawn(self._poll(), f"poller-{self._started}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            except QueueRefused:
                raise
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
            await self._hand_over(messages, started)
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
            self.start()
        elif decision is Scale.RETIRE:
            self._polling -= 1
        return decision

    def _note_receive(self, started: float, count: int) -> None:
        if count:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = started
