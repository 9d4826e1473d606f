"""Batches of records for an agent, taken straight off its topic's queue.

Faust's ``Stream.take_events`` fills its buffer through the stream's own
iterator, which for every record yields to the event loop (``sleep(0)``: a
whole loop iteration), runs the buffering processor as a coroutine, sets
the stream's current event and calls four sensor hooks; after the batch it
acknowledges each event through ``Stream.ack``, taking the ack lock twice
per record. That was about a third of a do-nothing agent's CPU time
(``python -m bench cost``, the ``floor`` line).

:func:`take_batches` reads the queue the conductor delivers the topic's
records to, as that iterator would, and keeps what matters of its per-record
work:

- each record of a batch is tracked as unacknowledged before the agent
  sees it, so that a rebalance waits for the batch (``Consumer.wait_empty``),
  and acknowledged after the agent has finished it, a batch at a time
  (``transport.Consumer.track_many`` and ``ack_many``);
- a record fetched in an earlier consumer generation, or while flow is
  stopped (a rebalance), is left out and not acknowledged: its partition
  has been, or will be, sought back to its committed offset, and it is read
  again (Faust's iterator skips such records too, but acknowledges them);
- a batch is yielded once it holds *size* records or *within* seconds after
  its first record arrived.

The sensor hooks it leaves out are those :class:`stream.worker.monitor.LeanMonitor`
switches off anyway.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import faust
from faust.types import ChannelT

from stream.worker.faust_patches import transport

# Streams a take_batches generator is draining (read by the watchdog).
_draining: weakref.WeakSet[faust.types.StreamT] = weakref.WeakSet()


def is_draining(stream: faust.types.StreamT) -> bool:
    """Whether :func:`take_batches` is consuming *stream*'s topic."""
    return stream in _draining


async def take_batches(
    stream: faust.types.StreamT, size: int, within: float
) -> AsyncIterator[list[faust.types.EventT]]:
    """Batches of up to *size* events of *stream*'s topic, each yielded at the
    latest *within* seconds after its first event; acknowledged once the
    caller asks for the next batch."""
    app = stream.app
    consumer = cast(transport.Consumer, app.consumer)  # the workers' transport
    # Iterating the topic subscribes to it (Topic.__aiter__), as take_events does.
    channel = cast(ChannelT, aiter(stream.channel))
    queue = channel.queue
    loop = asyncio.get_running_loop()
    _draining.add(stream)
    try:
        while True:
            try:
                events = await _next_events(queue, size, loop.time, within)
            except StopAsyncIteration:
                # Faust throws this into the queue when it stops the agent: the
                # end of the batches (raised out of an async generator, Python
                # would turn it into a RuntimeError and log a crash at every stop).
                return
            current = _current(app, events)
            if not current:
                continue
            messages = [event.message for event in current]
            consumer.track_many(messages)
            yield current
            consumer.ack_many(messages)
    finally:
        _draining.discard(stream)
        channel.on_stop_iteration()


async def _next_events(
    queue: Any, size: int, clock: Callable[[], float], within: float
) -> list[faust.types.EventT]:
    """Up to *size* events from *queue*: waits for the first, then at most
    *within* seconds for the rest."""
    events = [await queue.get()]
    deadline = clock() + within
    while len(events) < size:
        if not queue.empty():
            events.append(queue.get_nowait())
            continue
        remaining = deadline - clock()
        if remaining <= 0:
            break
        try:
            events.append(await asyncio.wait_for(queue.get(), remaining))
        except TimeoutError:
            break
    return events


def _current(app: faust.types.AppT, events: list[faust.types.EventT]) -> list[faust.types.EventT]:
    """*events* without those fetched in an earlier consumer generation or
    while flow is stopped (a rebalance under way)."""
    if not app.flow_control.is_active():
        return []
    generation = app.consumer_generation_id
    if all(event.message.generation_id == generation for event in events):
        return events
    return [event for event in events if event.message.generation_id == generation]
