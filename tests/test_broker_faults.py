"""Leader failover on a three-node Kafka cluster: nothing lost, nothing twice.

Each case streams 20,000 SQS messages through the bridge and two Faust
workers into a pipeline whose topics are replicated three ways
(``min.insync.replicas`` 2) on a three-node KRaft cluster, breaks a broker
mid-stream, and checks what ``tests/test_faults.py`` checks: rows = valid
messages, none twice, rejections = invalid ones, ``seen_devices`` in
PostgreSQL and in the Faust table's changelog equal to the rows per device,
and no pipeline process restarted by hand.

The cluster is a session fixture: ``maskstream stack up --brokers 3`` in a
stack directory of its own (the test stack's with ``-brokers`` appended),
started once for the four cases, healed (every node up, every replica in
sync) after each, and stopped with ``maskstream stack down`` at the end.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream.common.kafka_security import KafkaClients
from stream.common.topic_admin import TopicSpec, ensure_topics
from stream.devstack.envfile import read_env_file
from stream.devstack.manager import Stack
from tests.support.brokers import BROKERS, Cluster
from tests.support.nemesis import FAULT_KINDS, Nemesis, run_schedule, schedule
from tests.support.sandbox import IsolatedPipeline
from tests.test_faults import FaultRun
from tests.test_stack import maskstream

pytestmark = [pytest.mark.services, pytest.mark.faults]

# Longer than the workers' group session (10 s in the sandbox) and the
# broker's own session with the controller (9 s by default).
PAUSE_SECONDS = 20
DOWN_SECONDS = 20


@pytest.fixture(scope="session")
def brokers_stack(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``stack up --brokers 3`` in its own directory; its ``env`` variables.
    ``stack down`` at the end must leave none of its processes running."""
    stack_dir = Path(stack_env["MASKSTREAM_STACK_DIR"] + "-brokers")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["MASKSTREAM_STACK_DIR"] = str(stack_dir)
    try:
        up = maskstream("stack", "up", "--brokers", str(BROKERS), env=env)
        assert up.returncode == 0, up.stderr
        yield read_env_file(stack_dir / "env")
    finally:
        down = maskstream("stack", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert not any(node.is_running() for node in Cluster(stack_dir).nodes)


@pytest.fixture(scope="session")
def cluster(brokers_stack: dict[str, str]) -> Cluster:
    return Cluster(Path(brokers_stack["MASKSTREAM_STACK_DIR"]))


@pytest.fixture
def run(brokers_stack: dict[str, str], cluster: Cluster, tmp_path: Path) -> Iterator[FaultRun]:
    with IsolatedPipeline(brokers_stack, tmp_path, partitions=8) as pipe:
        yield FaultRun(pipe)
        cluster.heal()  # before the pipeline's topics are deleted


def test_stack_up_with_three_brokers_lists_and_shows_each(
    brokers_stack: dict[str, str], cluster: Cluster
) -> None:
    servers = brokers_stack["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    assert servers == [node.bootstrap for node in cluster.nodes]
    env = {**os.environ, "MASKSTREAM_STACK_DIR": brokers_stack["MASKSTREAM_STACK_DIR"]}
    status = maskstream("stack", "status", env=env)
    assert status.returncode == 0, status.stderr
    for node, server in zip(cluster.nodes, servers, strict=True):
        assert f"{node.name:<10} running" in status.stdout
        assert f"{node.name:<10} {server} (node {node.node_id})" in status.stdout
    nodes = asyncio.run(cluster_brokers(brokers_stack["KAFKA_BOOTSTRAP_SERVERS"]))
    assert nodes == [1, 2, 3]


async def cluster_brokers(bootstrap: str) -> list[int]:
    async with KafkaClients(bootstrap).admin_session() as admin:
        return sorted(b["node_id"] for b in (await admin.describe_cluster())["brokers"])


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
        pipe.changelog_topic(),
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


# The short nemesis of `make test`; `make chaos` runs a long one (docs/fault-suite.md).
NEMESIS_SEED = int(os.environ.get("NEMESIS_SEED", "31"))
NEMESIS_FAULTS = int(os.environ.get("NEMESIS_FAULTS", "6"))
NEMESIS_SECONDS = float(os.environ.get("NEMESIS_SECONDS", "60"))
NEMESIS_MESSAGES = int(os.environ.get("NEMESIS_MESSAGES", "3000"))


def test_the_schedule_is_seeded_ordered_and_strikes_every_kind() -> None:
    strikes = schedule(7, 8, 100.0)
    assert strikes == schedule(7, 8, 100.0)
    assert strikes != schedule(8, 8, 100.0)
    assert [s.at for s in strikes] == sorted(s.at for s in strikes)
    assert all(0 <= s.at <= 100 for s in strikes)
    assert {s.kind for s in strikes} == set(FAULT_KINDS)


def test_nothing_lost_or_duplicated_under_a_random_fault_schedule(
    run: FaultRun, cluster: Cluster, brokers_stack: dict[str, str]
) -> None:
    """A seeded random schedule of kill -9 of workers, the bridge and a
    broker, SIGSTOP of a worker and an immediate PostgreSQL restart, struck
    while messages keep arriving on SQS: rows, rejections and seen_devices
    exact, the queue empty. NEMESIS_SEED replays a schedule."""
    strikes = schedule(NEMESIS_SEED, NEMESIS_FAULTS, NEMESIS_SECONDS)
    postgres = Stack(Path(brokers_stack["MASKSTREAM_STACK_DIR"])).service("postgres")
    nemesis = Nemesis(run, cluster, postgres, NEMESIS_SEED)
    chunk, pace = max(1, NEMESIS_MESSAGES // 20), NEMESIS_SECONDS / 20
    chunks = iter(range(20))
    next_chunk_at = time.monotonic()

    def send_a_chunk_when_due() -> None:
        """The stream keeps arriving while faults strike: a chunk each *pace* s."""
        nonlocal next_chunk_at
        if time.monotonic() >= next_chunk_at and (n := next(chunks, None)) is not None:
            run.send(chunk, seed=NEMESIS_SEED * 100 + n)
            next_chunk_at += pace

    send_a_chunk_when_due()
    run.start(workers=3)
    done = list(run_schedule(nemesis, strikes, send_a_chunk_when_due))
    for n in chunks:
        run.send(chunk, seed=NEMESIS_SEED * 100 + n)
    cluster.heal()
    run.finish_and_check(timeout=600)
    deadline = time.monotonic() + 60
    while run.pipe.queue_depth():
        assert time.monotonic() < deadline, "messages left in the queue"
        time.sleep(1)
    print(f"\nnemesis seed {NEMESIS_SEED}: {run.sent} sent\n" + "\n".join(done))
