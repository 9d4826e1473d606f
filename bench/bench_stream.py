"""Stream throughput: records on ``logins.raw`` -> rows in PostgreSQL.

Subject: Faust workers (parse, validate, mask, one transaction per batch for
rows, rejections and ``seen_devices``, the Faust table, the output topics),
timed from the moment the workers report ready until every row is in
``user_logins``.

Baseline, same run, same data, same stack: a plain aiokafka consumer that
reads the raw topic and COPYs ``json.loads`` of each body into a table, in
batches of the same size: no Faust, no masking, no device state, no output
topics. Target: the pipeline keeps at least half the baseline's rate.

Both sides get the same CPU budget of the 2-core machine: the baseline is one
process, the subject ``WORKERS`` processes (the way the pipeline scales), and
Kafka and PostgreSQL share the same cores in both.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from aiokafka import AIOKafkaConsumer

from bench.harness import Result
from stream.devstack.envfile import read_env_file
from stream.devstack.manager import Stack
from stream.ops.generate import Generator
from tests.support.sandbox import IsolatedPipeline, RawMessage

MESSAGES = int(os.environ.get("BENCH_STREAM_MESSAGES", "50000"))
WORKERS = int(os.environ.get("BENCH_STREAM_WORKERS", "2"))
BATCH = 1000


def valid_messages(count: int) -> list[RawMessage]:
    generator = Generator(seed=11, devices=count // 3)
    return [
        RawMessage(str(uuid.uuid4()), json.dumps(generator.login()).encode()) for _ in range(count)
    ]


async def baseline_consume_and_copy(pipe: IsolatedPipeline, expected: int) -> float:
    """Rate of a bare consume -> json.loads -> COPY loop over the same topic."""
    with psycopg.connect(pipe.database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE baseline_logins (message_id text, user_id text, device_type text,"
            " ip text, device_id text, locale text, app_version text)"
        )
    consumer = AIOKafkaConsumer(
        pipe.raw_topic,
        bootstrap_servers=pipe.stack_env["KAFKA_BOOTSTRAP_SERVERS"],
        group_id=f"{pipe.name}-baseline",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=BATCH,
    )
    aconn = await psycopg.AsyncConnection.connect(pipe.database_url)
    await consumer.start()
    started = time.perf_counter()
    written = 0
    try:
        while written < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
            records = [r for rs in batches.values() for r in rs]
            if not records:
                continue
            async with (
                aconn.cursor() as cur,
                cur.copy(
                    "COPY baseline_logins (message_id, user_id, device_type, ip, device_id,"
                    " locale, app_version) FROM STDIN"
                ) as copy,
            ):
                for record in records:
                    body = json.loads(record.value)
                    await copy.write_row(
                        (
                            record.key.decode(),
                            body["user_id"],
                            body["device_type"],
                            body["ip"],
                            body["device_id"],
                            body["locale"],
                            body["app_version"],
                        )
                    )
            await aconn.commit()
            await consumer.commit()
            written += len(records)
        return written / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await aconn.close()


def rate_once_ready(
    pipe: IsolatedPipeline,
    expected: int,
    progress: Callable[[], int],
    app: str = "stream.app",
    extra_env: dict[str, str] | None = None,
) -> float:
    """Start ``WORKERS`` workers of *app*; rate from all ready until *progress*
    reaches *expected*. The workers are stopped afterwards."""
    names = [f"{app}-{n}" for n in range(WORKERS)]
    for name in names:
        pipe.launcher.start_worker(name, extra_env, app=app)
    deadline = time.monotonic() + 120
    while not all("Worker]: Ready" in pipe.launcher.log(name) for name in names):
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.05)
    started = time.perf_counter()
    while (done := progress()) < expected:
        assert time.monotonic() < deadline + 600, f"only {done} of {expected} done"
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    for name in names:
        pipe.launcher.stop(name)
    return expected / elapsed


def faust_floor_rate(pipe: IsolatedPipeline, expected: int) -> float:
    """Rate of Faust workers whose agent does nothing (bench/faust_floor.py)."""
    count_dir = pipe.launcher.log_dir / "floor-counts"
    count_dir.mkdir(parents=True, exist_ok=True)

    def counted() -> int:
        return sum(int(f.read_text() or 0) for f in count_dir.glob("*.count"))

    env = {"FLOOR_COUNT_DIR": str(count_dir), "MASKSTREAM_APP_ID": f"{pipe.name}-floor"}
    return rate_once_ready(pipe, expected, counted, app="bench.faust_floor", extra_env=env)


def run() -> list[Result]:
    stack = Stack.from_settings()
    env = read_env_file(stack.env_file)
    with IsolatedPipeline(env, Path(stack.dir) / "bench", partitions=8) as pipe:
        pipe.produce_raw(valid_messages(MESSAGES))
        baseline = asyncio.run(baseline_consume_and_copy(pipe, MESSAGES))
        floor = faust_floor_rate(pipe, MESSAGES)
        subject = rate_once_ready(pipe, MESSAGES, pipe.row_count)
    return [
        Result(
            "stream",
            f"faust pipeline ({WORKERS} workers)",
            subject,
            "aiokafka consume + COPY",
            baseline,
            "rows",
            ">= 0.5",
        ),
        # Not a target of ours: the ceiling any one Faust hop could reach here.
        Result(
            "stream",
            f"do-nothing faust agent ({WORKERS} w)",
            floor,
            "aiokafka consume + COPY",
            baseline,
            "records",
            ">= 0.5",
        ),
    ]
