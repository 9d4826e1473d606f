"""How the watchdog names the way an agent's actor task ended."""

from __future__ import annotations

import asyncio

from stream.worker.watchdog import task_outcome


async def outcomes() -> list[str]:
    async def returns() -> None:
        return None

    async def raises() -> None:
        raise ValueError("a value that might hold data")

    async def waits() -> None:
        await asyncio.sleep(60)

    done, failed, running = (asyncio.create_task(f()) for f in (returns, raises, waits))
    cancelled = asyncio.create_task(waits())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(done, failed, cancelled, return_exceptions=True)
    names = [task_outcome(t) for t in (done, failed, cancelled, running, None)]
    running.cancel()
    return names


def test_outcomes_are_named_by_kind_and_exception_type_only() -> None:
    assert asyncio.run(outcomes()) == [
        "a normal return",
        "ValueError",
        "cancellation",
        "nothing (still running)",
        "nothing (still running)",
    ]
