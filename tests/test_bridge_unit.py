"""Unit tests of the bridge: pure functions, and the forwarder against in-memory fakes.

The fakes stand in for SQS and Kafka so that the pipeline's rules (delete
only what was acknowledged, bound what is held, retry, extend, stop in time)
are checked quickly and deterministically; tests/test_bridge_services.py
checks the same process against the real servers.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import random
import subprocess
import sys
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, ProducerClosed
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from bridge.app import RepeatThrottle
from bridge.cli import BRIDGE_OPTIONS, add_bridge_arguments, apply_overrides, problems
from bridge.config import ForwarderConfig
from bridge.counters import Counters
from bridge.forwarder import Forwarder
from bridge.inflight import InFlightGate
from bridge.outage import OutageLog
from bridge.polling import Scale, receive_pause, scale_after_receive
from bridge.ports import EntryFailure, RawRecord, SqsMessage
from bridge.producer import (
    HEADER_MESSAGE_ID,
    HEADER_RECEIVE_COUNT,
    HEADER_SENT_TIMESTAMP,
    ErrorKind,
    classify_error,
    producer_options,
    to_record,
)
from bridge.sqs.queue import batch_failures, parse_message
from stream.common.partitioning import murmur2, partition_for_key
from stream.common.retry import backoff_delay
from stream.common.settings import Settings, Topics


def synchronous(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (the project has no asyncio plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


# -- pure functions ----------------------------------------------------------------------


def test_parse_message_keeps_body_bytes_and_attributes() -> None:
    raw = {
        "MessageId": "m-1",
        "ReceiptHandle": "r-1",
        "Body": "José 🚀 not json",
        "Attributes": {"SentTimestamp": "1700000000123", "ApproximateReceiveCount": "3"},
    }
    message = parse_message(raw)
    assert message == SqsMessage("m-1", "r-1", "José 🚀 not json".encode(), 1700000000123, 3)


def test_to_record_keys_by_device_hash_never_the_id_itself() -> None:
    body = b'{"device_id": "593-47-5928", "ip": "1.2.3.4"}'
    record = to_record(SqsMessage("m-1", "r-1", body, 1700000000123, 2))
    assert record.value == body  # forwarded byte for byte
    assert len(record.key) == 16 and b"593" not in record.key
    # Every spelling of the device (surrounding whitespace) shares the key.
    padded = b'{"device_id": " 593-47-5928\\t", "ip": "9.9.9.9"}'
    assert to_record(SqsMessage("m-2", "r-2", padded, None, 1)).key == record.key
    other = b'{"device_id": "593-47-5929"}'
    assert to_record(SqsMessage("m-3", "r-3", other, None, 1)).key != record.key


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"device_id": 5}',
        b'{"foo": "x"}',
        b"\xff\xfe",
        b'{"device_id": "\\ud800"}',
        b'{"device_id": 1' + b"1" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_to_record_keys_bodies_without_a_device_by_message_id(body: bytes) -> None:
    assert to_record(SqsMessage("m-9", "r-9", body, None, 1)).key == b"m-9"


def test_to_record_stamps_sqs_headers_and_sent_time() -> None:
    message = SqsMessage("m-1", "r-1", b'{"a": 1}', 1700000000123, 2)
    record = to_record(message)
    assert record.key == b"m-1"
    assert record.value == b'{"a": 1}'
    assert record.timestamp_ms == 1700000000123
    assert dict(record.headers) == {
        HEADER_MESSAGE_ID: b"m-1",
        HEADER_SENT_TIMESTAMP: b"1700000000123",
        HEADER_RECEIVE_COUNT: b"2",
    }


def test_batch_failures_maps_entry_ids_to_positions() -> None:
    response = {
        "Successful": [{"Id": "0"}],
        "Failed": [{"Id": "1", "Code": "ReceiptHandleIsInvalid", "SenderFault": True}],
    }
    [failure] = batch_failures(response)
    assert failure.index == 1
    assert failure.receipt_expired
    assert failure.sender_fault


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter() -> None:
    assert backoff_delay(1, base=0.5, cap=30, rand=0.0) == 0.25
    assert backoff_delay(1, base=0.5, cap=30, rand=0.999) == pytest.approx(0.5, abs=1e-3)
    assert backoff_delay(4, base=0.5, cap=30, rand=1.0) == 4.0
    assert backoff_delay(50, base=0.5, cap=30, rand=1.0) == 30.0
    assert backoff_delay(50, base=0.5, cap=30, rand=0.0) == 15.0


def test_classify_error_sorts_retry_drop_and_restart() -> None:
    assert classify_error(KafkaConnectionError()) is ErrorKind.RETRY
    assert classify_error(MessageSizeTooLargeError()) is ErrorKind.DROP
    assert classify_error(ProducerClosed()) is ErrorKind.RESTART
    assert classify_error(RuntimeError("bug")) is ErrorKind.RESTART


def test_partitioning_matches_the_java_client_default() -> None:
    rng = random.Random(3)
    partitions = list(range(8))
    for length in range(0, 80):
        key = rng.randbytes(length)
        assert murmur2(key) == aiokafka_murmur2(key) & 0xFFFFFFFF
        assert partition_for_key(key, partitions, []) == DefaultPartitioner()(key, partitions, [])


def test_producer_is_idempotent_with_acks_all_and_room_for_big_bodies() -> None:
    settings = replace(Settings(), bridge_compression="lz4", bridge_linger_ms=7)
    options = producer_options(settings)
    assert options["enable_idempotence"] is True
    assert options["acks"] == "all"
    assert options["compression_type"] == "lz4"
    assert options["linger_ms"] == 7
    assert options["max_request_size"] >= 256 * 1024 + 1024
    assert (
        producer_options(replace(settings, bridge_compression="none"))["compression_type"] is None
    )


def test_counters_summary_is_one_line_of_pairs() -> None:
    counters = Counters(received=5, forwarded=4, deleted=3, retried=2, failed=1)
    assert counters.summary(in_flight=2) == (
        "received=5 forwarded=4 deleted=3 retried=2 failed=1 released=0 in_flight=2"
    )


def test_receive_wait_never_exceeds_the_idle_exit_time() -> None:
    config = _config(wait_seconds=20, exit_when_idle=3.5, shutdown_timeout=60)
    assert config.receive_wait == 3
    assert _config(wait_seconds=20, shutdown_timeout=60).receive_wait == 20
    assert _config(wait_seconds=20, exit_when_idle=0.2).receive_wait == 1


def test_receive_wait_leaves_half_the_stop_budget_to_forward_what_a_poll_brings() -> None:
    assert _config(wait_seconds=20, shutdown_timeout=20).receive_wait == 10
    assert _config(wait_seconds=20, shutdown_timeout=5).receive_wait == 2
    assert _config(wait_seconds=20, shutdown_timeout=0.5).receive_wait == 1
    assert _config(wait_seconds=0, shutdown_timeout=20).receive_wait == 0


def test_outage_log_reports_start_repeats_and_end(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    outage = OutageLog("Kafka", clock=lambda: now[0], repeat=30)
    with caplog.at_level(logging.INFO, logger="bridge.forwarder"):
        outage.failure("refused")
        now[0] = 10
        outage.failure("refused")
        now[0] = 31
        outage.failure("refused")
        now[0] = 40
        outage.success()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "Kafka unavailable: refused; retrying with backoff",
        "Kafka still unavailable after 31s: refused",
        "Kafka available again after 40s",
    ]


def test_repeat_throttle_passes_each_library_message_once_per_interval() -> None:
    now = [0.0]
    throttle = RepeatThrottle("aiokafka", interval=30, clock=lambda: now[0])

    def record(name: str, port: int) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, "", 0, "cannot connect to %s", (port,), None)

    assert throttle.filter(record("aiokafka", 1))
    assert not throttle.filter(record("aiokafka", 2))
    assert throttle.filter(record("bridge.forwarder", 3))
    now[0] = 31
    again = record("aiokafka", 4)
    assert throttle.filter(again)
    assert again.getMessage() == "cannot connect to 4 [1 similar lines suppressed]"


def test_cli_flags_override_settings_and_nested_topics() -> None:
    parser = argparse.ArgumentParser()
    add_bridge_arguments(parser)
    args = parser.parse_args(
        ["--queue-url", "http://q", "--topic", "t1", "--partitions", "3", "--pollers", "7"]
    )
    base = Settings(topics=Topics(raw="logins.raw", partitions=8))
    settings = apply_overrides(base, args, BRIDGE_OPTIONS)
    assert settings.sqs_queue_url == "http://q"
    assert settings.topics.raw == "t1"
    assert settings.topics.partitions == 3
    assert settings.bridge_pollers == 7
    assert settings.bridge_wait_seconds == base.bridge_wait_seconds


def test_help_documents_every_option() -> None:
    parser = argparse.ArgumentParser()
    add_bridge_arguments(parser)
    text = parser.format_help()
    for option in BRIDGE_OPTIONS:
        assert option.flag in text
        assert option.env in text.replace("\n", " ").replace("  ", "")
    assert "--exit-when-idle" in text


@pytest.mark.parametrize("entry", [("-m", "bridge"), ("-m", "stream.cli", "bridge")])
def test_both_entry_points_document_and_check_their_options(entry: tuple[str, ...]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SQS_QUEUE_URL"}
    shown = subprocess.run([sys.executable, *entry, "--help"], capture_output=True, text=True)
    assert shown.returncode == 0
    assert all(option.flag in shown.stdout for option in BRIDGE_OPTIONS)
    refused = subprocess.run(
        [sys.executable, *entry, "--pollers", "0"], capture_output=True, text=True, env=env
    )
    assert refused.returncode == 2
    assert "no queue" in refused.stderr and "--pollers must be at least 1" in refused.stderr


@pytest.mark.parametrize("entry", [("-m", "bridge"), ("-m", "stream.cli", "bridge")])
def test_both_entry_points_refuse_a_malformed_variable_in_one_line(
    entry: tuple[str, ...],
) -> None:
    env = {**os.environ, "MASKSTREAM_BRIDGE_POLLERS": "two"}
    refused = subprocess.run([sys.executable, *entry], capture_output=True, text=True, env=env)
    assert refused.returncode == 2
    lines = refused.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith("bridge: MASKSTREAM_BRIDGE_POLLERS must be an integer, got 'two'")


def test_problems_name_each_bad_setting() -> None:
    bad = replace(Settings(), sqs_queue_url="", bridge_wait_seconds=30, bridge_compression="brotli")
    found = problems(bad, exit_when_idle=-1)
    assert any("SQS_QUEUE_URL" in p for p in found)
    assert any("--wait-seconds" in p for p in found)
    assert any("--compression" in p for p in found)
    assert any("--exit-when-idle" in p for p in found)
    assert problems(replace(Settings(), sqs_queue_url="http://q"), None) == []


@synchronous
async def test_gate_blocks_at_the_bound_until_released() -> None:
    gate = InFlightGate(10)
    assert await gate.acquire(10)
    waiter = asyncio.ensure_future(gate.acquire(5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    gate.release(5)
    assert await asyncio.wait_for(waiter, 1)
    gate.close()
    assert not await gate.acquire(100)


# -- the forwarder against fakes ----------------------------------------------------------


def _config(**overrides: Any) -> ForwarderConfig:
    base = ForwarderConfig(
        pollers=2,
        wait_seconds=1,
        max_in_flight=1000,
        visibility_timeout=30,
        shutdown_timeout=3,
        stats_interval=60,
        backoff_base=0.01,
        backoff_cap=0.05,
    )
    return replace(base, **overrides)


def _messages(count: int) -> list[SqsMessage]:
    return [
        SqsMessage(f"id-{i}", f"rh-{i}", f"body {i}".encode(), 1700000000000 + i, 1)
        for i in range(count)
    ]


class FakeQueue:
    """An in-memory queue: receives pop messages, deletes and extensions are recorded."""

    def __init__(self, messages: Sequence[SqsMessage]) -> None:
        self.available = deque(messages)
        self.deleted: list[str] = []
        self.extended: list[str] = []
        self.receive_errors = 0
        self.released: list[str] = []
        self.open_receives = 0
        # While cleared, receives wait (as a long poll would) before taking messages.
        self.receives_answer = asyncio.Event()
        self.receives_answer.set()
        self.stuck_handle = ""  # a visibility change naming it never returns
        self.delete_policy: Callable[[Sequence[str]], list[EntryFailure]] = lambda handles: []

    async def receive(
        self, max_messages: int, wait_seconds: int, visibility: int
    ) -> list[SqsMessage]:
        if self.receive_errors:
            self.receive_errors -= 1
            raise ConnectionError("SQS unreachable")
        self.open_receives += 1
        try:
            await self.receives_answer.wait()
        finally:
            self.open_receives -= 1
        batch = [self.available.popleft() for _ in range(min(max_messages, len(self.available)))]
        if not batch:
            await asyncio.sleep(0.02)
        return batch

    async def delete(self, receipt_handles: Sequence[str]) -> list[EntryFailure]:
        failures = self.delete_policy(receipt_handles)
        failed = {f.index for f in failures}
        self.deleted += [h for i, h in enumerate(receipt_handles) if i not in failed]
        return failures

    async def change_visibility(
        self, receipt_handles: Sequence[str], timeout: int
    ) -> list[EntryFailure]:
        if self.stuck_handle in receipt_handles:
            await asyncio.sleep(60)
        if timeout == 0:
            self.released += receipt_handles
        else:
            self.extended += receipt_handles
        return []


class FakeSink:
    """A Kafka stand-in: acknowledges at once, on demand, or fails as told."""

    def __init__(self, auto_ack: bool = True) -> None:
        self.auto_ack = auto_ack
        self.records: list[RawRecord] = []
        self.pending: list[Any] = []
        self.fail_with: Callable[[RawRecord], BaseException | None] = lambda record: None
        self.raise_with: Callable[[RawRecord], BaseException | None] = lambda record: None
        self.start_failures = 0
        self.listener: Callable[[list[Any], BaseException | None], None] | None = None

    def listen(self, listener: Callable[[list[Any], BaseException | None], None]) -> None:
        self.listener = listener

    async def start(self) -> None:
        if self.start_failures:
            self.start_failures -= 1
            raise KafkaConnectionError("no broker")

    async def send(self, record: RawRecord, token: Any) -> None:
        raised = self.raise_with(record)
        if raised is not None:
            raise raised
        assert self.listener is not None
        error = self.fail_with(record)
        if error is not None:
            asyncio.get_running_loop().call_soon(self.listener, [token], error)
            return
        self.records.append(record)
        if self.auto_ack:
            asyncio.get_running_loop().call_soon(self.listener, [token], None)
        else:
            self.pending.append(token)

    def ack(self, count: int) -> None:
        """Acknowledge the first *count* pending records as one batch."""
        assert self.listener is not None
        batch, self.pending = self.pending[:count], self.pending[count:]
        self.listener(batch, None)

    def ack_all(self) -> None:
        self.ack(len(self.pending))

    async def stop(self, timeout: float) -> bool:
        return True


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


@synchronous
async def test_forwards_every_message_then_deletes_it() -> None:
    queue, sink = FakeQueue(_messages(95)), FakeSink()
    forwarder = Forwarder(queue, sink, _config(exit_when_idle=0.2))
    assert await asyncio.wait_for(forwarder.run(), 10)
    assert sorted(r.key for r in sink.records) == sorted(f"id-{i}".encode() for i in range(95))
    assert sorted(queue.deleted) == sorted(f"rh-{i}" for i in range(95))
    assert forwarder.counters.snapshot() == {
        "received": 95,
        "forwarded": 95,
        "deleted": 95,
        "retried": 0,
        "failed": 0,
        "released": 0,
    }


@synchronous
async def test_deletes_only_what_kafka_acknowledged() -> None:
    queue, sink = FakeQueue(_messages(30)), FakeSink(auto_ack=False)
    forwarder = Forwarder(queue, sink, _config())
    run = asyncio.ensure_future(forwarder.run())
    await _until(lambda: len(sink.pending) == 30)
    await asyncio.sleep(0.1)
    assert queue.deleted == []
    sink.ack(12)
    await _until(lambda: len(queue.deleted) == 12)
    acked = {r.key.decode().replace("id", "rh") for r in sink.records[:12]}
    assert set(queue.deleted) == acked
    forwarder.request_stop("test")
    sink.ack_all()
    assert await asyncio.wait_for(run, 5)
    assert len(queue.deleted) == 30


@synchronous
async def test_pollers_wait_at_the_in_flight_bound() -> None:
    queue, sink = FakeQueue(_messages(200)), FakeSink(auto_ack=False)
    forwarder = Forwarder(queue, sink, _config(max_in_flight=25, pollers=4))
    run = asyncio.ensure_future(forwarder.run())
    await _until(lambda: forwarder.counters.received >= 20)
    await asyncio.sleep(0.2)
    assert forwarder.counters.received <= 25
    assert forwarder.in_flight <= 25
    sink.ack_all()
    await _until(lambda: forwarder.counters.received > 25)
    forwarder.request_stop("test")
    forwarder.request_stop("test again")
    await asyncio.wait_for(run, 5)


@synchronous
async def test_failed_produce_is_retried_until_acknowledged() -> None:
    queue, sink = FakeQueue(_messages(20)), FakeSink()
    attempts: dict[bytes, int] = {}

    def flaky(record: RawRecord) -> BaseException | None:
        attempts[record.key] = attempts.get(record.key, 0) + 1
        return KafkaConnectionError("broker gone") if attempts[record.key] <= 2 else None

    sink.fail_with = flaky
    forwarder = Forwarder(queue, sink, _config(exit_when_idle=0.3))
    assert await asyncio.wait_for(forwarder.run(), 10)
    assert len(queue.deleted) == 20
    assert forwarder.counters.retried == 40
    assert forwarder.counters.forwarded == 20


class FakeBuilder:
    """aiokafka's BatchBuilder stand-in: holds at most *limit* records."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.records: list[tuple[Any, ...]] = []

    def append(self, *, timestamp: int, key: bytes, value: bytes, headers: list[Any]) -> Any:
        if len(self.records) >= self.limit:
            return None
        self.records.append((timestamp, key, value, headers))
        return object()


class FakeProducer:
    """aiokafka's producer stand-in for KafkaSink: records submitted batches."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.batches: list[tuple[int, list[tuple[Any, ...]]]] = []
        self.outcome: BaseException | None = None
        self.stopped = False

    async def start(self) -> None:
        return None

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(limit=3)

    async def send_batch(self, builder: FakeBuilder, topic: str, *, partition: int) -> Any:
        self.batches.append((partition, builder.records))
        delivery = asyncio.get_running_loop().create_future()
        if self.outcome is None:
            delivery.set_result(None)
        else:
            delivery.set_exception(self.outcome)
        return delivery

    async def stop(self) -> None:
        self.stopped = True


async def _fake_sink(
    clock: Callable[[], float] = lambda: 100.0,
) -> tuple[Any, list[Any], list[Any]]:
    """A KafkaSink over FakeProducers; returns it, the producers made, the reports heard."""
    from bridge.producer import KafkaSink

    producers: list[FakeProducer] = []
    reports: list[Any] = []

    def factory(**options: Any) -> FakeProducer:
        producers.append(FakeProducer(**options))
        return producers[-1]

    async def no_topic(settings: Settings) -> bool:
        return False

    settings = replace(Settings(), bridge_linger_ms=5)
    sink = KafkaSink(settings, factory=factory, clock=clock, topic_creator=no_topic)
    sink.listen(lambda tokens, error: reports.append((list(tokens), error)))
    assert not sink.started  # the bridge's /ready follows this
    await sink.start()
    assert sink.started
    return sink, producers, reports


@synchronous
async def test_sink_batches_per_partition_and_reports_once_per_batch() -> None:
    sink, producers, reports = await _fake_sink()
    records = [to_record(m) for m in _messages(20)]
    for index, record in enumerate(records):
        await sink.send(record, index)
    await asyncio.sleep(0.05)  # past the linger time
    [producer] = producers
    assert producer.options["enable_idempotence"] is True
    assert producer.options["linger_ms"] == 0  # the sink lingers itself
    assert sorted(t for tokens, error in reports for t in tokens) == list(range(20))
    assert all(error is None for _, error in reports)
    assert len(reports) == len(producer.batches)
    assert all(len(records) <= 3 for _, records in producer.batches)
    for partition, batch in producer.batches:
        for _, key, _, headers in batch:
            assert partition == partition_for_key(key, [0, 1, 2, 3], [])
            assert isinstance(headers, list)  # aiokafka's C builder insists on a list


@synchronous
async def test_sink_replaces_a_producer_that_became_unusable() -> None:
    now = [100.0]
    sink, producers, reports = await _fake_sink(clock=lambda: now[0])
    producers[0].outcome = ProducerClosed()
    await sink.send(to_record(_messages(1)[0]), "first")
    await asyncio.sleep(0.05)
    assert reports == [(["first"], producers[0].outcome)]
    now[0] += 10
    await sink.send(to_record(_messages(2)[1]), "second")
    await asyncio.sleep(0.05)
    assert len(producers) == 2
    assert reports[-1] == (["second"], None)
    assert producers[0].stopped


@synchronous
async def test_sink_refuses_a_record_no_batch_can_carry() -> None:
    sink, producers, reports = await _fake_sink()
    huge = RawRecord(b"k", b"x" * (2 * 1024 * 1024), (), 1)
    with pytest.raises(MessageSizeTooLargeError):
        await sink.send(huge, "huge")
    assert producers[0].batches == [] and reports == []


@synchronous
async def test_unwritable_message_is_left_in_sqs() -> None:
    queue, sink = FakeQueue(_messages(5)), FakeSink()
    sink.fail_with = lambda r: MessageSizeTooLargeError() if r.key == b"id-2" else None
    forwarder = Forwarder(queue, sink, _config(exit_when_idle=0.2))
    assert await asyncio.wait_for(forwarder.run(), 10)
    assert "rh-2" not in queue.deleted
    assert len(queue.deleted) == 4
    assert forwarder.counters.failed == 1


@synchronous
async def test_partial_delete_failure_retries_server_faults_only() -> None:
    queue, sink = FakeQueue(_messages(2)), FakeSink()
    calls: list[Sequence[str]] = []

    def policy(handles: Sequence[str]) -> list[EntryFailure]:
        calls.append(list(handles))
        if len(calls) > 1:
            return []
        return [
            EntryFailure(i, "InternalError", "try again", False)
            if h == "rh-0"
            else EntryFailure(i, "ReceiptHandleIsInvalid", "expired", True)
            for i, h in enumerate(handles)
        ]

    queue.delete_policy = policy
    forwarder = Forwarder(queue, sink, _config(exit_when_idle=0.2, pollers=1))
    assert await asyncio.wait_for(forwarder.run(), 10)
    assert calls[1:] == [["rh-0"]]
    assert queue.deleted == ["rh-0"]
    assert forwarder.counters.failed == 1
    assert forwarder.counters.deleted == 1
    assert forwarder.counters.retried == 1


@synchronous
async def test_held_messages_get_their_visibility_extended() -> None:
    queue, sink = FakeQueue(_messages(10)), FakeSink(auto_ack=False)
    forwarder = Forwarder(queue, sink, _config(visibility_timeout=2))
    run = asyncio.ensure_future(forwarder.run())
    await _until(lambda: set(queue.extended) >= {f"rh-{i}" for i in range(10)}, timeout=5)
    assert queue.deleted == []
    sink.ack_all()
    forwarder.request_stop("test")
    await asyncio.wait_for(run, 5)


@synchronous
async def test_a_stuck_visibility_call_does_not_hold_up_the_others() -> None:
    queue, sink = FakeQueue(_messages(20)), FakeSink(auto_ack=False)
    queue.stuck_handle = "rh-0"
    forwarder = Forwarder(queue, sink, _config(visibility_timeout=2, pollers=1))
    run = asyncio.ensure_future(forwarder.run())

    def extended_twice() -> int:
        counts = Counter(queue.extended)
        return sum(1 for n in counts.values() if n >= 2)

    # The ten messages outside the stuck call's batch keep being extended.
    await _until(lambda: extended_twice() >= 10, timeout=5)
    assert "rh-0" not in queue.extended
    sink.ack_all()
    forwarder.request_stop("test")
    await asyncio.wait_for(run, 5)


@synchronous
async def test_stalled_kafka_is_reported_once_and_its_return_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue, sink = FakeQueue(_messages(10)), FakeSink(auto_ack=False)
    forwarder = Forwarder(queue, sink, _config(stall_warning_seconds=0.3))
    with caplog.at_level(logging.INFO, logger="bridge.forwarder"):
        run = asyncio.ensure_future(forwarder.run())
        await _until(lambda: len(sink.pending) == 10)
        await asyncio.sleep(0.8)
        sink.ack_all()
        await _until(lambda: len(queue.deleted) == 10)
        forwarder.request_stop("test")
        await asyncio.wait_for(run, 5)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Kafka unavailable: no acknowledgement" in m for m in messages) == 1
    assert sum("Kafka available again" in m for m in messages) == 1


@synchronous
async def test_stop_is_bounded_when_kafka_never_acknowledges() -> None:
    queue, sink = FakeQueue(_messages(10)), FakeSink(auto_ack=False)
    forwarder = Forwarder(queue, sink, _config(shutdown_timeout=0.5))
    run = asyncio.ensure_future(forwarder.run())
    await _until(lambda: len(sink.pending) == 10)
    forwarder.request_stop("test")
    assert await asyncio.wait_for(run, 3)
    assert queue.deleted == []


@synchronous
async def test_outages_at_start_and_on_receive_are_retried() -> None:
    queue, sink = FakeQueue(_messages(10)), FakeSink()
    sink.start_failures = 2
    queue.receive_errors = 3
    forwarder = Forwarder(queue, sink, _config(exit_when_idle=0.3))
    assert await asyncio.wait_for(forwarder.run(), 10)
    assert len(queue.deleted) == 10


@synchronous
async def test_stop_while_kafka_is_unreachable_at_start() -> None:
    queue, sink = FakeQueue(_messages(10)), FakeSink()
    sink.start_failures = 1000
    forwarder = Forwarder(queue, sink, _config())
    run = asyncio.ensure_future(forwarder.run())
    await asyncio.sleep(0.1)
    forwarder.request_stop("test")
    assert await asyncio.wait_for(run, 2)
    assert forwarder.counters.received == 0


@synchronous
async def test_messages_never_acknowledged_are_produced_again_and_deleted_once() -> None:
    queue, sink = FakeQueue(_messages(5)), FakeSink(auto_ack=False)
    forwarder = Forwarder(queue, sink, _config(resend_after_seconds=0.3))
    run = asyncio.ensure_future(forwarder.run())
    await _until(lambda: len(sink.pending) == 5)
    lost, sink.pending = sink.pending, []  # these deliveries never report back
    await _until(lambda: len(sink.pending) == 5)  # produced again
    assert {id(t) for t in sink.pending} == {id(t) for t in lost}
    sink.pending += lost  # a late report of the first send arrives too
    sink.ack_all()
    await _until(lambda: len(queue.deleted) == 5)
    forwarder.request_stop("test")
    await asyncio.wait_for(run, 5)
    assert len(queue.deleted) == 5
    assert forwarder.counters.forwarded == 5


def test_pollers_grow_on_full_polls_with_room_and_retire_on_others() -> None:
    grow = scale_after_receive(10, 10, pollers=4, floor=2, ceiling=32, room=100)
    assert grow is Scale.GROW
    assert scale_after_receive(10, 10, 32, 2, 32, room=100) is Scale.KEEP  # at the ceiling
    assert scale_after_receive(10, 10, 4, 2, 32, room=9) is Scale.KEEP  # in-flight bound near
    assert scale_after_receive(10, 10, 4, 2, 32, 100, lingered=True) is Scale.KEEP
    assert scale_after_receive(3, 10, 4, 2, 32, 100) is Scale.RETIRE
    assert scale_after_receive(0, 10, 4, 2, 32, 100) is Scale.RETIRE
    assert scale_after_receive(0, 10, 2, 2, 32, 100) is Scale.KEEP  # at the floor


def test_receive_pause_follows_part_filled_batches_only() -> None:
    assert receive_pause(10, 10, linger=0.02) == 0.0
    assert receive_pause(0, 10, linger=0.02) == 0.0  # the long poll already waited
    assert receive_pause(1, 10, linger=0.02) == 0.02
    assert receive_pause(9, 10, linger=0.02) == 0.02


@synchronous
async def test_a_full_queue_grows_the_pollers_and_an_empty_one_shrinks_them() -> None:
    queue, sink = FakeQueue(_messages(2000)), FakeSink()
    forwarder = Forwarder(queue, sink, _config(pollers=1, max_pollers=6))
    run = asyncio.ensure_future(forwarder.run())
    seen: set[int] = set()

    async def watch() -> None:
        while len(queue.deleted) < 2000:
            seen.add(forwarder.pollers)
            await asyncio.sleep(0)

    await asyncio.wait_for(watch(), 10)
    assert max(seen) == 6
    await _until(lambda: forwarder.pollers == 1)
    forwarder.request_stop("test")
    assert await asyncio.wait_for(run, 5)


@synchronous
async def test_a_stop_awaits_open_polls_and_forwards_what_they_bring() -> None:
    queue, sink = FakeQueue(_messages(15)), FakeSink()
    queue.receives_answer.clear()
    forwarder = Forwarder(queue, sink, _config(pollers=2))
    run = asyncio.ensure_future(forwarder.run())
    await _until(lambda: queue.open_receives == 2)
    forwarder.request_stop("test")
    await asyncio.sleep(0.1)
    assert not run.done()  # the open polls are still waited for
    queue.receives_answer.set()  # messages arrive: the open polls return them
    assert await asyncio.wait_for(run, 5)
    assert sorted(queue.deleted) == sorted(f"rh-{i}" for i in range(15))
    assert queue.released == [] and forwarder.in_flight == 0


@synchronous
async def test_a_stop_releases_what_kafka_did_not_acknowledge_in_time() -> None:
    queue, sink = FakeQueue(_messages(12)), FakeSink(auto_ack=False)
    forwarder = Forwarder(queue, sink, _config(shutdown_timeout=0.5))
    run = asyncio.ensure_future(forwarder.run())
    await _until(lambda: len(sink.pending) == 12)
    sink.ack(5)
    await _until(lambda: len(queue.deleted) == 5)
    forwarder.request_stop("test")
    assert await asyncio.wait_for(run, 3)
    assert sorted(queue.released + queue.deleted) == sorted(f"rh-{i}" for i in range(12))
    assert len(queue.released) == 7
    assert forwarder.counters.released == 7 and forwarder.in_flight == 0
