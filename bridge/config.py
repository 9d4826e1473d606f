"""The forwarder's knobs, decoupled from where they were read (see :meth:`from_settings`).

Besides the settings themselves it derives what the parts share: the poller
ceiling, the concurrent SQS calls, the receive batch and the long-poll wait
that a stop can still await.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.ports import MAX_BATCH_ENTRIES, MAX_WAIT_SECONDS
from bridge.producer import DEFAULT_KEY_FIELD
from stream.common.settings import Settings

# Concurrent visibility changes on top of the deletes (extensions, releases).
VISIBILITY_CALLS = 2


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
    # Which envelopes the key is read through (stream.common.envelopes).
    envelope: str = "auto"
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
            envelope=settings.envelope,
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
