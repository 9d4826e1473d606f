"""The broker benchmark's arithmetic, without a stack (quick, no services)."""

from __future__ import annotations

import pytest

from bench.bench_brokers import FlatOut
from bench.kafka_requests import per_message


def test_the_pipelines_cpu_leaves_out_the_local_sqs_only() -> None:
    run = FlatOut(
        rate=5000.0,
        cpu={
            "brokers": 60e-6,
            "bridge": 64e-6,
            "workers": 100e-6,
            "postgres": 34e-6,
            "elasticmq": 82e-6,
        },
    )
    assert run.pipeline_cpu() == pytest.approx(258e-6)
    line = run.line("now")
    assert "5000 msgs/s" in line
    assert "elasticmq 82" in line
    assert line.endswith("the pipeline without ElasticMQ 258")


def test_requests_a_message_are_by_type_most_first_without_the_fetch_total() -> None:
    before = {"Produce": 100, "Fetch": 1000, "FetchFollower": 700, "FetchConsumer": 300}
    after = {
        "Produce": 300,
        "Fetch": 2400,
        "FetchFollower": 1500,
        "FetchConsumer": 600,
        "EndTxn": 10,
    }
    spent = per_message(before, after, 1000)
    assert spent == pytest.approx(
        {"FetchFollower": 0.8, "FetchConsumer": 0.3, "Produce": 0.2, "EndTxn": 0.01}
    )
    assert list(spent) == ["FetchFollower", "FetchConsumer", "Produce", "EndTxn"]
