"""The bridge's pipeline: poll SQS, produce to Kafka, delete what Kafka acknowledged.

One message's path::

    poller --ReceiveMessage--> held --sink.send()--> Kafka batch --report-->
        acknowledged: delete queue --deleter--> DeleteMessageBatch
        failed: backoff, send again (or, if it can never be written, leave it in SQS)

Each stage is a module of its own, driven through the ports in
:mod:`bridge.ports`: :mod:`bridge.polling` (pollers, as many as the queue
keeps busy, each reserving room under the in-flight bound before it
receives), :mod:`bridge.inflight` (what the bridge holds), :mod:`bridge.handoff`
(to Kafka, and each batch's outcome), :mod:`bridge.deleter` (acknowledged
messages, ten to a delete) and :mod:`bridge.visibility` (held messages kept
invisible while they wait). A message leaves the bridge only when it is
deleted, released or given up; nothing is deleted before its acknowledgement.
This module assembles them and owns what spans them: the start, the
housekeeping clock and the stop.

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
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bridge.config import ForwarderConfig
from bridge.counters import Counters
from bridge.deleter import Deleter
from bridge.handoff import KafkaHandoff
from bridge.inflight import InFlight
from bridge.outage import OutageLog, describe, log
from bridge.polling import Pollers
from bridge.ports import QueuePort, QueueRefused, SinkPort
from bridge.visibility import Visibility
from stream.common.retry import backoff_delay

# How often the housekeeping loop checks idleness, stalls and the stats clock.
TICK_SECONDS = 0.25


class Forwarder:
    """Moves messages from a queue to a sink, deleting each only after its acknowledgement.

    It assembles the parts (the pollers, the in-flight messages, the handoff
    to Kafka, the deleter, the visibility keeper), runs them as tasks, and
    owns what spans them: the stop sequence and the housekeeping clock.
    """

    def __init__(
        self,
        queue: QueuePort,
        sink: SinkPort,
        config: ForwarderConfig,
        counters: Counters | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._sink = sink
        self._config = config
        self.counters = counters or Counters()
        self._clock = clock
        self._rand = rand
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._kafka = OutageLog("Kafka", clock)
        sqs = self._sqs = OutageLog("SQS", clock)
        self._crashed = False
        self._held = InFlight(config.max_in_flight)
        self._deleter = Deleter(
            queue,
            self._held,
            slots=config.deleters,
            counters=self.counters,
            outage=sqs,
            backoff=self._backoff,
            check_task=self._check_task,
        )
        self._handoff = KafkaHandoff(
            sink,
            self._held,
            self._deleter.add,
            config=config,
            counters=self.counters,
            outage=self._kafka,
            clock=clock,
            backoff=self._backoff,
            hurry=self._hurry,
        )
        self._visibility = Visibility(
            queue,
            self._held,
            timeout=config.visibility_timeout,
            counters=self.counters,
            outage=sqs,
            clock=clock,
        )
        self._pollers = Pollers(
            queue,
            self._held.gate,
            self._handoff.hold,
            config=config,
            stop=self._stop,
            outage=sqs,
            clock=clock,
            backoff=self._backoff,
            sleep=self._sleep,
            spawn=self._spawn,
        )

    # -- public -----------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Messages received and not yet deleted or given up."""
        return len(self._held)

    def oldest_held_sent_ms(self) -> int | None:
        """SentTimestamp of the oldest message held (for its age on ``/metrics``)."""
        return self._held.oldest_sent_ms()

    def outages(self) -> list[OutageLog]:
        """The SQS and Kafka outage trackers (for ``/ready`` and ``/metrics``)."""
        return [self._sqs, self._kafka]

    @property
    def open_polls(self) -> int:
        """ReceiveMessage calls now waiting on SQS."""
        return self._pollers.open_polls

    @property
    def pollers(self) -> int:
        """Poller loops now running (between the floor and the ceiling while running)."""
        return self._pollers.running

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
            self._pollers.start()
        extender = self._spawn(self._visibility.extend_loop(), "extender")
        others = [
            self._spawn(self._deleter.run(), "deleter"),
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
        error = task.exception()
        self._crashed = True
        if isinstance(error, QueueRefused):
            log.error("SQS refused the bridge's request, stopping: %s", error)
            self.request_stop("SQS refused a request")
            return
        log.error("bridge task %s crashed", task.get_name(), exc_info=error)
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
        self._held.gate.close()  # pollers waiting for room end at once; no new polls start
        await self._until_done(self._pollers.tasks, release_at)
        if self._held:
            await self._until(self._held.drained(), release_at)
        self._hurry.set()  # from here on, scheduled re-sends do nothing
        # No new extensions, and none still on its way: one landing after a
        # release would hide the message again.
        extender.cancel()
        await self._until_done(self._visibility.extensions, deadline)
        await self._release_unacknowledged(deadline)
        self._warn_leftovers()
        everything = [
            *self._pollers.tasks,
            extender,
            *others,
            *self._handoff.resends,
            *self._visibility.extensions,
            *self._deleter.calls,
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
        waiting = self._held.unacknowledged()
        if not waiting:
            return
        await self._until(self._visibility.release(waiting), deadline)

    def _warn_leftovers(self) -> None:
        """Say what a stop could not finish, and what becomes of it."""
        if self._pollers.open_polls:
            log.warning(
                "%d polls still open at SQS after the stop budget; what they receive returns "
                "after its visibility timeout",
                self._pollers.open_polls,
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

    # -- housekeeping ---------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Exit when idle, warn when Kafka stops acknowledging, log the counters."""
        config = self._config
        next_stats = self._clock() + config.stats_interval
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = self._clock()
            self._handoff.check_stall(now)
            self._handoff.resend_stuck(now)
            if now >= next_stats:
                next_stats = now + config.stats_interval
                log.info(
                    "bridge stats: %s pollers=%d",
                    self.counters.summary(len(self._held)),
                    self._pollers.running,
                )
            if self._is_idle(now):
                self.request_stop(f"queue empty for {config.exit_when_idle:g}s, all forwarded")

    def _is_idle(self, now: float) -> bool:
        limit = self._config.exit_when_idle
        return (
            limit is not None
            and not self._stop.is_set()
            and self._pollers.idle_since is not None
            and now - self._pollers.idle_since >= limit
            and not self._held
        )
