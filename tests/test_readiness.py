"""Readiness that covers dependencies: ``/ready`` says 503 and why while one is out,
``/health`` stays 200 (a restart would not mend it).

The worker case runs on the real stack, stopping its PostgreSQL; the bridge's
rule is checked on its own parts (an outage log driven by a fake clock).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bridge.counters import Counters
from bridge.metrics import BridgeCollector, WatchedQueue, all_problems, problems
from bridge.outage import OutageLog
from stream.common.ports import any_free_port
from stream.devstack.manager import Stack
from tests.support.sandbox import IsolatedPipeline


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(url: str, status: int, timeout: float, health: str) -> dict:
    """Poll *url* until it answers *status*; *health* must answer 200 at every poll."""
    deadline = time.monotonic() + timeout
    while True:
        assert get(health)[0] == 200, get(health)
        code, body = get(url)
        if code == status:
            return body
        assert time.monotonic() < deadline, f"{url} still {code}: {body}"
        time.sleep(1)


@pytest.mark.services
def test_worker_not_ready_while_postgres_is_down_yet_alive_throughout(
    pipeline: IsolatedPipeline, stack_env: dict[str, str]
) -> None:
    stack = Stack(Path(stack_env["MASKSTREAM_STACK_DIR"]))
    pipeline.launcher.start_worker("worker")
    base = f"http://127.0.0.1:{pipeline.launcher.web_ports['worker']}"
    deadline = time.monotonic() + 120
    while True:  # the web view answers once the worker has started
        try:
            get(f"{base}/health")
            break
        except OSError:
            assert time.monotonic() < deadline, pipeline.launcher.failed()
            time.sleep(1)
    wait_for(f"{base}/ready", 200, 120, f"{base}/health")

    stack.stop_service("postgres")
    try:
        body = wait_for(f"{base}/ready", 503, 60, f"{base}/health")
        assert body["ready"] is False
        assert any(p.startswith("PostgreSQL unreachable") for p in body["problems"]), body
        assert get(f"{base}/health") == (200, {"status": "ok", "problems": []})
    finally:
        stack.start_service("postgres")
    body = wait_for(f"{base}/ready", 200, 60, f"{base}/health")
    assert body["problems"] == []
    log = pipeline.launcher.log("worker")
    assert log.count("PostgreSQL unreachable (") == 1  # one line for the outage
    assert "PostgreSQL reachable again after" in log


@pytest.mark.services
def test_worker_without_a_database_says_so_at_start_and_is_not_ready(
    pipeline: IsolatedPipeline,
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{any_free_port()}/nowhere"
    pipeline.launcher.start_worker("worker", {"DATABASE_URL": nowhere})
    base = f"http://127.0.0.1:{pipeline.launcher.web_ports['worker']}"
    deadline = time.monotonic() + 120
    while "PostgreSQL unreachable (" not in pipeline.launcher.log("worker"):
        assert time.monotonic() < deadline, pipeline.launcher.log("worker")[-3000:]
        time.sleep(1)
    status, body = get(f"{base}/ready")
    assert status == 503
    assert any(p.startswith("PostgreSQL unreachable") for p in body["problems"]), body
    assert get(f"{base}/health")[0] == 200
    line = next(
        entry for entry in pipeline.launcher.log("worker").splitlines()
        if "PostgreSQL unreachable (" in entry
    )  # fmt: skip
    assert f"at 127.0.0.1:{nowhere.rsplit(':', 1)[1]}" in line


class Stub:
    """What the bridge's endpoints read of a forwarder, with outages driven by hand."""

    def __init__(self, clock: list[float]) -> None:
        self.counters = Counters()
        self.in_flight = self.pollers = self.open_polls = 0
        self.sqs = OutageLog("SQS", lambda: clock[0])
        self.kafka = OutageLog("Kafka", lambda: clock[0])
        self.oldest: int | None = None

    def oldest_held_sent_ms(self) -> int | None:
        return self.oldest

    def outages(self) -> list[OutageLog]:
        return [self.sqs, self.kafka]


def test_bridge_not_ready_with_the_reason_while_sqs_or_kafka_is_out() -> None:
    clock = [100.0]
    stub = Stub(clock)
    assert problems(stub, kafka_started=False) == ["Kafka has not answered yet"]
    assert problems(stub, kafka_started=True) == []
    stub.sqs.failure("ClientError: AccessDenied")
    clock[0] = 112.0
    assert problems(stub, kafka_started=True) == [
        "SQS unavailable for 12s: ClientError: AccessDenied"
    ]
    stub.sqs.success()
    stub.kafka.failure("KafkaConnectionError")
    assert problems(stub, kafka_started=True) == ["Kafka unavailable for 0s: KafkaConnectionError"]
    stub.kafka.success()
    assert problems(stub, kafka_started=True) == []


def test_a_bridge_of_several_queues_names_the_queue_it_is_not_ready_for() -> None:
    clock = [100.0]
    first, second = Stub(clock), Stub(clock)
    watched = [WatchedQueue("logins-eu", first), WatchedQueue("logins-us", second)]
    assert all_problems(watched) == []
    second.sqs.failure("SqsUnavailable: ReceiveMessage: ClientConnectorError")
    assert all_problems(watched) == [
        "logins-us: SQS unavailable for 0s: SqsUnavailable: ReceiveMessage: ClientConnectorError"
    ]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in BridgeCollector(watched).collect()
        for s in family.samples
    }
    assert samples[("maskstream_bridge_outage", (("queue", "logins-us"), ("service", "sqs")))] == 1
    assert samples[("maskstream_bridge_outage", (("queue", "logins-eu"), ("service", "sqs")))] == 0


def test_bridge_metrics_show_outages_and_the_oldest_held_message_age() -> None:
    clock = [0.0]
    stub = Stub(clock)
    collector = BridgeCollector([WatchedQueue("q", stub)], clock=lambda: 1_000.0)
    stub.oldest = 940_000  # sent at 940 s, now 1,000 s
    stub.kafka.failure("KafkaConnectionError")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }
    assert samples[("maskstream_bridge_oldest_held_age_seconds", (("queue", "q"),))] == 60.0
    assert samples[("maskstream_bridge_outage", (("queue", "q"), ("service", "kafka")))] == 1
    assert samples[("maskstream_bridge_outage", (("queue", "q"), ("service", "sqs")))] == 0
    stub.oldest = None
    ages = [
        s.value for f in collector.collect() for s in f.samples if s.name.endswith("age_seconds")
    ]
    assert ages == [0.0]
