"""A worker's self-checks, run by a timer: agents that stopped consuming,
and stream partitions that stopped making progress (which it repairs).
What the last checks found is kept in :data:`health`, which the worker's
``/health`` and ``/ready`` pages report, so an orchestrator restarts a worker
that answers HTTP but no longer moves data.

Faust drops fetched records in several races around rebalances (a record
fetched as its partition is paused, a batch cut off by a new generation).
A partition that lost records that way keeps its commit at the first one
(see ``kafka_transport.next_commit``) and, when the rest was never delivered
either, stops: the fault suite's replay case, about one run in four.
Seeking it back to its committed offset reads the lost records again;
processing a record twice is harmless here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

import faust

from stream.worker.faust_patches import transport
from stream.worker.faust_patches.batches import is_draining
from stream.worker.faust_patches.internals import agent_actors

log = logging.getLogger(__name__)


# A partition counts against health once it has made no progress at this
# many checks in a row: the check that first sees it may race a batch being
# written, and the second one is where the re-fetch is tried; if that cures
# it, the next check sees progress and health returns.
UNHEALTHY_STALLED_CHECKS = 2
# Checks older than this many intervals mean the checks themselves stopped.
STALE_CHECK_INTERVALS = 3


def stalled_streaks(previous: Mapping[str, int], stalled: Iterable[str]) -> dict[str, int]:
    """Consecutive checks without progress per partition, after a check that
    found *stalled*; a partition that progressed (or was revoked) drops out."""
    return {partition: previous.get(partition, 0) + 1 for partition in stalled}


@dataclass
class Health:
    """What the worker's self-checks found last, and the rule that makes it
    healthy or not: no agent stopped consuming, no partition stalled at
    :data:`UNHEALTHY_STALLED_CHECKS` checks in a row, and checks still running."""

    interval: float
    stopped_agents: tuple[str, ...] = ()
    streaks: dict[str, int] = field(default_factory=dict)
    # Monotonic time of the last check; until the first, of the worker's start.
    checked_at: float = field(default_factory=time.monotonic)

    def record(self, stopped_agents: Iterable[str], stalled: Iterable[str], now: float) -> None:
        self.stopped_agents = tuple(stopped_agents)
        self.streaks = stalled_streaks(self.streaks, stalled)
        self.checked_at = now

    def problems(self, now: float) -> list[str]:
        """Why the worker is unhealthy (empty when it is healthy); names only
        agents, topics and partitions, never data."""
        found = [f"agent {name} has stopped consuming" for name in self.stopped_agents]
        found += [
            f"partition {partition} has made no progress for {checks} checks"
            for partition, checks in sorted(self.streaks.items())
            if checks >= UNHEALTHY_STALLED_CHECKS
        ]
        if now - self.checked_at > STALE_CHECK_INTERVALS * self.interval:
            found.append(f"no self-check for {now - self.checked_at:.0f} s")
        return found


# The worker's own state: written by its timer, read by its web pages.
CHECK_INTERVAL_SECONDS = 30.0
health = Health(CHECK_INTERVAL_SECONDS)


def report_stopped_agents(agents: Iterable[faust.types.AgentT]) -> list[str]:
    """Log an error for each agent whose actor ended or whose stream no
    longer drains its topic (its partitions would sit unprocessed); return
    their names."""
    stopped = []
    for agent in agents:
        for actor in agent_actors(agent):
            task, stream = actor.actor_task, actor.stream
            draining = is_draining(stream)
            if (task is not None and task.done()) or not draining:
                stopped.append(agent.name)
                log.error(
                    "agent %s has stopped consuming: actor ended with %s, stream draining=%s, "
                    "stream stopped=%s",
                    agent.name,
                    task_outcome(task),
                    draining,
                    stream.should_stop,
                )
    return stopped


def task_outcome(task: asyncio.Task | None) -> str:
    """How an actor task ended, by exception type only (messages may hold data)."""
    if task is None or not task.done():
        return "nothing (still running)"
    if task.cancelled():
        return "cancellation"
    exc = task.exception()
    return "a normal return" if exc is None else type(exc).__name__


async def repair_stalled_partitions(app: faust.App) -> list[str]:
    """Log stream partitions with no progress since the last check, and
    re-fetch those stalled at two checks in a row; return the stalled ones
    as ``topic:partition``."""
    consumer = cast(transport.Consumer, app.consumer)  # the consumer of our transport
    stalled = {} if app.rebalancing else consumer.stalled_partitions()
    again = consumer.stalled_twice(stalled)
    if stalled:
        log.warning(
            "partitions with no commit since the last check "
            "(committed/fetch position/highwater): %s",
            ", ".join(stalled.values()),
        )
    if again:
        log.error(
            "re-fetching from the committed offset: %s", ", ".join(stalled[tp] for tp in again)
        )
        try:
            await consumer.refetch(again)
        except Exception as exc:  # a best-effort repair must not stop the worker
            log.warning("re-fetch failed (%r); the next check tries again", exc)
    return [f"{tp.topic}:{tp.partition}" for tp in stalled]
