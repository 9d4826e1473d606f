"""take_batches (stream/worker/faust_patches/batches.py) with in-memory fakes of
the few Faust parts it touches; the real stack runs it in every pipeline test."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from stream.worker.faust_patches.batches import is_draining, take_batches


@dataclass(eq=False)
class FakeMessage:
    offset: int
    generation_id: int = 1
    tracked: bool = False


@dataclass(eq=False)
class FakeEvent:
    message: FakeMessage


@dataclass
class FakeConsumer:
    _unacked_messages: set[FakeMessage] = field(default_factory=set)
    acked: list[int] = field(default_factory=list)

    def track_many(self, messages: list[FakeMessage]) -> None:
        for message in messages:
            message.tracked = True
            self._unacked_messages.add(message)

    def ack_many(self, messages: list[FakeMessage]) -> None:
        for message in messages:
            self._unacked_messages.discard(message)
            self.acked.append(message.offset)


class FakeFlowControl:
    active = True

    def is_active(self) -> bool:
        return self.active


@dataclass
class FakeApp:
    consumer: FakeConsumer = field(default_factory=FakeConsumer)
    flow_control: FakeFlowControl = field(default_factory=FakeFlowControl)
    consumer_generation_id: int = 1


class StoppableQueue(asyncio.Queue[FakeEvent]):
    """Raises StopAsyncIteration from get once stopped, as Faust's channel
    queue does when Faust stops the agent."""

    stopping = False

    async def get(self) -> FakeEvent:
        if self.stopping:
            raise StopAsyncIteration
        return await super().get()


class FakeChannel:
    def __init__(self) -> None:
        self.queue = StoppableQueue()
        self.stopped = False

    def __aiter__(self) -> FakeChannel:
        return self

    async def __anext__(self) -> FakeEvent:  # aiter() wants one; take_batches reads the queue
        return await self.queue.get()

    def on_stop_iteration(self) -> None:
        self.stopped = True


@dataclass(eq=False)
class FakeStream:
    app: FakeApp
    channel: FakeChannel


def put(stream: FakeStream, *offsets: int, generation: int = 1) -> None:
    for offset in offsets:
        stream.channel.queue.put_nowait(FakeEvent(FakeMessage(offset, generation)))


def offsets(events: Any) -> list[int]:
    return [event.message.offset for event in events]


def test_full_batches_then_a_partial_one_after_the_wait_acked_only_once_processed() -> None:
    async def scenario() -> None:
        stream = FakeStream(FakeApp(), FakeChannel())
        put(stream, *range(5))
        batches = take_batches(stream, 2, 0.05)  # type: ignore[arg-type]
        first = await anext(batches)
        assert offsets(first) == [0, 1] and is_draining(stream)  # type: ignore[arg-type]
        assert stream.app.consumer.acked == []  # not before the agent is done with it
        assert {e.message for e in first} == stream.app.consumer._unacked_messages
        assert offsets(await anext(batches)) == [2, 3]
        assert stream.app.consumer.acked == [0, 1]
        assert offsets(await anext(batches)) == [4]  # partial, after 0.05 s
        put(stream, 5)
        assert offsets(await anext(batches)) == [5]
        assert stream.app.consumer.acked == [0, 1, 2, 3, 4]
        await batches.aclose()
        assert stream.channel.stopped and not is_draining(stream)  # type: ignore[arg-type]

    asyncio.run(scenario())


def test_records_of_an_earlier_generation_or_while_flow_stops_are_left_out_unacked() -> None:
    async def scenario() -> None:
        stream = FakeStream(FakeApp(consumer_generation_id=2), FakeChannel())
        put(stream, 0, 1, generation=1)
        put(stream, 2, generation=2)
        batches = take_batches(stream, 3, 0.05)  # type: ignore[arg-type]
        assert offsets(await anext(batches)) == [2]
        stream.app.flow_control.active = False  # a rebalance under way
        put(stream, 3, 4, 5, generation=2)
        taking = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.02)
        assert stream.channel.queue.empty() and not taking.done()
        stream.app.flow_control.active = True
        put(stream, 6, generation=2)
        assert offsets(await taking) == [6]
        assert stream.app.consumer.acked == [2]
        assert [m.offset for m in stream.app.consumer._unacked_messages] == [6]
        await batches.aclose()

    asyncio.run(scenario())


def test_batches_end_quietly_when_faust_stops_the_agent() -> None:
    """The last batch is acknowledged and the generator ends; before, the
    StopAsyncIteration left it as a RuntimeError, a crash logged at every stop."""

    async def scenario() -> None:
        stream = FakeStream(FakeApp(), FakeChannel())
        put(stream, 0)
        batches = take_batches(stream, 2, 0.01)  # type: ignore[arg-type]
        assert offsets(await anext(batches)) == [0]
        stream.channel.queue.stopping = True
        assert [offsets(b) async for b in batches] == []
        assert stream.app.consumer.acked == [0]
        assert stream.channel.stopped and not is_draining(stream)  # type: ignore[arg-type]

    asyncio.run(scenario())
