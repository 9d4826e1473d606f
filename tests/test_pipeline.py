"""The stream pipeline end to end on real Kafka, PostgreSQL and worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import NewPartitions

from stream.core.records import MAX_RAW_RECORD_BYTES
from stream.worker.faust_patches.transport import METADATA_MAX_AGE_MS
from tests.support.sandbox import IsolatedPipeline, RawMessage

pytestmark = pytest.mark.services


def login(
    device_id: str = "593-47-5928", ip: str = "199.172.111.135", **overrides: object
) -> bytes:
    body = {
        "user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae",
        "app_version": "2.3.0",
        "device_type": "android",
        "ip": ip,
        "locale": "RU",
        "device_id": device_id,
    }
    body.update(overrides)
    return json.dumps(body).encode()


def new_id() -> str:
    return str(uuid.uuid4())


# Each bad body, the reason it must be rejected with.
BAD_INPUTS = {
    b"not json at all": "not JSON",
    b"   ": "empty body",
    b'{"foo": "oops_wrong_message_format", "bar": "123"}': "not a login (no login fields)",
    b"[1, 2]": "not an object (JSON array)",
    b"{}": "empty object",
    b"\xff\xfe": "not UTF-8 text",
    login(app_version=3): "app_version must be a string, got number",
    login(app_version="three"): "app_version is not a version like 2.3.0, 0.96 or 3.7",
    login(user_id="u" * 129): "user_id longer than 128",
    login(device_type="d" * 33): "device_type longer than 32",
    login(locale="l" * 33): "locale longer than 32",
    login(ip="300.1.2.3"): "ip is not an IPv4 or IPv6 address",
    json.dumps(
        {"user_id": "u", "app_version": "1.0", "device_type": "ios", "ip": "1.2.3.4"}
    ).encode(): ("missing field device_id"),
    # Valid JSON the database would refuse (NUL in text): rejected before it.
    login(user_id="nul\u0000inside"): "user_id contains a NUL character",
}


def test_each_bad_input_is_one_rejection_and_good_messages_around_it_are_written(
    pipeline: IsolatedPipeline,
) -> None:
    messages: list[RawMessage] = []
    expected_reasons: dict[str, str] = {}
    good_ids: list[str] = []
    for body, reason in BAD_INPUTS.items():
        good = RawMessage(new_id(), login(device_id=f"dev-{len(good_ids)}"))
        bad = RawMessage(new_id(), body)
        messages += [good, bad]
        good_ids.append(good.message_id)
        expected_reasons[bad.message_id] = reason
    extra = RawMessage(new_id(), login(device_id="dev-extra", unexpected="field"))
    null_locale = RawMessage(new_id(), login(device_id="dev-null", locale=None, app_version="0.96"))
    messages += [extra, null_locale]
    good_ids += [extra.message_id, null_locale.message_id]

    pipeline.launcher.start_worker("worker")
    pipeline.produce_raw(messages)
    pipeline.wait_for_outcomes(len(messages))

    rejected = dict(pipeline.query("SELECT message_id, reason FROM rejected_logins"))
    assert rejected.keys() == expected_reasons.keys()
    for message_id, reason in expected_reasons.items():
        assert rejected[message_id].startswith(reason), (reason, rejected[message_id])
    rows = pipeline.query("SELECT message_id FROM user_logins")
    assert sorted(r[0] for r in rows) == sorted(good_ids)
    locale, major, full = pipeline.query(
        "SELECT locale, app_version, app_version_full FROM user_logins WHERE message_id = %s",
        (null_locale.message_id,),
    )[0]
    assert (locale, major, full) == (None, 0, "0.96")
    # Rejections also travel on the rejected topic, one per bad message.
    on_topic = {
        json.loads(v)["message_id"] for _, v in pipeline.read_topic(pipeline.rejected_topic)
    }
    assert on_topic == expected_reasons.keys()


def test_workers_started_before_the_topics_exist_create_and_consume_them(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """Right after a worker creates the raw topic, the broker's metadata may
    not list it yet; the worker must still be assigned its partitions within
    seconds, not at its next 5-minute metadata refresh. The raw topic it
    creates takes a record of the largest SQS body."""
    with IsolatedPipeline(stack_env, tmp_path, topics_up_front=False) as pipe:
        assert pipe.topic_config(pipe.raw_topic) is None
        for name in ("worker-1", "worker-2"):
            pipe.launcher.start_worker(name)
        config = pipe.wait_for_topic(pipe.raw_topic)
        assert int(config["max.message.bytes"]) >= MAX_RAW_RECORD_BYTES
        messages = [RawMessage(new_id(), login(device_id=f"dev-{n}")) for n in range(20)]
        pipe.produce_raw(messages)
        pipe.wait_for_outcomes(len(messages), timeout=30)
        assert pipe.row_count() == len(messages)


def test_records_from_another_producer_on_the_raw_topic_are_processed(
    pipeline: IsolatedPipeline,
) -> None:
    """No SQS headers: the key stands in for the message id, the record's own
    timestamp for SentTimestamp, and a record without a key gets its position."""
    pipeline.launcher.start_worker("worker")
    pipeline.produce_plain(
        pipeline.raw_topic,
        [(b"other-1", login(device_id="dev-foreign")), (None, b"not json"), (b"other-2", b"")],
    )
    pipeline.wait_for_outcomes(3)
    rows = pipeline.query("SELECT message_id, sent_at IS NOT NULL FROM user_logins")
    assert rows == [("other-1", True)]
    rejected = dict(pipeline.query("SELECT message_id, reason FROM rejected_logins"))
    assert rejected["other-2"].startswith("empty body")
    (positional,) = rejected.keys() - {"other-2"}
    assert positional.startswith(f"kafka:{pipeline.raw_topic}:")
    assert pipeline.launcher.children["worker"].poll() is None


def test_redelivery_gives_one_row_and_repeated_content_gives_two(
    pipeline: IsolatedPipeline,
) -> None:
    delivered_twice = RawMessage(new_id(), login(device_id="dev-a"))
    same_content = [RawMessage(new_id(), login(device_id="dev-b")) for _ in range(2)]
    pipeline.launcher.start_worker("worker")
    pipeline.produce_raw([delivered_twice, delivered_twice, *same_content])
    pipeline.wait_for_outcomes(3)

    assert pipeline.query(
        "SELECT count(*) FROM user_logins WHERE message_id = %s", (delivered_twice.message_id,)
    ) == [(1,)]
    masked = pipeline.query(
        "SELECT masked_ip, masked_device_id FROM user_logins WHERE message_id = ANY(%s)",
        ([m.message_id for m in same_content],),
    )
    assert len(masked) == 2
    assert masked[0] == masked[1]
    assert pipeline.outcome_count() == 3


def test_seen_devices_counts_match_rows(pipeline: IsolatedPipeline) -> None:
    thrice = [RawMessage(new_id(), login(device_id="dev-3x", ip=f"10.0.0.{i}")) for i in range(3)]
    once = RawMessage(new_id(), login(device_id="dev-1x"))
    pipeline.launcher.start_worker("worker")
    pipeline.produce_raw([*thrice, once])
    pipeline.wait_for_outcomes(4)

    counts = dict(
        pipeline.query(
            "SELECT masked_device_id, count(*) FROM user_logins GROUP BY masked_device_id"
        )
    )
    assert sorted(counts.values()) == [1, 3]
    assert dict(pipeline.query("SELECT masked_device_id, login_count FROM seen_devices")) == counts
    port = pipeline.launcher.web_ports["worker"]
    for device, rows in counts.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/seen-devices/{device}/") as response:
            entry = json.load(response)
        assert entry["login_count"] == rows
        assert entry["source"] == "table"  # the only worker holds every partition
        assert entry["first_seen_ms"] <= entry["last_seen_ms"]
        shown = subprocess.run(
            [
                sys.executable,
                "-m",
                "stream.cli",
                "seen",
                device,
                "--worker",
                f"http://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert f"logins={rows}" in shown.stdout
    # A device this worker's table does not hold is answered from PostgreSQL
    # (where another worker's partition would have written it) and a device
    # seen nowhere is a 404.
    pipeline.execute("INSERT INTO seen_devices VALUES ('elsewhere', now(), now(), 7)")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/seen-devices/elsewhere/") as response:
        entry = json.load(response)
    assert (entry["login_count"], entry["source"]) == (7, "database")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/seen-devices/nowhere/")
    assert missing.value.code == 404


def test_existing_seven_column_table_is_migrated_keeping_its_rows(
    pipeline: IsolatedPipeline,
) -> None:
    pipeline.execute(
        """CREATE TABLE user_logins(
            user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
            masked_device_id varchar(256), locale varchar(32), app_version integer,
            create_date date);
           INSERT INTO user_logins VALUES
            ('old-1', 'ios', 'legacy-ip', 'legacy-dev', NULL, 1, '2020-01-01'),
            ('old-2', 'android', 'legacy-ip2', 'legacy-dev2', 'RU', 2, '2020-01-02')"""
    )
    fresh = RawMessage(new_id(), login(device_id="dev-new"))
    pipeline.launcher.start_worker("worker")
    pipeline.produce_raw([fresh])
    pipeline.wait_for_outcomes(3)

    old = pipeline.query(
        "SELECT user_id, masked_ip, app_version, create_date::text, message_id FROM user_logins"
        " WHERE user_id LIKE 'old-%%' ORDER BY user_id"
    )
    assert old == [
        ("old-1", "legacy-ip", 1, "2020-01-01", None),
        ("old-2", "legacy-ip2", 2, "2020-01-02", None),
    ]
    assert pipeline.query(
        "SELECT app_version, app_version_full FROM user_logins WHERE message_id = %s",
        (fresh.message_id,),
    ) == [(2, "2.3.0")]
    indexes = {
        r[0]
        for r in pipeline.query("SELECT indexname FROM pg_indexes WHERE tablename = 'user_logins'")
    }
    assert "user_logins_message_id_key" in indexes


def test_no_clear_ip_or_device_id_reaches_postgres_topics_or_logs(
    pipeline: IsolatedPipeline,
) -> None:
    ip, device = "203.0.113.77", "777-88-9999"
    messages = [
        RawMessage(new_id(), login(device_id=device, ip=ip)),
        RawMessage(new_id(), login(device_id=device, ip=ip, app_version=7)),  # rejected
        RawMessage(new_id(), f"{ip} {device} not json".encode()),  # rejected
    ]
    pipeline.launcher.start_worker("worker")
    pipeline.produce_raw(messages)
    pipeline.wait_for_outcomes(3)

    tables = pipeline.query(
        "SELECT (SELECT string_agg(t::text, '|') FROM user_logins t)"
        " || (SELECT string_agg(r::text, '|') FROM rejected_logins r)"
    )[0][0]
    masked = b"".join(v for _, v in pipeline.read_topic(pipeline.masked_topic))
    keys = b"".join(k or b"" for k, _ in pipeline.read_topic(pipeline.masked_topic))
    rejected = b"".join(v for _, v in pipeline.read_topic(pipeline.rejected_topic))
    pipeline.launcher.stop("worker")
    worker_log = pipeline.launcher.log("worker")
    for secret in (ip, device):
        assert secret not in tables
        assert secret.encode() not in masked + keys + rejected
        assert secret not in worker_log
    assert "masked=" in worker_log or "Ready" in worker_log  # the log is the worker's


def test_worker_stopped_mid_stream_and_restarted_loses_and_duplicates_nothing(
    pipeline: IsolatedPipeline,
) -> None:
    messages = [RawMessage(new_id(), login(device_id=f"dev-{i % 500}")) for i in range(6000)]
    pipeline.produce_raw(messages)
    pipeline.launcher.start_worker("worker")
    deadline = time.monotonic() + 120
    while pipeline.outcome_count() < 500:
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.2)
    assert pipeline.launcher.stop("worker", signal.SIGTERM) is not None
    assert pipeline.outcome_count() < len(messages), "stopped too late to test a restart"
    pipeline.launcher.start_worker("worker-again")
    pipeline.wait_for_outcomes(len(messages))

    total, distinct = pipeline.query(
        "SELECT count(*), count(DISTINCT message_id) FROM user_logins"
    )[0]
    assert total == distinct == len(messages)


def test_worker_serves_metrics_health_and_readiness(pipeline: IsolatedPipeline) -> None:
    messages = [RawMessage(new_id(), login(device_id=f"dev-{i % 7}")) for i in range(40)]
    messages.append(RawMessage(new_id(), b"not json"))
    pipeline.launcher.start_worker("worker")
    pipeline.produce_raw(messages)
    pipeline.wait_for_outcomes(len(messages))
    base = f"http://127.0.0.1:{pipeline.launcher.web_ports['worker']}"

    with urllib.request.urlopen(f"{base}/health") as response:
        assert json.load(response) == {"status": "ok", "problems": []}
    with urllib.request.urlopen(f"{base}/ready") as response:
        assert json.load(response)["ready"] is True
    # Offsets are committed every few seconds: lag drains to zero shortly after.
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{base}/metrics") as response:
            text = response.read().decode()
        lag_lines = [
            line for line in text.splitlines() if line.startswith("maskstream_consumer_lag{")
        ]
        if all(line.endswith(" 0.0") for line in lag_lines) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert any(f'topic="{pipeline.raw_topic}"' in line for line in lag_lines)
    assert all(line.endswith(" 0.0") for line in lag_lines), lag_lines
    assert "maskstream_rows_written_total 40.0" in text
    assert 'maskstream_rejections_total{reason="not JSON"} 1.0' in text
    assert 'maskstream_sink_batch_size_count{table="user_logins"}' in text
    assert "maskstream_sink_seconds_bucket" in text
    assert "199.172.111.135" not in text  # never a value, only counts


def test_json_logs_are_one_object_per_line_without_pii(pipeline: IsolatedPipeline) -> None:
    ip, device = "198.51.100.23", "555-66-7777"
    pipeline.launcher.start_worker("worker", extra_env={"MASKSTREAM_LOG_FORMAT": "json"})
    pipeline.produce_raw(
        [
            RawMessage(new_id(), login(device_id=device, ip=ip)),
            RawMessage(new_id(), f"{ip} {device}".encode()),
        ]
    )
    pipeline.wait_for_outcomes(2)
    pipeline.launcher.stop("worker")
    log = pipeline.launcher.log("worker")
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len(entries) > 10
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    assert any("Ready" in entry["message"] for entry in entries)
    assert ip not in log
    assert device not in log


def test_cli_logs_json_when_asked() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", "replay", "--from", "earliest", "--dry-run"],
        env={
            **os.environ,
            "MASKSTREAM_LOG_FORMAT": "json",
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    json_lines = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert json_lines, result.stderr
    assert all(json.loads(line)["level"] == "error" for line in json_lines)
    assert "unreachable" in result.stderr


def test_a_consumer_with_the_workers_metadata_age_sees_new_partitions_within_seconds(
    pipeline: IsolatedPipeline,
) -> None:
    """The mechanism behind the test above, made deterministic: partitions that
    appear after a group member joined are assigned only at its next metadata
    refresh (METADATA_MAX_AGE_MS for the workers; 5 minutes by Faust's default)."""
    asyncio.run(consume_from_added_partition(pipeline, timeout=30.0))


async def consume_from_added_partition(pipeline: IsolatedPipeline, timeout: float) -> None:
    topic = pipeline.masked_topic  # unused by this test otherwise
    consumer = pipeline.kafka.consumer(
        topic,
        group_id=f"{pipeline.name}-metadata",
        auto_offset_reset="earliest",
        metadata_max_age_ms=METADATA_MAX_AGE_MS,
    )
    await consumer.start()
    producer = pipeline.kafka.producer()
    try:
        while len(consumer.assignment()) < pipeline.partitions:
            await consumer.getmany(timeout_ms=500)
        async with pipeline.kafka.admin_session() as admin:
            await admin.create_partitions({topic: NewPartitions(pipeline.partitions + 1)})
        await producer.start()
        deadline = time.monotonic() + timeout
        while pipeline.partitions not in await producer.partitions_for(topic):
            assert time.monotonic() < deadline, "the broker never listed the new partition"
            await producer.client.force_metadata_update()  # it may not list it yet
        await producer.send_and_wait(topic, b"in the new partition", partition=pipeline.partitions)
        received: list[bytes] = []
        while not received:
            assert time.monotonic() < deadline, f"nothing from the new partition in {timeout:.0f} s"
            batches = await consumer.getmany(timeout_ms=1000)
            received += [record.value for records in batches.values() for record in records]
        assert received == [b"in the new partition"]
    finally:
        await consumer.stop()
        await producer.stop()
