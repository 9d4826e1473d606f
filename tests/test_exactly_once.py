"""Exactly-once outputs on the real Kafka and PostgreSQL: each SQS message id
at most once on ``logins.masked`` / ``logins.rejected``, and once its row or
rejection is committed, exactly once, as read_committed consumers see them
(and, in these cases, read_uncommitted ones too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.support.sandbox import IsolatedPipeline, RawMessage
from tests.test_local_state import logins

pytestmark = pytest.mark.services


def with_rejections(count: int) -> list[RawMessage]:
    return [RawMessage(str(uuid.uuid4()), b"not json") for _ in range(count)]


def wait_until_committed(pipeline: IsolatedPipeline, timeout: float = 60.0) -> None:
    """Until the workers' committed offsets reach the end of the raw topic
    (copies add no row, so only the offsets tell they were processed)."""
    deadline = time.monotonic() + timeout
    while sum(pipeline.lag().values()):
        assert time.monotonic() < deadline, f"raw records left: {pipeline.lag()}"
        time.sleep(0.5)


def assert_outputs_exact(pipeline: IsolatedPipeline) -> None:
    assert pipeline.output_mismatches() == {}
    uncommitted = pipeline.output_ids("read_uncommitted")
    assert all(n == 1 for counts in uncommitted.values() for n in counts.values())


def test_a_worker_killed_between_its_commit_and_its_kafka_writes(
    pipeline: IsolatedPipeline,
) -> None:
    """Its batch is in PostgreSQL and nowhere in Kafka; the next worker finds
    the rows written by these very raw records and publishes them, once."""
    messages = logins(range(20), 2) + with_rejections(5)
    pipeline.launcher.start_worker("dying", app="tests.support.dying_worker")
    pipeline.produce_raw(messages)
    assert pipeline.launcher.children["dying"].wait(timeout=120) == 137
    committed = pipeline.outcome_count()
    assert committed > 0  # its first batch did commit
    assert pipeline.output_ids() == {"masked": {}, "rejected": {}}

    pipeline.launcher.start_worker("worker")
    pipeline.wait_for_outcomes(len(messages))
    wait_until_committed(pipeline)

    assert_outputs_exact(pipeline)
    assert sum(pipeline.output_ids()["masked"].values()) == 40
    assert sum(pipeline.output_ids()["rejected"].values()) == 5


def test_a_worker_stopped_with_its_transactions_open_commits_them(
    pipeline: IsolatedPipeline,
) -> None:
    """SIGTERM while every raw partition's transaction has a minute to go:
    the stopping worker commits them, so their outputs are there for
    read_committed consumers and the raw offsets at the end, with no worker
    left to publish or process anything again."""
    messages = logins(range(30), 2) + with_rejections(5)
    pipeline.launcher.start_worker("worker", {"MASKSTREAM_TRANSACTION_SECONDS": "60"})
    pipeline.produce_raw(messages)
    pipeline.wait_for_outcomes(len(messages))
    assert pipeline.output_ids() == {"masked": {}, "rejected": {}}  # still open

    assert pipeline.launcher.stop("worker") == 0

    assert sum(pipeline.lag().values()) == 0, f"offsets not committed: {pipeline.lag()}"
    assert_outputs_exact(pipeline)
    assert sum(pipeline.output_ids()["masked"].values()) == 60
    assert sum(pipeline.output_ids()["rejected"].values()) == 5


def test_a_transaction_of_many_batches_that_fails_to_commit(
    pipeline: IsolatedPipeline,
) -> None:
    """A partition's transaction takes batches for a while; when its commit
    fails, every batch it took is aborted, and the worker reads them again
    from the committed offset and publishes each once (read_uncommitted
    consumers also see the aborted copies, which is why they are not asked)."""
    messages = logins(range(60), 2) + with_rejections(10)
    slow_commits = {"MASKSTREAM_BATCH_SIZE": "5", "MASKSTREAM_TRANSACTION_SECONDS": "3"}
    pipeline.launcher.start_worker("aborting", slow_commits, app="tests.support.aborting_worker")
    pipeline.produce_raw(messages)
    pipeline.wait_for_outcomes(len(messages))
    wait_until_committed(pipeline)

    assert pipeline.output_mismatches() == {}
    assert sum(pipeline.output_ids()["masked"].values()) == 120
    assert sum(pipeline.output_ids()["rejected"].values()) == 10
    assert "committing its outputs failed" in pipeline.launcher.log("aborting")


def test_a_raw_topic_holding_the_same_sqs_message_twice(pipeline: IsolatedPipeline) -> None:
    """A bridge that died before deleting forwards a message again: in the same
    batch, or in a later one; each message id is published once."""
    messages = logins(range(10), 1) + with_rejections(3)
    pipeline.launcher.start_worker("worker")
    pipeline.produce_raw(messages + messages[:4] + messages[-1:])  # copies in one batch
    pipeline.wait_for_outcomes(len(messages))
    pipeline.produce_raw(messages)  # every one again, later
    pipeline.produce_raw(logins(range(10, 12), 1))  # and a marker behind them
    pipeline.wait_for_outcomes(len(messages) + 2)
    wait_until_committed(pipeline)

    assert_outputs_exact(pipeline)
    masked = pipeline.output_ids()["masked"]
    assert sorted(masked) == sorted(
        json.loads(value)["message_id"]
        for _key, value in pipeline.read_topic(pipeline.masked_topic)
    )
    assert len(masked) == 12 and len(pipeline.output_ids()["rejected"]) == 3


def replay(pipeline: IsolatedPipeline, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "replay", "--from", "earliest", "--wait", "60", *args],
        env={**os.environ, **pipeline.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_a_replay_writes_again_and_publishes_again_only_when_asked(
    pipeline: IsolatedPipeline,
) -> None:
    """`maskstream replay` marks how far the outputs were published: the
    replayed records go to PostgreSQL (nothing new) and not to the output
    topics; `--republish` publishes them once more."""
    messages = logins(range(10), 1) + with_rejections(2)
    pipeline.launcher.start_worker("worker")
    pipeline.produce_raw(messages)
    pipeline.wait_for_outcomes(len(messages))
    wait_until_committed(pipeline)

    pipeline.launcher.stop("worker")
    replay(pipeline)
    pipeline.launcher.start_worker("worker")
    wait_until_committed(pipeline)
    assert_outputs_exact(pipeline)

    pipeline.launcher.stop("worker")
    replay(pipeline, "--republish")
    pipeline.launcher.start_worker("worker")
    wait_until_committed(pipeline)
    ids = pipeline.output_ids()
    assert set(ids["masked"].values()) == {2} and set(ids["rejected"].values()) == {2}
    assert pipeline.outcome_count() == len(messages)
