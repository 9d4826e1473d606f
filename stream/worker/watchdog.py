"""A worker's self-checks, run by a timer: agents that stopped consuming,
and stream partitions that stopped making progress (which it repairs).

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
from collections.abc import Iterable

import faust

log = logging.getLogger(__name__)


def report_stopped_agents(agents: Iterable[faust.types.AgentT]) -> None:
    """Log an error for each agent whose actor ended or whose stream no
    longer drains its topic: its partitions would sit unprocessed."""
    for agent in agents:
        for actor in agent._actors:  # type: ignore[attr-defined]
            task, stream = actor.actor_task, actor.stream
            if (task is not None and task.done()) or not stream._passive:
                log.error(
                    "agent %s has stopped consuming: actor ended with %s, stream draining=%s, "
                    "stream stopped=%s",
                    agent.name,
                    task_outcome(task),
                    stream._passive,
                    stream.should_stop,
                )


def task_outcome(task: asyncio.Task | None) -> str:
    """How an actor task ended, by exception type only (messages may hold data)."""
    if task is None or not task.done():
        return "nothing (still running)"
    if task.cancelled():
        return "cancellation"
    exc = task.exception()
    return "a normal return" if exc is None else type(exc).__name__


async def repair_stalled_partitions(app: faust.App) -> None:
    """Log stream partitions with no progress since the last check, and
    re-fetch those stalled at two checks in a row."""
    consumer = app.consumer
    stalled = {} if app.rebalancing else consumer.stalled_partitions()  # type: ignore[attr-defined]
    again = consumer.stalled_twice(stalled)  # type: ignore[attr-defined]
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
            await consumer.refetch(again)  # type: ignore[attr-defined]
        except Exception as exc:  # a best-effort repair must not stop the worker
            log.warning("re-fetch failed (%r); the next check tries again", exc)
