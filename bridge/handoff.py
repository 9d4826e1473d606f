"""Held messages handed to Kafka, and what Kafka reports for each batch applied.

An acknowledged message goes on to be deleted from SQS; a failed one is
produced again after a backoff, unless Kafka can never take it, in which
case it is given up and left in SQS for its redrive policy. A message whose
report never comes is produced again too, and a Kafka that acknowledges
nothing while messages wait is reported as stalled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bridge.config import ForwarderConfig
from bridge.counters import Counters
from bridge.inflight import Held, InFlight
from bridge.outage import OutageLog, describe, log
from bridge.ports import SinkPort, SqsMessage
from bridge.producer import ErrorKind, classify_error, to_record


class KafkaHandoff:
    """Sends held messages to the sink and settles each delivery report."""

    def __init__(
        self,
        sink: SinkPort,
        inflight: InFlight,
        acknowledged: Callable[[list[Held]], None],
        *,
        config: ForwarderConfig,
        counters: Counters,
        outage: OutageLog,
        clock: Callable[[], float],
        backoff: Callable[[int], float],
        hurry: asyncio.Event,
    ) -> None:
        """*acknowledged* takes each batch Kafka acknowledged (the deleter's queue);
        once *hurry* is set, a stop is under way and nothing is produced again."""
        self._sink = sink
        self._inflight = inflight
        self._acknowledged = acknowledged
        self._config = config
        self._counters = counters
        self._kafka = outage
        self._clock = clock
        self._backoff = backoff
        self._hurry = hurry
        self._last_ack = float("-inf")
        self._resends: set[asyncio.Task[None]] = set()
        sink.listen(self._on_delivery)

    @property
    def resends(self) -> set[asyncio.Task[None]]:
        """Re-sends now running (a stop cancels what is left of them)."""
        return self._resends

    async def hold(self, messages: list[SqsMessage], received_at: float) -> None:
        """Take responsibility for one receive's messages and hand them to Kafka."""
        if not messages:
            return
        visible_until = received_at + self._config.visibility_timeout
        key_field, envelope = self._config.key_field, self._config.envelope
        batch = [Held(m, to_record(m, key_field, envelope), visible_until) for m in messages]
        self._inflight.take(batch)
        self._counters.received += len(batch)
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
        # A message produced again (see resend_stuck) may be reported twice.
        batch = [h for h in dict.fromkeys(batch) if not h.acked and h in self._inflight]
        if not batch:
            return
        if error is not None:
            for held in batch:
                self._produce_failed(held, error)
            return
        for held in batch:
            held.acked = True
        self._last_ack = self._clock()
        self._counters.forwarded += len(batch)
        self._kafka.success()
        self._acknowledged(batch)

    def _produce_failed(self, held: Held, exc: BaseException) -> None:
        if classify_error(exc) is ErrorKind.DROP:
            self._counters.failed += 1
            log.error(
                "message %s can never be written to Kafka (%s); left in SQS for its redrive policy",
                held.message.message_id,
                describe(exc),
            )
            self._inflight.forget([held])
            return
        held.attempts += 1
        self._counters.retried += 1
        self._kafka.failure(f"{describe(exc)}; holding {len(self._inflight)} messages")
        asyncio.get_running_loop().call_later(self._backoff(held.attempts), self._resend, held)

    def _resend(self, held: Held) -> None:
        if held not in self._inflight or self._hurry.is_set():
            return
        task = asyncio.ensure_future(self._send(held))
        self._resends.add(task)
        task.add_done_callback(self._resends.discard)

    def check_stall(self, now: float) -> None:
        """Kafka is stalled if messages wait and none was acknowledged for a while.

        Progress, not the age of the oldest message, is what counts: after an
        outage the backlog drains over seconds while acknowledgements flow.
        """
        waiting = [h.sent_at for h in self._inflight if not h.acked]
        if not waiting:
            return
        quiet = now - max(self._last_ack, min(waiting))
        if quiet >= self._config.stall_warning_seconds:
            self._kafka.failure(
                f"no acknowledgement for {quiet:.0f}s; holding {len(self._inflight)} messages, "
                "extending their visibility"
            )

    def resend_stuck(self, now: float) -> None:
        """Produce again what has waited too long for an acknowledgement.

        Kafka restarting under an idempotent producer can leave a batch whose
        delivery never resolves; without this the message would be held (and
        kept invisible) until the bridge stops.
        """
        if self._hurry.is_set():
            return
        limit = self._config.resend_after_seconds
        stuck = [
            h for h in self._inflight if not h.acked and h.sent_at and now - h.sent_at >= limit
        ]
        for held in stuck:
            held.sent_at = now
            self._counters.retried += 1
            self._resend(held)
        if stuck:
            log.warning(
                "%d messages unacknowledged for %.0fs; producing them again", len(stuck), limit
            )
