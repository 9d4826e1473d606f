"""``maskstream status``: formatting without servers, figures against the real stack.

The pure tests build snapshots by hand and check the screen an operator reads.
The ``services`` tests give the status its own queue (with a dead-letter
queue), topics, consumer group and database, put known quantities in each,
and check that the status reports exactly those; one more points Kafka and
PostgreSQL at closed ports and checks that each gets its own line while SQS
is still shown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import boto3
import psycopg
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from psycopg import sql

from stream.cli import main
from stream.common import settings as settings_module
from stream.common.redrive import parse_redrive_policy
from stream.common.settings import Settings, Topics
from stream.ops.status import (
    collect,
    figures,
    kafka_lag,
    postgres_counts,
    render,
    watch,
)
from stream.ops.status.figures import (
    ConsumerLag,
    DatabaseCounts,
    DeadLetters,
    PartitionLag,
    PartitionSummary,
    Problem,
    QueueDepth,
    Rate,
    Snapshot,
    TopicLag,
)
from stream.ops.status.reasons import describe_error
from stream.postgres.partitions import Interval
from stream.postgres.schema import Tables, ensure_schema
from tests.support.sandbox import IsolatedPipeline

REPO_ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def snapshot(
    sqs: QueueDepth | Problem | None = None,
    kafka: ConsumerLag | Problem | None = None,
    postgres: DatabaseCounts | Problem | None = None,
    monotonic: float = 100.0,
) -> Snapshot:
    return Snapshot(
        taken_at=T0,
        monotonic=monotonic,
        sqs=(sqs or QueueDepth("http://sqs/000000000000/q", 1234, 10, 0, None),),
        kafka=kafka or ConsumerLag("k:9092", "maskstream", ()),
        postgres=postgres or DatabaseCounts("db:5432/postgres", 100, 7, 30, 4, ()),
    )


# --------------------------------------------------------------------------- rendering


def test_render_shows_each_queue_of_a_bridge_that_reads_several() -> None:
    eu = QueueDepth("http://sqs/000000000000/logins-eu", 5, 0, 0, None)
    us = Problem("connection refused", "http://sqs/000000000000/logins-us", "unreachable")
    snap = replace(snapshot(), sqs=(eu, us))
    text = render.render(snap, None)
    assert "sqs: http://sqs/000000000000/logins-eu" in text
    assert "http://sqs/000000000000/logins-us" in text and "connection refused" in text
    assert snap.problems == ["sqs"]


def test_render_shows_queue_depth_with_dead_letters_and_their_redrive_limit() -> None:
    dlq = DeadLetters("login-queue-dlq", max_receive_count=5, depth=3)
    text = render.render(
        snapshot(sqs=QueueDepth("http://sqs:4566/000000000000/login-queue", 1234, 10, 2, dlq)),
        None,
    )
    lines = text.splitlines()
    assert lines[0] == "maskstream status at 2026-01-02 03:04:05 UTC"
    assert "sqs: http://sqs:4566/000000000000/login-queue" in lines
    assert "  messages: 1,234 visible, 10 in flight, 2 delayed" in lines
    assert "  dead letters (login-queue-dlq, after 5 receives): 3" in lines


def test_render_says_when_a_queue_has_no_dead_letter_queue_or_it_is_unreadable() -> None:
    without = render.render_sqs(QueueDepth("u", 0, 0, 0, None))
    assert "  dead letters: no redrive policy on this queue" in without
    broken = render.render_sqs(
        QueueDepth("u", 0, 0, 0, DeadLetters("dlq", None, problem="QueueDoesNotExist: gone"))
    )
    assert "  dead letters (dlq): unreadable (QueueDoesNotExist: gone)" in broken


def test_render_shows_lag_per_partition_marks_uncommitted_and_missing_topics() -> None:
    raw = TopicLag(
        "logins.raw",
        (PartitionLag(0, 10, 15, 5), PartitionLag(1, None, 1200, 1200)),
    )
    lag = ConsumerLag("127.0.0.1:9092", "maskstream", (raw, TopicLag("logins.masked", None)))
    lines = render.render_kafka(lag)
    assert lines[0] == "kafka: 127.0.0.1:9092, consumer group maskstream"
    assert lines[1] == "  logins.raw     lag     1,205   p0 5  p1 1,200*"
    assert lines[2] == "  logins.masked  no such topic yet"
    assert lines[3].startswith("  * nothing committed by the group yet")


def test_render_wraps_many_partitions_under_the_topic() -> None:
    parts = tuple(PartitionLag(p, 0, 1, 1) for p in range(render.PARTITIONS_PER_LINE + 2))
    lines = render.render_kafka(ConsumerLag("k", "g", (TopicLag("t", parts),)))
    assert lines[1].endswith(f"p{render.PARTITIONS_PER_LINE - 1} 1")
    assert lines[2].split() == [
        f"p{render.PARTITIONS_PER_LINE}",
        "1",
        f"p{render.PARTITIONS_PER_LINE + 1}",
        "1",
    ]
    assert lines[2].index("p") == lines[1].index("p0")


def test_render_shows_rows_devices_rate_and_top_rejection_reasons_in_order() -> None:
    counts = DatabaseCounts(
        "127.0.0.1:5432/postgres",
        rows=12345,
        devices=9876,
        rows_in_window=600,
        rejections=67,
        top_reasons=(("not JSON", 40), ("empty body", 7)),
    )
    lines = render.render_postgres(counts, Rate(10.0, "over the last 60 s"))
    assert lines == [
        "postgres: 127.0.0.1:5432/postgres",
        "  user_logins: 12,345 rows, 9,876 seen devices",
        "  rate: 10.0 msgs/s (over the last 60 s)",
        "  rejected_logins: 67 rows",
        "  top 2 rejection reasons:",
        "    40  not JSON",
        "     7  empty body",
    ]


def test_render_shows_the_partitions_of_partitioned_tables_only() -> None:
    counts = DatabaseCounts(
        "db",
        rows=10,
        devices=2,
        rows_in_window=0,
        rejections=1,
        partitions=(
            ("user_logins", PartitionSummary(3, date(2024, 1, 1), date(2024, 1, 3), 3 * 1024**2)),
        ),
    )
    lines = render.render_postgres(counts, None)
    assert lines[1:3] == [
        "  user_logins: 10 rows, 2 seen devices",
        "    partitions: 3, 2024-01-01 (oldest kept) to 2024-01-03, 3.0 MiB",
    ]
    assert [line for line in lines if "partitions" in line] == [lines[2]]  # rejections: plain


def test_render_explains_tables_a_worker_has_not_created_yet() -> None:
    lines = render.render_postgres(DatabaseCounts("db", None, None, None, None), None)
    assert "  user_logins: not created yet (a worker creates it on start)" in lines
    assert "  rejected_logins: not created yet" in lines


def test_each_problem_is_one_line_naming_the_service_target_and_reason() -> None:
    text = render.render(
        snapshot(
            sqs=Problem("not configured (set SQS_QUEUE_URL)"),
            kafka=Problem("connection refused", "127.0.0.1:9092"),
            postgres=Problem('database "x" does not exist', "db:5432/x", "error"),
        ),
        None,
    )
    lines = text.splitlines()
    assert "sqs: not configured (set SQS_QUEUE_URL)" in lines
    assert "kafka: unreachable at 127.0.0.1:9092 (connection refused)" in lines
    assert 'postgres: error at db:5432/x (database "x" does not exist)' in lines


def test_snapshot_problems_name_the_services_that_failed() -> None:
    assert snapshot().problems == []
    failed = snapshot(kafka=Problem("x", "k"), postgres=Problem("y", "p"))
    assert failed.problems == ["kafka", "postgres"]


# --------------------------------------------------------------------------- rate


def test_one_shot_rate_is_rows_ingested_in_the_window_per_second() -> None:
    rate = figures.current_rate(snapshot())  # 30 rows in the last 60 s
    assert rate == Rate(0.5, "over the last 60 s")


def test_watch_rate_is_the_row_delta_between_refreshes() -> None:
    before = snapshot(postgres=DatabaseCounts("db", 100, 1, 0, 0), monotonic=10.0)
    after = snapshot(postgres=DatabaseCounts("db", 150, 1, 0, 0), monotonic=12.0)
    assert figures.current_rate(after, before) == Rate(25.0, "over the last 2.0 s")


def test_rate_is_unknown_without_postgres_or_ingested_at() -> None:
    assert figures.current_rate(snapshot(postgres=Problem("down", "db"))) is None
    no_column = snapshot(postgres=DatabaseCounts("db", 5, 1, None, 0))
    assert figures.current_rate(no_column) is None
    assert "unknown" in render.render_postgres(no_column.postgres, None)[2]


# --------------------------------------------------------------------------- pure helpers


def test_partition_lag_counts_from_the_commit_or_from_the_log_start() -> None:
    lags = kafka_lag.partition_lags(
        [2, 0, 1], committed={0: 7, 2: -1}, beginning={0: 0, 1: 4, 2: 3}, end={0: 10, 1: 9, 2: 3}
    )
    assert lags == (
        PartitionLag(0, 7, 10, 3),
        PartitionLag(1, None, 9, 5),  # nothing committed: all retained records
        PartitionLag(2, None, 3, 0),  # -1 means no offset
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            '{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123:dlq","maxReceiveCount":"5"}',
            ("dlq", "123", 5),
        ),
        (
            '{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:d","maxReceiveCount":3}',
            ("d", "000000000000", 3),
        ),
        (None, None),
        ("", None),
        ("not json", None),
        ('{"maxReceiveCount": 5}', None),
    ],
)
def test_parse_redrive_policy(policy: str | None, expected: tuple | None) -> None:
    assert parse_redrive_policy(policy) == expected


def test_parse_servers_defaults_the_port() -> None:
    assert kafka_lag.parse_servers("a:1, b ,[::1]:9093") == [("a", 1), ("b", 9092), ("::1", 9093)]


def test_database_target_never_shows_credentials() -> None:
    target = postgres_counts.database_target("postgresql://user:s3cret@db.example:6543/logins")
    assert target == "db.example:6543/logins"
    assert "s3cret" not in target


def _raised_from(outer: Exception, inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except Exception as exc:
        return exc


def test_describe_error_finds_the_socket_reason_inside_wrappers() -> None:
    wrapped = _raised_from(
        EndpointConnectionError(endpoint_url="http://x"), ConnectionRefusedError(111, "refused")
    )
    assert describe_error(wrapped) == "connection refused"
    assert describe_error(socket.gaierror(-2, "Name or service not known")) == "unknown host"
    assert describe_error(TimeoutError()) == "timed out"


def test_describe_error_keeps_the_reason_of_service_and_libpq_errors() -> None:
    error = ClientError(
        {"Error": {"Code": "QueueDoesNotExist", "Message": "The queue does not exist."}},
        "GetQueueAttributes",
    )
    assert describe_error(error) == "QueueDoesNotExist: The queue does not exist."
    refused = psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 1 failed: '
        "Connection refused\n\tIs the server running on that host?"
    )
    assert describe_error(refused) == "connection refused"
    missing = psycopg.OperationalError(
        'connection failed: connection to server at "h", port 5432 failed: '
        'FATAL:  database "nosuch" does not exist'
    )
    assert describe_error(missing) == 'database "nosuch" does not exist'


# --------------------------------------------------------------------------- watch


def test_frame_redraws_in_place_and_clears_leftovers() -> None:
    first = render.frame("a\nb", first=True)
    assert first.startswith(render.CLEAR_SCREEN + render.HOME)
    later = render.frame("a\nb", first=False)
    assert later == f"{render.HOME}a{render.CLEAR_LINE}\nb{render.CLEAR_LINE}\n{render.CLEAR_BELOW}"


def test_watch_refreshes_every_interval_with_the_delta_rate_and_stops_on_ctrl_c() -> None:
    snaps = iter(
        [
            snapshot(postgres=DatabaseCounts("db", 100, 1, 0, 0), monotonic=0.0),
            snapshot(postgres=DatabaseCounts("db", 130, 1, 0, 0), monotonic=3.0),
        ]
    )
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    out = io.StringIO()
    assert watch.watch(lambda: next(snaps), out, 3.0, sleep=sleep) == 0
    frames = out.getvalue().split(render.HOME)[1:]
    assert len(frames) == 2
    assert "rate: 0.0 msgs/s (over the last 60 s)" in frames[0]
    assert "rate: 10.0 msgs/s (over the last 3.0 s)" in frames[1]
    assert sleeps == [3.0, 3.0]


def test_status_rejects_a_non_positive_interval(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--watch", "--interval", "0"]) == 2
    assert "--interval must be positive" in capsys.readouterr().err


# --------------------------------------------------------------------------- real services


@dataclasses.dataclass
class StatusLane:
    """A queue with its dead-letter queue, topics, a group and a database of one test's own."""

    pipeline: IsolatedPipeline
    queue_url: str
    dead_letter_url: str

    def settings(self) -> Settings:
        pipe = self.pipeline
        return dataclasses.replace(
            settings_module.load(),
            sqs_queue_url=self.queue_url,
            database_url=pipe.database_url,
            app_id=pipe.name,
            topics=Topics(
                raw=pipe.raw_topic,
                masked=pipe.masked_topic,
                rejected=pipe.rejected_topic,
                partitions=pipe.partitions,
            ),
        )

    def environment(self) -> dict[str, str]:
        return {**self.pipeline.env, "SQS_QUEUE_URL": self.queue_url}


@pytest.fixture
def lane(stack_env: dict[str, str], tmp_path: Path) -> Iterator[StatusLane]:
    pipe = IsolatedPipeline(stack_env, tmp_path, partitions=2)
    client = boto3.client("sqs")
    dlq_url = client.create_queue(QueueName=f"{pipe.name}-dlq")["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})
    queue_url = client.create_queue(
        QueueName=f"{pipe.name}-q", Attributes={"RedrivePolicy": policy}
    )["QueueUrl"]
    pipe.create_database()
    try:
        yield StatusLane(pipe, queue_url, dlq_url)
    finally:
        pipe.drop_database()
        client.delete_queue(QueueUrl=queue_url)
        client.delete_queue(QueueUrl=dlq_url)


def fill_queues(lane: StatusLane) -> None:
    """5 visible, 2 in flight in the queue; 1 message in the dead-letter queue."""
    client = boto3.client("sqs")
    client.send_message_batch(
        QueueUrl=lane.queue_url,
        Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(7)],
    )
    received = client.receive_message(
        QueueUrl=lane.queue_url, MaxNumberOfMessages=2, VisibilityTimeout=300
    )
    assert len(received.get("Messages", [])) == 2
    client.send_message(QueueUrl=lane.dead_letter_url, MessageBody="dead")


async def _fill_topics(bootstrap: str, pipe: IsolatedPipeline) -> None:
    """raw: p0 holds 5 records with offset 2 committed, p1 3 records and no commit.
    masked: p0 4 records, committed to its end."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic, partition, count in (
            (pipe.raw_topic, 0, 5),
            (pipe.raw_topic, 1, 3),
            (pipe.masked_topic, 0, 4),
        ):
            for i in range(count):
                await producer.send_and_wait(topic, f"r{i}".encode(), partition=partition)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=pipe.name, enable_auto_commit=False
    )
    await consumer.start()
    try:
        raw0, masked0 = TopicPartition(pipe.raw_topic, 0), TopicPartition(pipe.masked_topic, 0)
        consumer.assign([raw0, masked0])
        await consumer.commit({raw0: 2, masked0: 4})
    finally:
        await consumer.stop()


def fill_database(
    pipe: IsolatedPipeline, logins: str = "user_logins", rejections: str = "rejected_logins"
) -> None:
    """4 rows of 3 devices, 2 of them ingested just now; 4 rejections of 2 reasons
    (plain tables: the rows have no time to be partitioned by)."""
    with psycopg.connect(pipe.database_url) as conn:
        ensure_schema(conn, Tables(logins, rejections, f"{logins}_devices", Interval.NONE))
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (message_id, masked_device_id, ingested_at) VALUES "
                "('a', 'd1', now()), ('b', 'd1', now()), "
                "('c', 'd2', now() - interval '10 minutes'), "
                "('d', 'd3', now() - interval '10 minutes')"
            ).format(sql.Identifier(logins))
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (message_id, reason) VALUES "
                "('r1', 'not JSON'), ('r2', 'not JSON'), ('r3', 'not JSON'), ('r4', 'empty body')"
            ).format(sql.Identifier(rejections))
        )


@pytest.mark.services
def test_status_reports_exactly_what_each_service_holds(
    lane: StatusLane, kafka_bootstrap: str
) -> None:
    pipe = lane.pipeline
    pipe.create_topics()
    fill_queues(lane)
    asyncio.run(_fill_topics(kafka_bootstrap, pipe))
    fill_database(pipe)

    snap = collect.collect(lane.settings(), timeout=5)

    assert snap.problems == []
    assert snap.sqs == (
        QueueDepth(lane.queue_url, 5, 2, 0, DeadLetters(f"{pipe.name}-dlq", 3, depth=1)),
    )
    assert isinstance(snap.kafka, ConsumerLag)
    assert snap.kafka.group == pipe.name
    by_topic = {t.topic: t for t in snap.kafka.topics}
    assert by_topic[pipe.raw_topic].partitions == (
        PartitionLag(0, 2, 5, 3),
        PartitionLag(1, None, 3, 3),
    )
    assert by_topic[pipe.masked_topic].partitions == (
        PartitionLag(0, 4, 4, 0),
        PartitionLag(1, None, 0, 0),
    )
    assert by_topic[pipe.rejected_topic].total == 0
    assert snap.postgres == DatabaseCounts(
        postgres_counts.database_target(pipe.database_url),
        rows=4,
        devices=3,
        rows_in_window=2,
        rejections=4,
        top_reasons=(("not JSON", 3), ("empty body", 1)),
    )
    assert figures.current_rate(snap) == Rate(2 / 60, "over the last 60 s")


@pytest.mark.services
def test_status_counts_the_tables_the_workers_are_configured_to_write(lane: StatusLane) -> None:
    fill_database(lane.pipeline, "Replay_Logins", "replay_rejections")
    settings = dataclasses.replace(
        lane.settings(), logins_table="Replay_Logins", rejections_table="replay_rejections"
    )
    counts = collect.collect(settings, timeout=5).postgres
    assert isinstance(counts, DatabaseCounts)
    assert (counts.rows, counts.devices, counts.rejections) == (4, 3, 4)
    assert counts.tables == ("Replay_Logins", "replay_rejections")
    text = render.render_postgres(counts, None)
    assert "  Replay_Logins: 4 rows, 3 seen devices" in text
    assert "  replay_rejections: 4 rows" in text


@pytest.mark.services
def test_status_reports_topics_and_tables_that_do_not_exist_yet(lane: StatusLane) -> None:
    snap = collect.collect(lane.settings(), timeout=5)
    assert snap.problems == []
    assert isinstance(snap.kafka, ConsumerLag)
    assert all(t.partitions is None for t in snap.kafka.topics)
    assert snap.postgres == DatabaseCounts(
        postgres_counts.database_target(lane.pipeline.database_url), None, None, None, None
    )


@pytest.mark.services
def test_a_count_slower_than_the_timeout_is_reported_as_such(lane: StatusLane) -> None:
    with psycopg.connect(lane.pipeline.database_url) as conn:
        conn.execute(
            "CREATE TABLE user_logins AS "
            "SELECT g::text AS masked_device_id FROM generate_series(1, 1000000) AS g"
        )
    counts = postgres_counts.database_counts(lane.settings(), timeout=0.05)
    assert counts == Problem(
        "counting took longer than 0.05 s; raise --timeout",
        postgres_counts.database_target(lane.pipeline.database_url),
        "error",
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_status(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "status", *args],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.services
def test_status_command_prints_the_screen_and_exits_0(lane: StatusLane) -> None:
    lane.pipeline.create_topics()
    fill_queues(lane)
    fill_database(lane.pipeline)
    result = run_status(lane.environment())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  messages: 5 visible, 2 in flight, 0 delayed" in lines
    assert f"  dead letters ({lane.pipeline.name}-dlq, after 3 receives): 1" in lines
    assert "  user_logins: 4 rows, 3 seen devices" in lines
    assert "    3  not JSON" in lines
    assert result.stderr == ""


@pytest.mark.services
def test_unreachable_kafka_and_postgres_get_their_own_lines_and_exit_1(
    lane: StatusLane,
) -> None:
    fill_queues(lane)
    kafka_port, pg_port = closed_port(), closed_port()
    env = {
        **lane.environment(),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_port}/postgres",
    }
    started = time.monotonic()
    result = run_status(env, "--timeout", "2")
    elapsed = time.monotonic() - started

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"kafka: unreachable at 127.0.0.1:{kafka_port} (connection refused)" in lines
    assert f"postgres: unreachable at 127.0.0.1:{pg_port}/postgres (connection refused)" in lines
    assert "  messages: 5 visible, 2 in flight, 0 delayed" in lines  # SQS still shown
    assert "Traceback" not in result.stdout + result.stderr
    assert elapsed < 15, f"status took {elapsed:.1f} s with two services down"


@pytest.mark.services
def test_watch_redraws_until_interrupted(lane: StatusLane) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "status", "--watch", "--interval", "0.5"],
        env={**os.environ, **lane.environment()},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()  # the first frame has begun
        time.sleep(2)  # a few more refreshes, every 0.5 s
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=30)
        seen = first_line + rest
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, errors
    assert seen.count(render.HOME) >= 2
    assert seen.count("maskstream status at") == seen.count(render.HOME)
    assert "Traceback" not in errors
