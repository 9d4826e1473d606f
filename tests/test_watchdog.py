"""How the watchdog names the way an agent's actor task ended."""

from __future__ import annotations

import asyncio

from stream.worker.watchdog import Health, stalled_streaks, task_outcome


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


# The health rule: unhealthy when an agent stopped consuming, when a partition
# made no progress at UNHEALTHY_STALLED_CHECKS checks in a row, or when the
# checks themselves stopped; healthy again once the cause is gone.


def checked(*rounds: tuple[list[str], list[str]]) -> Health:
    health = Health(interval=30.0, checked_at=0.0)
    for n, (stopped, stalled) in enumerate(rounds, start=1):
        health.record(stopped, stalled, now=30.0 * n)
    return health


def test_a_worker_whose_checks_found_nothing_is_healthy() -> None:
    assert checked(([], []), ([], [])).problems(now=61.0) == []


def test_a_stopped_agent_makes_the_worker_unhealthy_at_once() -> None:
    problems = checked(([], []), (["stream.worker.agents.process_logins"], [])).problems(now=61.0)
    assert problems == ["agent stream.worker.agents.process_logins has stopped consuming"]


def test_a_partition_stalled_at_consecutive_checks_makes_the_worker_unhealthy() -> None:
    once = checked(([], ["logins.raw:3"]))
    assert once.problems(now=31.0) == []  # a first sighting may race a batch
    twice = checked(([], ["logins.raw:3"]), ([], ["logins.raw:3", "logins.raw:5"]))
    assert twice.problems(now=61.0) == ["partition logins.raw:3 has made no progress for 2 checks"]


def test_progress_between_checks_restarts_the_count_and_restores_health() -> None:
    health = checked(([], ["logins.raw:3"]), ([], ["logins.raw:3"]), ([], []))
    assert health.problems(now=91.0) == []
    health.record([], ["logins.raw:3"], now=120.0)  # stalled again: counts from one
    assert health.problems(now=121.0) == []


def test_checks_that_stopped_running_make_the_worker_unhealthy() -> None:
    health = checked(([], []))
    assert health.problems(now=30.0 + 3 * 30.0) == []
    assert health.problems(now=30.0 + 3 * 30.0 + 1) == ["no self-check for 91 s"]


def test_before_the_first_check_staleness_counts_from_the_start() -> None:
    assert Health(interval=30.0, checked_at=100.0).problems(now=150.0) == []
    assert Health(interval=30.0, checked_at=100.0).problems(now=191.0) == ["no self-check for 91 s"]


def test_streaks_count_consecutive_checks_and_forget_partitions_that_moved() -> None:
    assert stalled_streaks({"a:0": 2, "a:1": 1}, ["a:0", "a:2"]) == {"a:0": 3, "a:2": 1}
