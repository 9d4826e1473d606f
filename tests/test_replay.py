"""`maskstream replay`: rewinds without duplicates, refuses while workers run,
and rebuilds into a fresh table leaving user_logins untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from stream.ops.generate import Generator
from stream.ops.replay import parse_start
from tests.support.sandbox import IsolatedPipeline, RawMessage

pytestmark = pytest.mark.services

DAY_MS = 86_400_000
OLD_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def messages(count: int, sent_at_ms: int, seed: int) -> list[RawMessage]:
    generator = Generator(seed=seed, devices=max(1, count // 4))
    return [
        RawMessage(str(uuid.uuid4()), json.dumps(generator.login()).encode(), sent_at_ms + i)
        for i in range(count)
    ]


def replay(pipe: IsolatedPipeline, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "replay", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **pipe.env, "MASKSTREAM_STACK_DIR": str(pipe.launcher.log_dir)},
        timeout=300,
    )


def test_parse_start_accepts_earliest_and_iso_times() -> None:
    assert parse_start("earliest") is None
    assert parse_start("2023-11-14T22:13:20Z") == OLD_MS
    assert parse_start("2023-11-14T22:13:20+00:00") == OLD_MS


def test_replay_refuses_while_workers_run_then_replays_without_duplicates(
    pipeline: IsolatedPipeline,
) -> None:
    sent = messages(400, OLD_MS, seed=1)
    pipeline.produce_raw(sent)
    pipeline.launcher.start_worker("worker")
    pipeline.wait_for_outcomes(len(sent))

    refused = replay(pipeline, "--from", "earliest", "--wait", "2")
    assert refused.returncode == 2
    assert "running; stop them first" in refused.stderr
    assert "--wait covers that" in refused.stderr

    pipeline.launcher.stop("worker")
    done = replay(pipeline, "--from", "earliest")
    assert done.returncode == 0, done.stderr
    assert f"{len(sent)} records will be processed again" in done.stdout

    pipeline.launcher.start_worker("worker-again")
    later = messages(100, OLD_MS + DAY_MS, seed=2)  # new data keeps arriving
    pipeline.produce_raw(later)
    pipeline.wait_for_outcomes(len(sent) + len(later))
    log = pipeline.launcher.log("worker-again")
    total, distinct = pipeline.query(
        "SELECT count(*), count(DISTINCT message_id) FROM user_logins"
    )[0]
    assert total == distinct == len(sent) + len(later)
    assert pipeline.device_mismatches() == {}, "a replay must add nothing to seen_devices"
    # The replayed messages really were processed again (and skipped as present).
    assert "duplicates_skipped=" in log or pipeline.outcome_count() == total


def test_replay_from_a_time_starts_at_that_time(pipeline: IsolatedPipeline) -> None:
    early, late = messages(50, OLD_MS, seed=3), messages(70, OLD_MS + DAY_MS, seed=4)
    pipeline.produce_raw(early + late)
    result = replay(pipeline, "--from", "2023-11-15T12:00:00Z", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"{len(late)} records will be processed again" in result.stdout


def test_replay_into_a_new_table_leaves_user_logins_untouched(pipeline: IsolatedPipeline) -> None:
    sent = messages(300, OLD_MS, seed=5)
    bad = [RawMessage(str(uuid.uuid4()), b"not json", OLD_MS)]
    pipeline.produce_raw(sent + bad)
    pipeline.launcher.start_worker("worker")
    pipeline.wait_for_outcomes(len(sent) + 1)
    pipeline.execute(f"DELETE FROM user_logins WHERE message_id = '{sent[0].message_id}'")
    before = pipeline.query(
        "SELECT md5(string_agg(message_id, ',' ORDER BY message_id)) FROM user_logins"
    )

    result = replay(pipeline, "--from", "earliest", "--into", "logins_rebuilt")
    assert result.returncode == 0, result.stderr
    assert "logins_rebuilt: 300 rows; logins_rebuilt_rejected: 1 rejections" in result.stdout
    after = pipeline.query(
        "SELECT md5(string_agg(message_id, ',' ORDER BY message_id)) FROM user_logins"
    )
    assert after == before, "the rebuild must not write to user_logins"
    masked_match = pipeline.query(
        "SELECT count(*) FROM logins_rebuilt r JOIN user_logins u USING (message_id)"
        " WHERE r.masked_device_id = u.masked_device_id"
    )
    assert masked_match == [(299,)]
    assert pipeline.device_mismatches("logins_rebuilt", "logins_rebuilt_devices") == {}

    again = replay(pipeline, "--from", "earliest", "--into", "logins_rebuilt")
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_a_busy_device_counts_exactly_across_batches_a_rebalance_and_a_replay(
    pipeline: IsolatedPipeline,
) -> None:
    """One device in hundreds of small batches, processed by one worker, then
    two (a rebalance), then the other alone, then replayed from the start:
    both seen_devices tables count exactly its rows, and so do the others'."""
    pipeline.env["MASKSTREAM_BATCH_SIZE"] = "25"

    def wave(tag: str, busy: int, others: int) -> list[RawMessage]:
        bodies = [login_body("kiosk-0001") for _ in range(busy)]
        bodies += [login_body(f"{tag}-{n % 40}") for n in range(others)]
        return [RawMessage(str(uuid.uuid4()), body, OLD_MS + i) for i, body in enumerate(bodies)]

    sent = wave("a", 600, 200)
    pipeline.launcher.start_worker("worker-1")
    pipeline.produce_raw(sent)
    pipeline.wait_for_outcomes(len(sent))
    pipeline.launcher.start_worker("worker-2")  # the group rebalances mid-stream
    second = wave("b", 600, 200)
    pipeline.produce_raw(second[:400])
    pipeline.launcher.stop("worker-1")  # and again: worker-2 takes every partition
    pipeline.produce_raw(second[400:])
    sent += second
    pipeline.wait_for_outcomes(len(sent), timeout=180)
    pipeline.launcher.stop("worker-2")
    assert replay(pipeline, "--from", "earliest", "--wait", "60").returncode == 0
    pipeline.launcher.start_worker("worker-3")
    pipeline.wait_until_caught_up(timeout=180)

    busy = pipeline.query(
        "SELECT d.login_count, (SELECT count(*) FROM user_logins u"
        "  WHERE u.masked_device_id = d.masked_device_id)"
        " FROM seen_devices d ORDER BY d.login_count DESC LIMIT 1"
    )
    assert busy == [(1200, 1200)]
    assert pipeline.row_count() == len(sent)
    assert pipeline.device_mismatches() == {}
    assert pipeline.changelog_mismatches() == {}


def login_body(device_id: str) -> bytes:
    body = {
        "user_id": str(uuid.uuid4()),
        "app_version": "2.3.0",
        "device_type": "android",
        "ip": "198.51.100.7",
        "locale": None,
        "device_id": device_id,
    }
    return json.dumps(body).encode()
