"""The bridge as a real process against the local ElasticMQ and Kafka.

Each test makes its own queue and topic, so runs in parallel with other
people's tests do not see each other's messages. The Kafka outage test stops
the shared broker for a while: it runs last in this file and restarts Kafka
even when it fails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import ConsumerRecord, TopicPartition

from stream.common.canonical import raw_record_key

pytestmark = pytest.mark.services

REPO_ROOT = Path(__file__).resolve().parent.parent
SQS_LIMIT = 262_144


# -- helpers ----------------------------------------------------------------------------


@dataclass
class Lane:
    """One test's private queue and topic, plus clients to inspect them."""

    queue_url: str
    topic: str
    bootstrap: str
    sqs: Any

    def fill(self, bodies: Sequence[str]) -> dict[str, str]:
        """Send *bodies* (up to ten per call, one per call if large); return id -> body."""
        groups: list[list[str]] = []
        for body in bodies:
            size = len(body.encode())
            if (
                groups
                and len(groups[-1]) < 10
                and size < 20_000
                and sum(len(b.encode()) for b in groups[-1]) + size < SQS_LIMIT
            ):
                groups[-1].append(body)
            else:
                groups.append([body])

        def send(group: list[str]) -> dict[str, str]:
            entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(group)]
            response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            assert not response.get("Failed"), response.get("Failed")
            return {ok["MessageId"]: group[int(ok["Id"])] for ok in response["Successful"]}

        sent: dict[str, str] = {}
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for part in pool.map(send, groups):
                sent.update(part)
        assert len(sent) == len(bodies)
        return sent

    def counts(self) -> tuple[int, int]:
        """Messages in the queue: (visible, in flight, i.e. received and not deleted)."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    def depth(self) -> int:
        """Messages still in the queue, visible or held by a consumer."""
        return sum(self.counts())

    def records(self) -> list[ConsumerRecord]:
        return asyncio.run(read_topic(self.bootstrap, self.topic))

    def bridge(
        self, log_file: Path, *args: str, entry: Sequence[str] = ("-m", "bridge")
    ) -> subprocess.Popen[bytes]:
        """Start ``python -m bridge`` (or *entry*) on this lane; its log goes to *log_file*."""
        command = [
            sys.executable,
            *entry,
            "--queue-url",
            self.queue_url,
            "--topic",
            self.topic,
            "--stats-interval",
            "5",
            *args,
        ]
        with log_file.open("ab") as log:
            return subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
            )


def probe(port: int, page: str) -> tuple[int, Any]:
    """A bridge's ``/health`` or ``/ready``: status and JSON body, 503 included."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{page}", timeout=5) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord]:
    """Every record now in *topic*, read from the beginning to the end offsets."""
    count, _ = await topic_details(bootstrap, topic)
    partitions = [TopicPartition(topic, p) for p in range(count)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        while any([await consumer.position(tp) < end[tp] for tp in partitions]):
            for batch in (await consumer.getmany(*partitions, timeout_ms=1000)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def topic_details(bootstrap: str, topic: str) -> tuple[int, dict[str, str]]:
    """The partition count and the explicitly set configuration of *topic*."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [description] = await admin.describe_topics([topic])
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, None)]
        )
        configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
        return len(description["partitions"]), configs
    finally:
        await admin.close()


async def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


def header(record: ConsumerRecord, name: str) -> bytes:
    return dict(record.headers)[name]


def message_id(record: ConsumerRecord) -> str:
    """The SQS message id a raw record carries (its key is the device's hash)."""
    return header(record, "sqs_message_id").decode()


def login_bodies(count: int, tag: str) -> list[str]:
    """Distinct login-like bodies; the tag lets a test look for bodies in logs."""
    return [
        json.dumps(
            {
                "user_id": str(uuid.uuid4()),
                "app_version": "2.3.0",
                "device_type": "android",
                "ip": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                "locale": None if i % 3 else "RU",
                "device_id": f"{tag}-{i:06d}",
            }
        )
        for i in range(count)
    ]


@pytest.fixture
def new_lane(stack_env: dict[str, str]) -> Iterator[Callable[[], Lane]]:
    """A factory of private queue+topic pairs, all removed after the test."""
    sqs = boto3.client("sqs")
    bootstrap = stack_env["KAFKA_BOOTSTRAP_SERVERS"]
    made: list[Lane] = []

    def make() -> Lane:
        name = f"bridge-test-{uuid.uuid4().hex[:10]}"
        queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
        made.append(Lane(queue_url=queue_url, topic=name, bootstrap=bootstrap, sqs=sqs))
        return made[-1]

    yield make
    for lane in made:
        sqs.delete_queue(QueueUrl=lane.queue_url)
        # Kafka may be down after a failed fault test; a leftover topic is harmless.
        with contextlib.suppress(Exception):
            asyncio.run(_delete_topic(bootstrap, lane.topic))


@pytest.fixture
def lane(new_lane: Callable[[], Lane]) -> Lane:
    return new_lane()


@pytest.fixture(autouse=True)
def _quiet_kafka_client_logs() -> Iterator[None]:
    """This test process's own consumers retry loudly while Kafka is down; keep failures legible."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def restart_kafka(stack: Any) -> None:
    """Start Kafka again, tolerating a concurrent start by another test run on this stack."""
    for attempt in range(3):
        try:
            stack.start_service("kafka")
            return
        except (RuntimeError, TimeoutError):
            if attempt == 2:
                raise
            time.sleep(5)


def finish(process: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


# -- tests --------------------------------------------------------------------------------


def test_5000_messages_arrive_once_each_unchanged_with_headers_and_times(
    lane: Lane, tmp_path: Path
) -> None:
    bodies = login_bodies(5000, tag="PIIMARK")
    before_ms = int(time.time() * 1000)
    sent = lane.fill(bodies)
    after_ms = int(time.time() * 1000)
    log = tmp_path / "bridge.log"

    bridge = lane.bridge(
        log, "--exit-when-idle", "3", "--partitions", "4", "--retention-hours", "2"
    )
    assert finish(bridge, timeout=120) == 0, log.read_text()

    records = lane.records()
    assert len(records) == 5000
    assert {message_id(r) for r in records} == set(sent)
    for record in records:
        body = sent[message_id(record)]
        assert record.value == body.encode()
        assert record.key == raw_record_key(record.value, "device_id")
        assert header(record, "sqs_sent_timestamp") == str(record.timestamp).encode()
        assert header(record, "sqs_receive_count") == b"1"
        assert record.timestamp_type == 0  # CreateTime: the SQS SentTimestamp we set
        assert before_ms - 1000 <= record.timestamp <= after_ms + 1000
    assert lane.depth() == 0
    partitions, configs = asyncio.run(topic_details(lane.bootstrap, lane.topic))
    assert partitions == 4
    assert configs["retention.ms"] == str(2 * 3_600_000)
    text = log.read_text()
    assert "received=5000 forwarded=5000 deleted=5000" in text
    assert "PIIMARK" not in text and '"ip"' not in text


def test_odd_bodies_are_forwarded_byte_for_byte(lane: Lane, tmp_path: Path) -> None:
    bodies = [
        "not json at all",
        " ",
        "{}",
        "null",
        '{"foo": "...", "bar": "123"}',
        "José Ünïcødé 🚀 中文 ¿",
        "tab\tcarriage\r\nnewline",
        '{"pad": "' + "a" * (SQS_LIMIT - 11) + '"}',  # exactly the 256 KiB limit
        "é" * (SQS_LIMIT // 2),  # limit reached with two-byte characters
    ]
    assert len(bodies[7].encode()) == SQS_LIMIT
    assert len(bodies[8].encode()) == SQS_LIMIT
    sent = lane.fill(bodies)
    log = tmp_path / "bridge.log"

    bridge = lane.bridge(log, "--exit-when-idle", "2")
    assert finish(bridge, timeout=60) == 0, log.read_text()

    forwarded = {message_id(r): r.value for r in lane.records()}
    assert forwarded == {message_id: body.encode() for message_id, body in sent.items()}
    assert lane.depth() == 0


def test_exit_when_idle_waits_for_the_idle_time_and_leaves_the_queue_empty(
    lane: Lane, tmp_path: Path
) -> None:
    """Through ``maskstream bridge``; the other tests use ``python -m bridge``."""
    lane.fill(login_bodies(300, tag="idle"))
    log = tmp_path / "bridge.log"
    started = time.monotonic()
    bridge = lane.bridge(log, "--exit-when-idle", "3", entry=("-m", "stream.cli", "bridge"))
    assert finish(bridge, timeout=60) == 0, log.read_text()
    elapsed = time.monotonic() - started
    assert 3 <= elapsed < 30
    assert lane.depth() == 0
    assert len({message_id(r) for r in lane.records()}) == 300


def test_sigterm_mid_stream_then_restart_forwards_everything(lane: Lane, tmp_path: Path) -> None:
    total = 3000
    sent = lane.fill(login_bodies(total, tag="term"))
    log = tmp_path / "bridge.log"
    # Slow the first bridge down (few in flight, long linger) so SIGTERM lands mid-stream.
    slow = ("--max-in-flight", "40", "--linger-ms", "200", "--pollers", "2")
    first = lane.bridge(log, *slow, "--visibility-timeout", "5")
    wait_until(lambda: lane.depth() <= total - 300, timeout=60, what="the bridge to start")
    first.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert finish(first, timeout=40) == 0, log.read_text()
    assert time.monotonic() - stopped < 25

    on_topic = {message_id(r) for r in lane.records()}
    remaining = lane.depth()
    assert 0 < len(on_topic) < total, "SIGTERM should land mid-stream"
    # Deleted exactly what Kafka acknowledged: nothing unacknowledged is gone.
    assert remaining == total - len(on_topic)

    second = lane.bridge(log, "--exit-when-idle", "8")
    assert finish(second, timeout=120) == 0, log.read_text()
    assert {message_id(r) for r in lane.records()} == set(sent)
    assert lane.depth() == 0


def test_five_idle_exits_in_a_row_strand_nothing(lane: Lane, tmp_path: Path) -> None:
    """A long poll left open by an exiting bridge would take the next run's messages.

    Each run's messages arrive while the previous bridge's polls would still be
    waiting if it had abandoned them: those messages would stay in flight,
    unforwarded, for the visibility timeout.
    """
    log = tmp_path / "bridge.log"
    sent: dict[str, str] = {}
    for run in range(5):
        sent.update(lane.fill(login_bodies(100, tag=f"idle{run}")))
        bridge = lane.bridge(log, "--exit-when-idle", "5")
        assert finish(bridge, timeout=90) == 0, log.read_text()
        assert lane.counts() == (0, 0), f"run {run}: (visible, in flight) left in the queue"
    ids = [message_id(r) for r in lane.records()]
    assert len(ids) == 500 and set(ids) == set(sent)


def stream_into(
    lane: Lane, bodies: Sequence[str], pause: float
) -> tuple[threading.Thread, threading.Event]:
    """Send *bodies* ten at a time with *pause* between sends, in a thread.

    Returns the thread and an event set once half of the bodies are sent.
    """
    half = threading.Event()

    def send() -> None:
        for start in range(0, len(bodies), 10):
            lane.fill(bodies[start : start + 10])
            if start + 10 >= len(bodies) // 2:
                half.set()
            time.sleep(pause)

    thread = threading.Thread(target=send, name="stream", daemon=True)
    thread.start()
    return thread, half


def test_five_sigterms_mid_stream_strand_nothing(lane: Lane, tmp_path: Path) -> None:
    """SIGTERM while messages keep arriving: the polls open at the stop are awaited.

    What they return is forwarded and deleted, or released at once; after each
    stop nothing is in flight, and every message is either on the topic or
    visible for the next bridge.
    """
    log = tmp_path / "bridge.log"
    total = 0
    for run in range(5):
        bodies = login_bodies(100, tag=f"term{run}")
        bridge = lane.bridge(log, "--wait-seconds", "5")
        waiting = lane.depth() + 10
        lane.fill(bodies[:10])
        wait_until(
            functools.partial(lambda n: lane.depth() < n, waiting), 60, "the bridge to forward"
        )
        stream, half = stream_into(lane, bodies[10:], pause=0.05)
        half.wait(timeout=60)
        bridge.send_signal(signal.SIGTERM)
        stream.join(timeout=60)
        total += len(bodies)
        assert finish(bridge, timeout=60) == 0, log.read_text()
        on_topic = {message_id(r) for r in lane.records()}
        visible, in_flight = lane.counts()
        assert in_flight == 0, f"run {run}: {in_flight} messages stranded in flight"
        assert visible == total - len(on_topic), f"run {run}"
    drain = lane.bridge(log, "--exit-when-idle", "3")
    assert finish(drain, timeout=90) == 0, log.read_text()
    assert len({message_id(r) for r in lane.records()}) == total == 500
    assert lane.counts() == (0, 0)


@pytest.mark.faults
def test_kafka_outage_deletes_nothing_and_recovers(
    new_lane: Callable[[], Lane], tmp_path: Path
) -> None:
    """Runs last: it stops the shared Kafka broker for about half a minute.

    Lane A's bridge rides out the outage and forwards everything once Kafka is
    back. Lane B's bridge is stopped with SIGTERM during the outage: it must
    exit 0 within its shutdown timeout and delete nothing it holds.
    """
    from stream.common.ports import any_free_port
    from stream.devstack.manager import Stack

    stack = Stack.from_settings()
    lane_a, lane_b = new_lane(), new_lane()
    log_a, log_b = tmp_path / "bridge-a.log", tmp_path / "bridge-b.log"
    port_a = any_free_port()
    bridge_a = lane_a.bridge(log_a, "--visibility-timeout", "10", "--metrics-port", str(port_a))
    bridge_b = lane_b.bridge(log_b, "--visibility-timeout", "10", "--shutdown-timeout", "5")
    try:
        first = lane_a.fill(login_bodies(500, tag="before"))
        lane_b.fill(login_bodies(100, tag="b-before"))
        wait_until(lambda: lane_a.depth() == 0, timeout=60, what="lane A's first batch")
        wait_until(lambda: lane_b.depth() == 0, timeout=60, what="lane B's first batch")

        stack.stop_service("kafka")
        try:
            second = lane_a.fill(login_bodies(500, tag="during"))
            held_b = lane_b.fill(login_bodies(100, tag="b-during"))
            time.sleep(15)  # well past the visibility timeout: extensions must hold the messages
            assert bridge_a.poll() is None, log_a.read_text()
            assert lane_a.depth() == 500, "messages were deleted without an acknowledgement"
            # Alive, not ready, and saying why.
            assert probe(port_a, "health") == (200, {"status": "ok"})
            status, ready = probe(port_a, "ready")
            assert status == 503, ready
            assert any(p.startswith("Kafka unavailable") for p in ready["problems"]), ready

            bridge_b.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            assert finish(bridge_b, timeout=30) == 0, log_b.read_text()
            assert time.monotonic() - stopped < 5 + 5
            assert lane_b.depth() == 100, "SIGTERM deleted unacknowledged messages"
        finally:
            restart_kafka(stack)

        wait_until(lambda: lane_a.depth() == 0, timeout=120, what="lane A's backlog to drain")
        assert probe(port_a, "ready") == (200, {"ready": True, "problems": []})
        bridge_a.send_signal(signal.SIGTERM)
        assert finish(bridge_a, timeout=40) == 0, log_a.read_text()
        bridge_b = lane_b.bridge(log_b, "--exit-when-idle", "8")
        assert finish(bridge_b, timeout=120) == 0, log_b.read_text()
    finally:
        for bridge in (bridge_a, bridge_b):
            if bridge.poll() is None:
                bridge.kill()

    by_id = {message_id(r): r for r in lane_a.records()}
    assert set(by_id) == set(first) | set(second)
    for sent_id in second:
        assert by_id[sent_id].value == second[sent_id].encode()
        # Held through the outage, not redelivered: received exactly once.
        assert header(by_id[sent_id], "sqs_receive_count") == b"1"
    text = log_a.read_text()
    assert "Kafka unavailable" in text
    assert "Kafka available again" in text
    assert set(held_b) <= {message_id(r) for r in lane_b.records()}
    assert lane_b.depth() == 0
