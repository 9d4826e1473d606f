"""Leader failover on a three-node Kafka cluster: nothing lost, nothing twice.

Each case streams 20,000 SQS messages through the bridge and two Faust
workers into a pipeline whose topics are replicated three ways
(``min.insync.replicas`` 2) on a three-node KRaft cluster, breaks a broker
mid-stream, and checks what ``tests/test_faults.py`` checks: rows = valid
messages, none twice, rejections = invalid ones, ``seen_devices`` in
PostgreSQL and in the Faust table's changelog equal to the rows per device,
and no pipeline process restarted by hand.

The cluster is a session fixture in a stack directory of its own (the test
stack's directory with ``-brokers`` appended); it is started once for the
four cases, healed (every node up, every replica in sync) after each, and
stopped at the end. ElasticMQ and PostgreSQL are the test stack's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream.common.kafka_security import KafkaClients
from stream.common.topic_admin import TopicSpec, ensure_topics
from tests.support.brokers import BROKERS, Cluster
from tests.support.sandbox import IsolatedPipeline
from tests.test_faults import FaultRun

pytestmark = [pytest.mark.services, pytest.mark.faults]

# Longer than the workers' group session (10 s in the sandbox) and the
# broker's own session with the controller (9 s by default).
PAUSE_SECONDS = 20
DOWN_SECONDS = 20


@pytest.fixture(scope="session")
def cluster(stack_env: dict[str, str]) -> Iterator[Cluster]:
    cluster = Cluster(Path(stack_env["MASKSTREAM_STACK_DIR"] + "-brokers"))
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def run(stack_env: dict[str, str], cluster: Cluster, tmp_path: Path) -> Iterator[FaultRun]:
    env = {**stack_env, "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap}
    with IsolatedPipeline(env, tmp_path, partitions=8) as pipe:
        yield FaultRun(pipe)
        cluster.heal()  # before the pipeline's topics are deleted


def busiest_leader(run: FaultRun, cluster: Cluster) -> int:
    raw = run.pipe.raw_topic
    return cluster.leaders(raw)[cluster.busiest_partition(raw)]


def kill_the_busiest_raw_leader_then_restart_it(run: FaultRun, cluster: Cluster) -> str:
    node = break_then_mend(run, cluster, cluster.kill, cluster.start, DOWN_SECONDS)
    return f"killed node {node} (busiest raw partition's leader), restarted {DOWN_SECONDS} s later"


def rolling_restart_of_all_three(run: FaultRun, cluster: Cluster) -> str:
    for node in cluster.nodes:
        cluster.restart(node.node_id)
        cluster.wait_in_sync()
    return "restarted nodes 1, 2, 3 in turn, each after the last rejoined the ISR"


def one_broker_paused_past_the_session_timeout(run: FaultRun, cluster: Cluster) -> str:
    node = break_then_mend(run, cluster, cluster.pause, cluster.resume, PAUSE_SECONDS)
    return f"SIGSTOP node {node} (busiest raw partition's leader) for {PAUSE_SECONDS} s, SIGCONT"


def break_then_mend(
    run: FaultRun,
    cluster: Cluster,
    breaking: Callable[[int], None],
    mending: Callable[[int], None],
    seconds: float,
) -> int:
    """Break the leader of the busiest raw partition, mend it *seconds* later; its id."""
    raw = run.pipe.raw_topic
    node = cluster.leaders(raw)[cluster.busiest_partition(raw)]
    breaking(node)
    time.sleep(seconds)
    mending(node)
    return node


def kill_the_active_controller(run: FaultRun, cluster: Cluster) -> str:
    node = cluster.active_controller()
    cluster.kill(node)
    return f"killed node {node} (the active controller); left down until the check"


BROKER_FAULTS = [
    (kill_the_busiest_raw_leader_then_restart_it, 0.3, 201),
    (rolling_restart_of_all_three, 0.1, 202),
    (one_broker_paused_past_the_session_timeout, 0.3, 203),
    (kill_the_active_controller, 0.3, 204),
]


@pytest.mark.parametrize(
    ("fault", "progress", "seed"),
    [pytest.param(*case, id=case[0].__name__) for case in BROKER_FAULTS],
)
def test_nothing_lost_or_duplicated_on_three_brokers_when(
    fault: Callable[[FaultRun, Cluster], str],
    progress: float,
    seed: int,
    run: FaultRun,
    cluster: Cluster,
) -> None:
    started = time.monotonic()
    what = run.stream_through(lambda: fault(run, cluster), progress, seed)
    pipe = run.pipe
    topics = [
        pipe.raw_topic,
        pipe.masked_topic,
        pipe.rejected_topic,
        f"{pipe.name}-seen_devices-changelog",
        f"{pipe.name}-__assignor-__leader",
    ]
    # Every topic of the pipeline, Faust's own included, keeps three copies
    # and refuses a write that fewer than two acknowledge.
    assert cluster.replication(topics) == dict.fromkeys(topics, (BROKERS, "2"))
    rows = pipe.row_count()
    print(
        f"\n{fault.__name__}: {what}; {run.sent} sent, {rows} rows, "
        f"{run.sent - rows} rejections, {time.monotonic() - started:.0f} s"
    )


def test_an_existing_under_replicated_topic_is_used_as_is_with_a_warning(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    name = f"under-replicated-{os.getpid()}-{time.monotonic_ns()}"

    async def scenario() -> tuple[list[str], list[str]]:
        async with KafkaClients(cluster.bootstrap).admin_session() as admin:
            first = await ensure_topics(admin, [TopicSpec(name, 1)], setting=1)
            again = await ensure_topics(admin, [TopicSpec(name, 1)], setting=0)
            await admin.delete_topics([name])
        return first, again

    with caplog.at_level(logging.WARNING, logger="stream.common.topic_admin"):
        first, again = asyncio.run(scenario())
    assert (first, again) == ([name], [])
    assert f"topic {name!r} exists with replication factor 1, below the 3 wanted" in caplog.text
