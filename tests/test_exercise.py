"""The exercise's own environment: a query-protocol-only SQS and PostgreSQL 10.

The exercise ships a LocalStack older than 3.0, which speaks only SQS's query
protocol, and PostgreSQL 10 with a seven-column ``user_logins``. The stack's
``--exercise`` servers reproduce both (ElasticMQ 1.3.9, PostgreSQL 10.23), and
these tests run the real pipeline against them with default settings: the
SQS client must find the protocol by itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.ops.generate import Generator
from tests.support.sandbox import IsolatedPipeline
from tests.support.sqs import stack_servers
from tests.test_faults import count_valid

pytestmark = pytest.mark.services

SEVEN_COLUMNS = """
CREATE TABLE user_logins(
    user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
    masked_device_id varchar(256), locale varchar(32), app_version integer,
    create_date date);
INSERT INTO user_logins VALUES
    ('old-1', 'ios', 'legacy-ip', 'legacy-dev', NULL, 1, '2020-01-01'),
    ('old-2', 'android', 'legacy-ip2', 'legacy-dev2', 'RU', 2, '2020-01-02');
"""


@pytest.fixture
def exercise(stack_env: dict[str, str], tmp_path: Path) -> Iterator[IsolatedPipeline]:
    """A pipeline whose SQS is the query-only server and whose database is PostgreSQL 10."""
    env = {
        **stack_env,
        "AWS_ENDPOINT_URL_SQS": stack_env["STACK_SQS_QUERY_ENDPOINT"],
        "DATABASE_URL": stack_env["STACK_POSTGRES10_URL"],
    }
    with IsolatedPipeline(env, tmp_path, partitions=2) as pipe:
        yield pipe


def test_the_pipeline_drains_a_query_only_sqs_into_the_exercise_table_on_postgres_10(
    exercise: IsolatedPipeline,
) -> None:
    assert exercise.query("SHOW server_version_num")[0][0].startswith("10")
    exercise.execute(SEVEN_COLUMNS)
    exercise.create_queue()
    lines = [line.encode() for line in Generator(seed=7, devices=60).lines(600)]
    valid = count_valid(lines)
    assert exercise.send_to_sqs([line + b"\n" for line in lines]) == len(lines)

    exercise.launcher.start_worker("worker")
    bridge = exercise.launcher.start_bridge("bridge", "--exit-when-idle", "5")
    exercise.wait_for_outcomes(len(lines), timeout=180)

    assert bridge.wait(timeout=60) == 0
    assert "speaks the query protocol" in exercise.launcher.log("bridge")
    assert exercise.queue_depth() == 0  # nothing stranded in flight
    new_rows = exercise.query("SELECT count(*) FROM user_logins WHERE message_id IS NOT NULL")
    assert new_rows == [(valid,)]
    assert exercise.query(
        "SELECT user_id, masked_ip, app_version, create_date::text FROM user_logins"
        " WHERE message_id IS NULL ORDER BY user_id"
    ) == [("old-1", "legacy-ip", 1, "2020-01-01"), ("old-2", "legacy-ip2", 2, "2020-01-02")]
    assert exercise.query("SELECT count(*) FROM rejected_logins") == [(len(lines) - valid,)]
    assert (
        exercise.device_mismatches()
        == {
            "legacy-dev": (None, 1),  # rows written before maskstream are not its devices
            "legacy-dev2": (None, 1),
        }
        or not exercise.device_mismatches()
    )


def test_status_reads_the_query_only_queue(stack_env: dict[str, str]) -> None:
    server = stack_servers(stack_env)["query"]
    with server.queue("status") as url:
        server.send(url, ["a", "b", "c"])
        result = subprocess.run(
            [sys.executable, "-m", "stream.cli", "status"],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **os.environ,
                "SQS_QUEUE_URL": url,
                "AWS_ENDPOINT_URL_SQS": server.endpoint,
            },
        )
    assert "messages: 3 visible, 0 in flight, 0 delayed" in result.stdout, result.stdout


@pytest.mark.parametrize("protocol", ["json", "query"])
def test_a_bridge_stopped_mid_stream_loses_and_duplicates_nothing_on_either_protocol(
    stack_env: dict[str, str], tmp_path: Path, protocol: str
) -> None:
    """Default settings (the protocol found by the client), against the JSON
    ElasticMQ and the query-only one; the bridge gets SIGTERM a third of the
    way through and a new one takes over."""
    env = dict(stack_env)
    if protocol == "query":
        env["AWS_ENDPOINT_URL_SQS"] = stack_env["STACK_SQS_QUERY_ENDPOINT"]
    with IsolatedPipeline(env, tmp_path, partitions=2) as pipe:
        pipe.create_queue()
        lines = [line.encode() for line in Generator(seed=11, devices=300).lines(4000)]
        valid = count_valid(lines)
        assert pipe.send_to_sqs([line + b"\n" for line in lines]) == len(lines)

        pipe.launcher.start_worker("worker")
        pipe.launcher.start_bridge("bridge")
        pipe.wait_for_outcomes(len(lines) // 3, timeout=180)
        assert pipe.launcher.stop("bridge") == 0  # SIGTERM: finishes what it holds
        again = pipe.launcher.start_bridge("bridge-again", "--exit-when-idle", "5")
        pipe.wait_for_outcomes(len(lines), timeout=240)

        assert again.wait(timeout=60) == 0
        assert f"speaks the {protocol} protocol" in pipe.launcher.log("bridge-again")
        assert pipe.queue_depth() == 0
        assert pipe.query("SELECT count(*), count(DISTINCT message_id) FROM user_logins") == [
            (valid, valid)
        ]
        assert pipe.query("SELECT count(*) FROM rejected_logins") == [(len(lines) - valid,)]
        assert pipe.device_mismatches() == {}
