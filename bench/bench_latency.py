"""Sent -> row latency at a steady rate, with exactly-once outputs and without.

Raw records are put on the raw topic at ``BENCH_LATENCY_RATE`` a second (500
by default) for ``BENCH_LATENCY_SECONDS`` (20), each stamped with the moment
it is sent (its SQS ``SentTimestamp``), through two workers; each row's
``ingested_at - sent_at`` is its latency. The subject is the default worker
(outputs in Kafka transactions); the baseline, in the same run on the same
stack, the same workers with ``MASKSTREAM_EXACTLY_ONCE=false``. Target: p99
at most 1 s, which the ratio reads as rows-per-second-of-p99 against 1 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

from bench.harness import Result
from stream.devstack.envfile import read_env_file
from stream.devstack.manager import Stack
from tests.support.sandbox import IsolatedPipeline, RawMessage
from tests.test_readiness import wait_for

RATE = int(os.environ.get("BENCH_LATENCY_RATE", "500"))
SECONDS = int(os.environ.get("BENCH_LATENCY_SECONDS", "20"))
WORKERS = 2


def login(n: int) -> bytes:
    return json.dumps(
        {
            "user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae",
            "app_version": "2.3.0",
            "device_type": "android",
            "ip": f"10.{n % 250}.{n // 250 % 250}.1",
            "locale": "RU",
            "device_id": f"dev-{n % 997}",
        }
    ).encode()


async def feed(pipe: IsolatedPipeline) -> int:
    """RATE records a second for SECONDS through one producer, each stamped
    with the moment it is handed to Kafka; how many."""
    producer = pipe.kafka.producer(acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    sent, started = 0, time.monotonic()
    try:
        for tick in range(SECONDS * 10):  # a tenth of each second's records every 0.1 s
            await asyncio.sleep(max(0.0, started + tick / 10 - time.monotonic()))
            for _ in range(RATE // 10):
                message = RawMessage(str(uuid.uuid4()), login(sent))
                await producer.send(
                    pipe.raw_topic,
                    message.body,
                    key=f"dev-{sent % 997}".encode(),
                    timestamp_ms=message.sent_at_ms,
                    headers=message.headers(),
                )
                sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def p99_seconds(pipe: IsolatedPipeline, extra_env: dict[str, str]) -> float:
    """Feed *pipe* at RATE for SECONDS through WORKERS workers; the p99 latency."""
    for n in range(WORKERS):
        pipe.launcher.start_worker(f"worker-{n}", extra_env=extra_env)
    for n in range(WORKERS):  # both in the group, the rebalance done, before any timing
        port = pipe.launcher.web_ports[f"worker-{n}"]
        wait_for(f"http://127.0.0.1:{port}/ready", 200, 180, f"http://127.0.0.1:{port}/health")
    pipe.produce_raw([RawMessage(str(uuid.uuid4()), login(0))])  # warm up
    pipe.wait_for_outcomes(1, timeout=180)
    sent = 1 + asyncio.run(feed(pipe))
    pipe.wait_for_outcomes(sent, timeout=180)
    ((p99,),) = pipe.query(
        "SELECT percentile_cont(0.99) WITHIN GROUP"
        " (ORDER BY extract(epoch FROM ingested_at - sent_at)) FROM user_logins"
    )
    return float(p99)


def run() -> list[Result]:
    stack = Stack.from_settings()
    env = read_env_file(stack.env_file)
    measured = {}
    for label, extra in (
        ("exactly once", {}),
        ("at least once", {"MASKSTREAM_EXACTLY_ONCE": "false"}),
    ):
        with IsolatedPipeline(env, Path(stack.dir) / "bench") as pipe:
            measured[label] = p99_seconds(pipe, extra)
        print(f"  {label}: p99 sent -> row {measured[label] * 1000:.0f} ms", flush=True)
    return [
        Result(
            "latency p99",
            f"exactly once, {RATE} msgs/s",
            1 / measured["exactly once"],
            "1 s",
            1.0,
            "1/s",
            ">= 1.0",
        ),
        Result(
            "latency p99",
            f"exactly once, {RATE} msgs/s",
            1 / measured["exactly once"],
            "at least once, same run",
            1 / measured["at least once"],
            "1/s",
            ">= 0.5",
        ),
    ]
