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
from aiokafka.errors import (
    InvalidPartitionsError,
    KafkaConnectionError,
    NodeNotReadyError,
    TopicAuthorizationFailedError,
)

from stream.common.topic_admin import TopicSpec, ensure_topics, kafka_unavailable
from stream.worker.table_partitions import (
    CHANGELOG_CONFIGS,
    changelog_name,
    co_partitioned,
    other_changelogs,
)
from tests.support.sandbox import IsolatedPipeline
from tests.test_local_state import logins, rows_per_device, run, table_entry
from tests.test_readiness import wait_for

LEFT_BEHIND = "delete once no older worker runs"


def test_the_changelogs_name_carries_its_partition_count() -> None:
    assert changelog_name("maskstream", "seen_devices", 6) == "maskstream-seen_devices-p6-changelog"


def test_other_changelogs_are_those_of_other_counts_and_the_unnumbered_one() -> None:
    topics = {
        "m-seen_devices-p6-changelog",
        "m-seen_devices-p4-changelog",
        "m-seen_devices-changelog",  # earlier versions
        "m2-seen_devices-p4-changelog",  # another app
        "m-seen_devices-p4-changelog.bak",
        "logins.raw",
    }
    assert other_changelogs(topics, "m", "seen_devices", "m-seen_devices-p6-changelog") == [
        "m-seen_devices-changelog",
        "m-seen_devices-p4-changelog",
    ]


def test_kafka_starting_or_down_is_waited_for_and_a_refusal_is_not() -> None:
    for waited in (NodeNotReadyError(), KafkaConnectionError(), TimeoutError(), OSError()):
        assert kafka_unavailable(waited), waited
    for refused in (TopicAuthorizationFailedError(), InvalidPartitionsError(), ValueError()):
        assert not kafka_unavailable(refused), refused


def test_co_partitioned_only_with_equal_known_counts() -> None:
    assert co_partitioned(6, 6)
    assert not co_partitioned(6, 4)
    assert not co_partitioned(None, None)
    assert not co_partitioned(4, None)


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


def leave_changelogs(pipeline: IsolatedPipeline, specs: list[TopicSpec]) -> None:
    """Changelogs as earlier workers (of another count, or an earlier version) left them."""

    async def create() -> None:
        async with pipeline.kafka.admin_session() as admin:
            await ensure_topics(admin, specs, 1)

    asyncio.run(create())


def start_together(pipeline: IsolatedPipeline, workers: int, messages: list) -> None:
    """Start *workers* workers at once, then feed them *messages* and wait for them."""
    for n in range(2, workers + 1):
        pipeline.launcher.start_worker(f"worker-{n}")
    run(pipeline, messages)


def assert_exact_on_a_changelog_of(pipeline: IsolatedPipeline, partitions: int) -> None:
    assert partition_count(pipeline, pipeline.changelog_topic(partitions)) == partitions
    assert set(rows_per_device(pipeline).values()) == {3}
    assert len(rows_per_device(pipeline)) == 40
    assert pipeline.device_mismatches() == {}
    assert pipeline.changelog_mismatches() == {}


@pytest.mark.services
def test_a_raw_topic_made_with_another_count_gets_a_changelog_of_its_count(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """The raw topic made elsewhere with 6 partitions, MASKSTREAM_PARTITIONS=4,
    and changelogs of 4 and of an earlier version left behind: two workers
    starting together use the changelog of 6, leave the others as they were
    (naming them in the log), every partition is processed, the table is
    exact, and both answer lookups from their tables."""
    with IsolatedPipeline(stack_env, tmp_path, partitions=6) as pipeline:
        pipeline.env["MASKSTREAM_PARTITIONS"] = "4"
        unnumbered = f"{pipeline.name}-seen_devices-changelog"
        leave_changelogs(
            pipeline,
            [
                TopicSpec(pipeline.changelog_topic(4), 4, CHANGELOG_CONFIGS),
                TopicSpec(unnumbered, 4, CHANGELOG_CONFIGS),
            ],
        )
        start_together(pipeline, 2, logins(range(40), 3))

        assert_exact_on_a_changelog_of(pipeline, 6)
        assert partition_count(pipeline, pipeline.changelog_topic(4)) == 4  # never deleted
        assert partition_count(pipeline, unnumbered) == 4
        left = worker_log_lines(pipeline, LEFT_BEHIND) + worker_log_lines(
            pipeline, LEFT_BEHIND, "worker-2"
        )
        assert left and all(pipeline.changelog_topic(4) in line for line in left)
        for worker in ("worker", "worker-2"):
            # Each answers its own partitions' devices from its table (the
            # group's leader and the other alike), the rest from PostgreSQL.
            assert answers_from_both(pipeline, worker), worker
        assert pipeline.launcher.children["worker"].poll() is None
        assert pipeline.launcher.children["worker-2"].poll() is None


@pytest.mark.services
@pytest.mark.parametrize("topics_up_front", [True, False], ids=["raw-made-elsewhere", "no-topics"])
def test_three_workers_starting_together_agree_on_the_changelog(
    stack_env: dict[str, str], tmp_path: Path, topics_up_front: bool
) -> None:
    """Three workers starting at once, on a broker that auto-creates topics
    with its own default count, a changelog of 4 left behind: with the raw
    topic made elsewhere with 6 (MASKSTREAM_PARTITIONS=4), or no topic at all
    (MASKSTREAM_PARTITIONS=6, the workers race to create it), all three end on
    the changelog of the raw topic's count, and the table is exact."""
    with IsolatedPipeline(
        stack_env, tmp_path, partitions=6, topics_up_front=topics_up_front
    ) as pipeline:
        if topics_up_front:
            pipeline.env["MASKSTREAM_PARTITIONS"] = "4"
        leave_changelogs(pipeline, [TopicSpec(pipeline.changelog_topic(4), 4, CHANGELOG_CONFIGS)])
        start_together(pipeline, 3, logins(range(40), 3))

        raw = partition_count(pipeline, pipeline.raw_topic)
        # No topic: the workers create it with 6, unless the test's producer,
        # racing them, has the broker auto-create it with its default.
        assert raw == 6 if topics_up_front else raw in (6, 8)
        assert_exact_on_a_changelog_of(pipeline, raw)
        for worker in ("worker", "worker-2", "worker-3"):
            assert pipeline.launcher.children[worker].poll() is None, worker
            assert not worker_log_lines(pipeline, "lookups read PostgreSQL", worker), worker


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
    assert partition_count(pipeline, pipeline.changelog_topic(6)) == 6
    left = worker_log_lines(pipeline, LEFT_BEHIND)
    assert any(pipeline.changelog_topic(4) in line for line in left)
    # Its databases were built from the changelog of 4: set aside, not reused.
    assert worker_log_lines(pipeline, "changelog of 4 partitions, this one has 6")
    assert set(rows_per_device(pipeline).values()) == {3}
    assert pipeline.device_mismatches() == {}
    assert pipeline.changelog_mismatches() == {}
    entry = table_entry(pipeline, device)
    assert entry is not None and (entry["login_count"], entry["source"]) == (3, "table")
