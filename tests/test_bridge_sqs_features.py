"""The bridge on SQS as users have it: FIFO queues, message attributes, envelopes.

Each test runs the real bridge (``python -m bridge``) against the stack's
ElasticMQ and Kafka, on a queue and topic of its own, and reads what reached
the topic.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord

from tests.support.sqs import SqsServer, stack_servers
from tests.test_bridge_services import read_topic
from tests.test_envelopes import LOGIN, eventbridge, sns

pytestmark = pytest.mark.services

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(stack_env: dict[str, str]) -> SqsServer:
    return stack_servers(stack_env)["json"]


def start_bridge(queue_url: str, topic: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "bridge", "--queue-url", queue_url, "--topic", topic, *args]
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ)
        )


def records(stack_env: dict[str, str], topic: str) -> list[ConsumerRecord]:
    return asyncio.run(read_topic(stack_env["KAFKA_BOOTSTRAP_SERVERS"], topic))


def message_id(record: ConsumerRecord) -> str:
    return dict(record.headers)["sqs_message_id"].decode()


@pytest.fixture
def fifo_queue(server: SqsServer) -> Iterator[str]:
    attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    url = server.create_queue("fifo", attributes, suffix=".fifo")
    yield url
    server.delete_queue(url)


def test_a_fifo_queue_drains_in_group_order_with_nothing_stranded_across_five_stops(
    server: SqsServer, fifo_queue: str, stack_env: dict[str, str], tmp_path: Path
) -> None:
    """Five rounds of sending and running the bridge, stopped by SIGTERM mid-stream or
    by idleness: a message held at a stop would lock its group until its visibility
    timeout, so the next run would go idle with the queue still full."""
    topic = f"fifo-{uuid.uuid4().hex[:10]}"
    groups = [f"g{g}" for g in range(6)]
    sent: dict[str, tuple[str, int]] = {}  # message id -> (group, sequence in its group)
    log = tmp_path / "bridge.log"
    for round_ in range(5):
        for group in groups:
            bodies = [
                json.dumps({**LOGIN, "device_id": f"dev-{group}", "n": round_ * 10 + i})
                for i in range(10)
            ]
            dedup = [f"{group}-{round_}-{i}" for i in range(10)]
            for i, (body, ident) in enumerate(zip(bodies, dedup, strict=True)):
                [mid] = server.send(
                    fifo_queue, [body], MessageGroupId=group, MessageDeduplicationId=ident
                )
                sent[mid] = (group, round_ * 10 + i)
        started = log.read_text().count("bridge starting") if log.exists() else 0
        bridge = start_bridge(fifo_queue, topic, log, "--exit-when-idle", "3")
        if round_ % 2 == 0:  # stopped mid-stream, once its signal handlers are in place
            deadline = time.monotonic() + 60
            while log.read_text().count("bridge starting") == started:
                assert time.monotonic() < deadline and bridge.poll() is None
                time.sleep(0.05)
            time.sleep(0.2)
            bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(timeout=90) == 0, log.read_text()[-3000:]
    final = start_bridge(fifo_queue, topic, log, "--exit-when-idle", "3")
    assert final.wait(timeout=90) == 0, log.read_text()[-3000:]
    assert server.depth(fifo_queue) == 0, "messages stranded in the queue"

    got = records(stack_env, topic)
    first_seen: dict[str, ConsumerRecord] = {}
    for record in sorted(got, key=lambda r: (r.partition, r.offset)):
        first_seen.setdefault(message_id(record), record)
    assert set(first_seen) == set(sent)
    by_group: dict[str, list[int]] = {}
    for mid, record in sorted(first_seen.items(), key=lambda kv: (kv[1].partition, kv[1].offset)):
        headers = dict(record.headers)
        group, sequence = sent[mid]
        assert headers["sqs_group_id"].decode() == group
        assert (
            headers["sqs_deduplication_id"].decode() == f"{group}-{sequence // 10}-{sequence % 10}"
        )
        by_group.setdefault(group, []).append(sequence)
    for group, sequence in by_group.items():
        assert sequence == sorted(sequence), f"group {group} out of order"


def test_attributes_arrive_as_headers_and_wrapped_logins_share_the_bare_key(
    server: SqsServer, stack_env: dict[str, str], tmp_path: Path
) -> None:
    topic = f"attrs-{uuid.uuid4().hex[:10]}"
    attributes = {
        "trace": {"DataType": "String", "StringValue": "trace-1"},
        "weight": {"DataType": "Number", "StringValue": "3.5"},
        "blob": {"DataType": "Binary", "BinaryValue": "AAH/"},
    }
    bodies = {
        "bare": json.dumps(LOGIN),
        "sns": json.dumps(sns(json.dumps(LOGIN))),
        "eventbridge": json.dumps(eventbridge(LOGIN)),
    }
    with server.queue("attrs") as url:
        sent = server.send(url, list(bodies.values()), MessageAttributes=attributes)
        ids = dict(zip(bodies, sent, strict=True))
        bridge = start_bridge(url, topic, tmp_path / "bridge.log", "--exit-when-idle", "2")
        assert bridge.wait(timeout=60) == 0
        assert server.depth(url) == 0
    got = {message_id(r): r for r in records(stack_env, topic)}
    keys = {kind: got[mid].key for kind, mid in ids.items()}
    assert keys["sns"] == keys["bare"] == keys["eventbridge"]
    for mid in ids.values():
        headers = dict(got[mid].headers)
        assert headers["sqs_attr.trace"] == b"trace-1"
        assert headers["sqs_attr.weight"] == b"3.5"
        assert headers["sqs_attr_type.weight"] == b"Number"
        assert headers["sqs_attr.blob"] == b"\x00\x01\xff"
        assert headers["sqs_attr_type.blob"] == b"Binary"
    assert got[ids["sns"]].value == bodies["sns"].encode()  # forwarded byte for byte


def test_two_queues_drain_into_one_raw_topic(
    server: SqsServer, stack_env: dict[str, str], tmp_path: Path
) -> None:
    topic = f"two-{uuid.uuid4().hex[:10]}"
    with server.queue("eu") as eu, server.queue("us") as us:
        ids = server.send(eu, [json.dumps({**LOGIN, "n": i}) for i in range(120)])
        ids += server.send(us, [json.dumps({**LOGIN, "n": i}) for i in range(80)])
        log = tmp_path / "bridge.log"
        bridge = start_bridge(f"{eu},{us}", topic, log, "--exit-when-idle", "2")
        assert bridge.wait(timeout=90) == 0, log.read_text()[-3000:]
        assert server.depth(eu) == server.depth(us) == 0
    assert "queues" in log.read_text().split("bridge starting:")[1].splitlines()[0]
    assert sorted({message_id(r) for r in records(stack_env, topic)}) == sorted(ids)
