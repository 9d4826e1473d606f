"""CPU per message of one worker, PostgreSQL and Kafka, and whether it grows with history.

The same 50,000 raw records (realistic, about one in eight invalid) are put
on the raw topic of two fresh pipelines. One worker processes each, from its
"Ready" line until every record has its row or rejection; the CPU time the
worker, the PostgreSQL server and the Kafka broker spent meanwhile, divided
by the records, is the cost per message:

- ``fresh``: empty tables;
- ``history``: every device already has 40 times the rows the run gives it
  in ``user_logins`` (and ``seen_devices`` backfilled from them), as after
  long operation.

Cost must not grow with history: the target is ``history`` <= 1.25x
``fresh`` for the worker and PostgreSQL together. The worker itself must
spend at most 55 µs a message in both cases, and a do-nothing Faust agent
(``floor``, bench/faust_floor.py) shows what any Faust hop costs here.
``python -m bench cost``; BENCH_COST_MESSAGES, BENCH_COST_HISTORY and
BENCH_COST_WARM_UP change the sizes (``BENCH_COST_WARM_UP=0
BENCH_COST_MESSAGES=20000 BENCH_COST_HISTORY=100`` measures as this
benchmark first did, a worker's start-up included).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg

from bench.bench_history import ensure_days
from bench.cpu import cpu_seconds, tree_cpu_seconds
from bench.harness import Result
from stream.common import settings as settings_module
from stream.common.canonical import canonical_device_id
from stream.core.keyring import load_keyring
from stream.core.masking import Masker
from stream.core.validation import InvalidLogin, parse_login
from stream.devstack.envfile import read_env_file
from stream.devstack.manager import Stack
from stream.devstack.processes import read_pid
from stream.ops.generate import Generator
from stream.postgres.queries import scalar
from stream.postgres.schema import ensure_schema
from tests.support.sandbox import IsolatedPipeline, RawMessage

# Enough records that each case runs for several seconds (CPU time is read
# in 10 ms ticks, and a short run is at the mercy of one background task).
MESSAGES = int(os.environ.get("BENCH_COST_MESSAGES", "50000"))
HISTORY_FACTOR = int(os.environ.get("BENCH_COST_HISTORY", "40"))
# The first tenth of the records is not measured: a worker's start (its
# first connections, the schema check, the first fetches) is a fixed cost,
# which a short run spreads to several µs a message and a run of a million
# to nothing. What is measured is the steady cost a message adds.
WARM_UP = int(os.environ.get("BENCH_COST_WARM_UP", str(MESSAGES // 10)))
SEED = 21
# The day of the history's rows (the run's are today's).
HISTORY_DATE = date(2024, 1, 1)
# Kafka deletes the previous pipeline's topics in the background, and the
# history setup leaves PostgreSQL busy for a moment: neither is the run's
# work. The broker's CPU rate over this pause is subtracted from its cost.
SETTLE_SECONDS = 5.0
# What a worker may spend on a message (issue 23), in µs of CPU.
WORKER_TARGET_US = 55.0
# CPU seconds per second below which the broker counts as idle.
QUIET_BROKER_CPU = 0.05


@dataclass(frozen=True)
class Cost:
    """CPU seconds per message of each process, over one run."""

    worker: float
    postgres: float
    kafka: float
    seconds: float
    messages: int = 0  # how many were counted while measuring

    @property
    def rate(self) -> float:
        """Messages per second of wall time while measuring."""
        return self.messages / self.seconds

    def line(self, label: str) -> str:
        us = 1e6
        return (
            f"{label:<8} worker {self.worker * us:6.1f} µs/msg  postgres {self.postgres * us:6.1f}"
            f"  kafka {self.kafka * us:6.1f}  worker+postgres"
            f" {(self.worker + self.postgres) * us:6.1f}  ({self.seconds:.1f} s wall)"
        )


def workload() -> tuple[list[RawMessage], Counter[str]]:
    """The records, and how many valid logins each device id has among them."""
    generator = Generator(seed=SEED, devices=MESSAGES // 4)
    messages, per_device = [], Counter[str]()
    for line in generator.lines(MESSAGES):
        body = line.encode()
        messages.append(RawMessage(str(uuid.uuid4()), body))
        with contextlib.suppress(InvalidLogin):
            per_device[parse_login(body).device_id] += 1
    return messages, per_device


def add_history(pipe: IsolatedPipeline, per_device: Counter[str], factor: int) -> int:
    """Give every device *factor* times its rows of the run, older than the run,
    then backfill seen_devices and settle the tables (vacuum, checkpoint) so
    that none of that setup is billed to the run."""
    masker = Masker(load_keyring(settings_module.load()))
    tokens = [
        (masker.mask("device_id", canonical_device_id(d)), n * factor)
        for d, n in per_device.items()
    ]
    with psycopg.connect(pipe.database_url, autocommit=True) as conn:
        ensure_schema(conn)
        ensure_days(conn, "user_logins", HISTORY_DATE, 1)  # a partitioned table's
        conn.execute("DROP TABLE seen_devices")  # re-created below, backfilled from history
        conn.execute("CREATE TEMP TABLE history_devices (token text, rows int)")
        with conn.cursor().copy("COPY history_devices FROM STDIN") as copy:
            for token, rows in tokens:
                copy.write_row((token, rows))
        conn.execute(
            """INSERT INTO user_logins (message_id, user_id, device_type, masked_ip,
                   masked_device_id, locale, app_version, app_version_full, create_date, sent_at)
               SELECT 'history-' || h.token || '-' || n, 'u', 'android', 'ip', h.token, NULL,
                      1, '1.0', %s,
                      TIMESTAMPTZ '2024-01-01' + n * INTERVAL '1 minute'
                 FROM history_devices h, generate_series(1, h.rows) AS n""",
            (HISTORY_DATE,),
        )
        ensure_schema(conn)
        conn.execute("VACUUM ANALYZE user_logins")
        conn.execute("VACUUM ANALYZE seen_devices")
        conn.execute("CHECKPOINT")
        return int(scalar(conn, "SELECT count(*) FROM user_logins"))


def outcomes(pipe: IsolatedPipeline) -> int:
    """Rows plus rejections, read from seen_devices (its counts are the rows,
    kept in the same transactions): a count over user_logins itself would
    cost PostgreSQL more with history than the work being measured."""
    return int(
        pipe.query(
            "SELECT coalesce(sum(login_count), 0) + (SELECT count(*) FROM rejected_logins)"
            " FROM seen_devices"
        )[0][0]
    )


def measure(
    pipe: IsolatedPipeline,
    stack: Stack,
    progress: Callable[[], int],
    messages: int,
    app: str = "stream.app",
    extra_env: dict[str, str] | None = None,
    warm_up: int = 0,
) -> Cost:
    """Start one worker of *app*; CPU of worker, PostgreSQL and Kafka from its
    Ready line (or, with *warm_up*, from when *progress* has counted that many
    messages) until *progress* reaches *messages*, per message counted meanwhile."""
    return measure_process(
        pipe,
        stack,
        start=lambda: pipe.launcher.start_worker("worker", extra_env, app=app),
        ready=lambda: "Worker]: Ready" in pipe.launcher.log("worker"),
        progress=progress,
        messages=messages,
        warm_up=warm_up,
        profile=lambda pid: profile(pid, app),
    )


def measure_process(
    pipe: IsolatedPipeline,
    stack: Stack,
    start: Callable[[], subprocess.Popen],
    ready: Callable[[], bool],
    progress: Callable[[], int],
    messages: int,
    warm_up: int = 0,
    profile: Callable[[int], subprocess.Popen | None] | None = None,
) -> Cost:
    """Start a child of *pipe*'s launcher with *start* (a worker, or another
    tool doing the same work); CPU of it, PostgreSQL and Kafka from when it is
    *ready* and *progress* has counted *warm_up* messages until it counts
    *messages*, per message counted in between."""
    postgres_pid = read_pid(stack.service("postgres").pid_file)
    kafka_pid = read_pid(stack.service("kafka").pid_file)
    assert postgres_pid and kafka_pid, "the stack is not running"
    idle_start = cpu_seconds(kafka_pid)
    time.sleep(SETTLE_SECONDS)
    kafka_idle_rate = (cpu_seconds(kafka_pid) - idle_start) / SETTLE_SECONDS
    child = start()
    deadline = time.monotonic() + 180
    while not ready():
        assert child.poll() is None, f"the child exited: {pipe.launcher.failed()}"
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.02)
    while warm_up and progress() < warm_up:
        assert child.poll() is None, f"the child exited: {pipe.launcher.failed()}"
        assert time.monotonic() < deadline + 900, "the child did not warm up"
        time.sleep(0.05)
    profiler = profile(child.pid) if profile is not None else None
    before = (cpu_seconds(child.pid), tree_cpu_seconds(postgres_pid), cpu_seconds(kafka_pid))
    started, counted_before = time.perf_counter(), progress()
    while (counted := progress()) < messages:
        assert child.poll() is None, f"the child exited: {pipe.launcher.failed()}"
        assert time.monotonic() < deadline + 900, "the child did not finish"
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    after = (cpu_seconds(child.pid), tree_cpu_seconds(postgres_pid), cpu_seconds(kafka_pid))
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=60)
    name = next(n for n, c in pipe.launcher.children.items() if c is child)
    pipe.launcher.stop(name)
    child_s, postgres_s, kafka_s = (b - a for a, b in zip(before, after, strict=True))
    # The broker's own background work (deleting the previous run's topics,
    # log cleaning) at the rate measured just before the run, is not the run's.
    kafka_s = max(0.0, kafka_s - kafka_idle_rate * seconds)
    # Records already processed when the CPU was first read (a worker may
    # take its first batch before it logs Ready) are not billed: divide by
    # what was counted in between.
    count = counted - counted_before
    return Cost(child_s / count, postgres_s / count, kafka_s / count, seconds, count)


def profile(pid: int, app: str) -> subprocess.Popen | None:
    """With BENCH_COST_PROFILE=PREFIX, py-spy samples the worker into
    PREFIX.<app>.txt (collapsed stacks); its own CPU is not billed to the worker."""
    prefix = os.environ.get("BENCH_COST_PROFILE")
    if not prefix:
        return None
    out = f"{prefix}.{app}.txt"
    command = [
        "py-spy",
        "record",
        "--nonblocking",
        "-p",
        str(pid),
        "-o",
        out,
        "-f",
        "raw",
        "--rate",
        "500",
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_case(stack: Stack, pipe: IsolatedPipeline, history: bool) -> Cost:
    messages, per_device = workload()
    rows = 0
    if history:
        rows = add_history(pipe, per_device, HISTORY_FACTOR)
        print(f"  history: {rows} rows in user_logins before the run", flush=True)
    else:
        with psycopg.connect(pipe.database_url, autocommit=True) as conn:
            ensure_schema(conn)
    pipe.produce_raw(messages)
    return measure(pipe, stack, lambda: outcomes(pipe) - rows, MESSAGES, warm_up=WARM_UP)


def run_floor(
    stack: Stack,
    pipe: IsolatedPipeline,
    messages: list[RawMessage] | None = None,
    warm_up: int = WARM_UP,
) -> Cost:
    """The same records (or *messages*) through a Faust agent that does nothing
    (bench/faust_floor.py): what any one Faust hop costs here."""
    if messages is None:
        messages, _ = workload()
    pipe.produce_raw(messages)
    count_dir = pipe.launcher.log_dir / "floor-counts"
    count_dir.mkdir(parents=True, exist_ok=True)

    def counted() -> int:
        return sum(int(f.read_text() or 0) for f in count_dir.glob("*.count"))

    floor_env = {"FLOOR_COUNT_DIR": str(count_dir)}
    floor_app = "bench.faust_floor"
    return measure(pipe, stack, counted, len(messages), floor_app, floor_env, warm_up=warm_up)


def wait_for_quiet_broker(stack: Stack, limit: float = 120.0) -> None:
    """Wait until the broker is idle: it deletes a topic's files a minute
    after the topic (an earlier run's pipelines, their log directories
    renamed ``*-delete`` meanwhile), which would be billed here."""
    kafka_pid = read_pid(stack.service("kafka").pid_file)
    assert kafka_pid, "the stack is not running"
    data_dir = Path(stack.dir) / "kafka" / "data"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if any(entry.name.endswith("-delete") for entry in data_dir.iterdir()):
            time.sleep(2.0)
            continue
        before = cpu_seconds(kafka_pid)
        time.sleep(2.0)
        if (cpu_seconds(kafka_pid) - before) / 2.0 < QUIET_BROKER_CPU:
            return
    print("  the broker never went quiet; its figures include background work", flush=True)


def run() -> list[Result]:
    stack = Stack.from_settings()
    env = read_env_file(stack.env_file)
    os.environ.update(env)  # the key ring, as workers see it
    wait_for_quiet_broker(stack)
    # Every pipeline stays until all are measured: Kafka deletes a topic's
    # files a minute after the topic, which would land in a later case.
    with contextlib.ExitStack() as pipelines:
        floor_pipe, fresh_pipe, aged_pipe = (
            pipelines.enter_context(IsolatedPipeline(env, Path(stack.dir) / "bench", partitions=8))
            for _ in range(3)
        )
        floor = run_floor(stack, floor_pipe)
        print(floor.line("floor"), flush=True)
        fresh = run_case(stack, fresh_pipe, history=False)
        print(fresh.line("fresh"), flush=True)
        aged = run_case(stack, aged_pipe, history=True)
        print(aged.line("history"), flush=True)
    # Rates are messages per CPU-second, so each ratio is a cost ratio inverted.
    return [
        Result(
            "cost (worker+pg)",
            f"{HISTORY_FACTOR}x history",
            1 / (aged.worker + aged.postgres),
            "empty tables",
            1 / (fresh.worker + fresh.postgres),
            "msg/cpu-s",
            ">= 0.8",
        ),
        Result(
            "cost (worker)",
            "worker, worst of fresh and history",
            1 / max(fresh.worker, aged.worker),
            f"issue 23's {WORKER_TARGET_US:.0f} µs a message",
            1e6 / WORKER_TARGET_US,
            "msg/cpu-s",
            ">= 1.0",
        ),
    ]
