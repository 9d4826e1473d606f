"""``seen_devices``' changelog follows ``logins.raw``'s partition count.

Faust co-partitions a table with its source topic only when both have the
same number of partitions, and the agent writes each device's entry to the
changelog partition of its raw partition. A raw topic made elsewhere with
another count than ``MASKSTREAM_PARTITIONS`` used to stall the worker for good
(the agent crashed on ``AssertionError: Unrecognized partition`` and stopped
consuming). Pure rules first, then the real Kafka, PostgreSQL and workers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka.admin import NewPartitions

from stream.common.topic_admin import TopicSpec, ensure_topics
from stream.worker.table_partitions import (
    CHANGELOG_CONFIGS,
    ChangelogPlan,
    co_partitioned,
    plan_changelog,
)
from tests.support.sandbox import IsolatedPipeline
from tests.test_local_state import logins, rows_per_device, run, table_entry
from tests.test_readiness import wait_for

RECREATED = "to create it again with"


@pytest.mark.parametrize(
    ("raw", "changelog", "plan"),
    [
        (None, None, ChangelogPlan(8)),  # the worker creates both
        (12, None, ChangelogPlan(12)),  # the raw topic's count, not the setting
        (3, None, ChangelogPlan(3)),
        (8, 8, ChangelogPlan(8)),
        (12, 8, ChangelogPlan(12, recreate=True)),  # the raw topic gained partitions
        (3, 8, ChangelogPlan(3, recreate=True)),
        (None, 4, ChangelogPlan(8, recreate=True)),  # the raw topic will be created with 8
    ],
)
def test_the_changelog_takes_the_raw_topics_partition_count(
    raw: int | None, changelog: int | None, plan: ChangelogPlan
) -> None:
    assert plan_changelog(raw, changelog, configured=8) == plan


def test_co_partitioned_only_with_equal_known_counts() -> None:
    assert co_partitioned(6, 6)
    assert not co_partitioned(6, 4)
    assert not co_partitioned(None, None)
    assert not co_partitioned(4, None)


def changelog_of(pipeline: IsolatedPipeline) -> str:
    return f"{pipeline.name}-seen_devices-changelog"


def partition_count(pipeline: IsolatedPipeline, topic: str) -> int:
    async def count() -> int:
        async with pipeline.kafka.admin_session() as admin:
            (described,) = await admin.describe_topics([topic])
            return len(described["partitions"])

    return asyncio.run(count())


def worker_log_lines(pipeline: IsolatedPipeline, text: str, worker: str = "worker") -> list[str]:
    return [line for line in pipeline.launcher.log(worker).splitlines() if text in line]


def answers_from_both(pipeline: IsolatedPipeline, worker: str, timeout: float = 60.0) -> bool:
    """Whether *worker*, once Ready and holding partitions, answers every
    device with its count, some from its table and the rest from PostgreSQL."""
    port = pipeline.launcher.web_ports[worker]
    wait_for(f"http://127.0.0.1:{port}/ready", 200, timeout, f"http://127.0.0.1:{port}/health")
    deadline = time.monotonic() + timeout
    while True:
        sources = set()
        for device, rows in rows_per_device(pipeline).items():
            entry = table_entry(pipeline, device, worker)
            assert entry is not None and entry["login_count"] == rows
            sources.add(entry["source"])
        if sources == {"table", "database"} or time.monotonic() > deadline:
            return sources == {"table", "database"}
        time.sleep(1)  # a rebalance may still be handing out partitions


@pytest.mark.services
def test_a_raw_topic_made_with_another_count_gets_a_changelog_of_its_count(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """The raw topic made elsewhere with 6 partitions, MASKSTREAM_PARTITIONS=4,
    and a changelog of 4 left by earlier workers: two workers starting
    together recreate the changelog with 6, every partition is processed,
    and the table is exact."""
    with IsolatedPipeline(stack_env, tmp_path, partitions=6) as pipeline:
        pipeline.env["MASKSTREAM_PARTITIONS"] = "4"

        async def leave_a_changelog_of_four() -> None:
            async with pipeline.kafka.admin_session() as admin:
                spec = TopicSpec(changelog_of(pipeline), 4, CHANGELOG_CONFIGS)
                await ensure_topics(admin, [spec], 1)

        asyncio.run(leave_a_changelog_of_four())
        pipeline.launcher.start_worker("worker-2")
        messages = logins(range(40), 3)
        run(pipeline, messages)

        assert partition_count(pipeline, changelog_of(pipeline)) == 6
        assert worker_log_lines(pipeline, RECREATED) or worker_log_lines(
            pipeline, RECREATED, "worker-2"
        )
        assert set(rows_per_device(pipeline).values()) == {3}
        assert len(rows_per_device(pipeline)) == 40
        assert pipeline.device_mismatches() == {}
        assert pipeline.changelog_mismatches() == {}
        for worker in ("worker", "worker-2"):
            # Each answers its own partitions' devices from its table (the
            # group's leader and the other alike), the rest from PostgreSQL.
            assert answers_from_both(pipeline, worker), worker
        assert pipeline.launcher.children["worker"].poll() is None
        assert pipeline.launcher.children["worker-2"].poll() is None


@pytest.mark.services
def test_a_raw_topic_that_gains_partitions_while_the_worker_runs(
    pipeline: IsolatedPipeline,
) -> None:
    """Partitions added to the raw topic under a running worker: it processes
    the new partitions too (PostgreSQL exact, lookups from PostgreSQL), and
    after a restart the changelog has the new count, the worker's databases
    of the old changelog are set aside, and the table is exact."""
    run(pipeline, logins(range(30), 2))

    async def add_partitions() -> None:
        async with pipeline.kafka.admin_session() as admin:
            await admin.create_partitions({pipeline.raw_topic: NewPartitions(6)})

    asyncio.run(add_partitions())
    done = pipeline.outcome_count()
    pipeline.produce_raw(logins(range(30, 90), 2))  # some of them on partitions 4 and 5
    pipeline.wait_for_outcomes(done + 120)
    assert pipeline.launcher.children["worker"].poll() is None
    assert set(rows_per_device(pipeline).values()) == {2}
    assert pipeline.device_mismatches() == {}
    assert worker_log_lines(pipeline, "has no partition")
    device = next(iter(rows_per_device(pipeline)))
    entry = table_entry(pipeline, device)
    assert entry is not None and (entry["login_count"], entry["source"]) == (2, "database")

    pipeline.launcher.stop("worker")
    run(pipeline, logins(range(90), 1))
    assert partition_count(pipeline, changelog_of(pipeline)) == 6
    assert worker_log_lines(pipeline, RECREATED)
    # Its databases were built from the changelog of 4: set aside, not reused.
    assert worker_log_lines(pipeline, "changelog of 4 partitions, this one has 6")
    assert set(rows_per_device(pipeline).values()) == {3}
    assert pipeline.device_mismatches() == {}
    assert pipeline.changelog_mismatches() == {}
    entry = table_entry(pipeline, device)
    assert entry is not None and (entry["login_count"], entry["source"]) == (3, "table")
