"""Cost per row as ``user_logins`` grows: partitioned by day against one plain table.

For each layout, a database of its own on the stack's PostgreSQL 15 is
filled with a history generated in PostgreSQL itself (``INSERT ... SELECT
generate_series``: no pipeline needed to make 50 million rows) over
BENCH_HISTORY_DAYS past days, with tokens of the real tokens' lengths, a
million devices and their ``seen_devices`` rows. At each history size
(BENCH_HISTORY_SIZES, cumulative) the real :class:`BatchWriter` writes
BENCH_HISTORY_ROWS new logins of today, in batches of the workers' size,
half of them from devices the history holds (those million devices are in
``seen_devices`` from the empty case on: what grows is ``user_logins``
alone, not the number of devices): the CPU time of this process
(the writer, its rows built beforehand) and of the PostgreSQL server with
all its processes (backends, WAL writer, autovacuum), per row, and the
rows per second. At the largest size it times dropping the oldest day: the
partition (``maskstream_drop_partitions``), and for the plain table a
``DELETE`` of that day's rows.

History is loaded without the two indexes of ``user_logins`` and indexed
afterwards (a sorted build: minutes instead of hours of random inserts);
each size's indexes are rebuilt before it is measured, then VACUUM
ANALYZE and a checkpoint; ``seen_devices`` is read back into the caches
(the load pushed it out; a pipeline keeps it hot) and autovacuum awaited,
so the setup is not billed to the run. BENCH_HISTORY_LAYOUTS=partitioned
(or plain) runs one layout. Disk: about
330 bytes a row with indexes (printed as measured); keep 20 GB free.
``python -m bench history``.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from bench.cpu import tree_cpu_seconds
from bench.harness import Result
from stream.core.batch import Outcome
from stream.core.records import MaskedLogin, RawLogin
from stream.devstack.envfile import read_env_file
from stream.devstack.manager import Stack
from stream.devstack.processes import read_pid
from stream.postgres.connect import Database
from stream.postgres.partitions import Interval
from stream.postgres.queries import scalar
from stream.postgres.schema import Tables, ensure_schema
from stream.postgres.writer import BatchWriter
from tests.support.sandbox import IsolatedPipeline

SIZES = [int(n) for n in os.environ.get("BENCH_HISTORY_SIZES", "0,5000000,20000000").split(",")]
DAYS = int(os.environ.get("BENCH_HISTORY_DAYS", "50"))
ROWS = int(os.environ.get("BENCH_HISTORY_ROWS", "30000"))
BATCH = 1000  # MASKSTREAM_BATCH_SIZE's default
ROUNDS = 3
LAYOUTS = {"partitioned": Interval.DAY, "plain": Interval.NONE}
# BENCH_HISTORY_LAYOUTS=partitioned (or plain) measures one of them only.
CHOSEN = os.environ.get("BENCH_HISTORY_LAYOUTS", ",".join(LAYOUTS)).split(",")
# After the history's checkpoint, the server's background work settles.
SETTLE_SECONDS = 5.0
DEVICES = 1_000_000
IPS = 500_000
# Rows are generated a day at a time, so each day's rows are together on disk
# (as a pipeline writes them) and a partition is filled in one go.
SEED = 33


def token(kind: str, number: str) -> str:
    """SQL for a token as long as a real AES-SIV token of an IP or a device id
    (``siv:k1:`` and 36 characters), different for each *number*."""
    return f"'siv:k1:' || md5('{kind}' || {number}) || substr(md5({number}::text), 1, 4)"


def device_token(number: int) -> str:
    """The token :func:`token` gives device *number*, computed here (for the run's rows)."""
    digest = hashlib.md5(f"dev{number}".encode()).hexdigest()
    return f"siv:k1:{digest}{hashlib.md5(str(number).encode()).hexdigest()[:4]}"


# One day of history: random UUID message ids (as SQS gives), devices spread
# over the day's rows, the seconds of the day in order.
HISTORY_DAY = f"""INSERT INTO user_logins (message_id, user_id, device_type, masked_ip,
       masked_device_id, locale, app_version, app_version_full, create_date, sent_at,
       envelope_kind, raw_position)
SELECT md5(%(day)s::text || i)::uuid::text, 'user-' || mod(i, 200000), 'android',
       {token("ip", f"mod(i, {IPS})")}, {token("dev", f"mod(i * 7919, {DEVICES})")},
       'RU', 230, '2.3.0', %(day)s::date,
       %(day)s::date + mod(i, 86400) * interval '1 second', NULL, 'history:0:' || i
  FROM generate_series(%(after)s::bigint + 1, %(after)s::bigint + %(rows)s) AS i"""

# Every history device, with the logins a size added to it (the history's
# rows spread evenly over the devices).
DEVICES_UPSERT = f"""INSERT INTO seen_devices (masked_device_id, first_seen, last_seen, login_count)
SELECT {token("dev", "d")}, %(first)s::timestamptz, %(last)s::timestamptz, %(per_device)s
  FROM generate_series(0, {DEVICES - 1}) AS d
    ON CONFLICT (masked_device_id) DO UPDATE SET
       first_seen = least(seen_devices.first_seen, excluded.first_seen),
       last_seen = greatest(seen_devices.last_seen, excluded.last_seen),
       login_count = seen_devices.login_count + excluded.login_count"""


@dataclass(frozen=True)
class Run:
    """One measurement: a layout at a history size."""

    layout: str
    history: int
    worker_s: float
    postgres_s: float
    rows: int
    seconds: float

    @property
    def per_row_us(self) -> float:
        return (self.worker_s + self.postgres_s) / self.rows * 1e6

    def line(self) -> str:
        worker, postgres = (self.worker_s / self.rows * 1e6, self.postgres_s / self.rows * 1e6)
        return (
            f"{self.layout:<12} history {self.history:>11,}  worker {worker:6.1f} µs/row"
            f"  postgres {postgres:6.1f}  worker+postgres {self.per_row_us:6.1f}"
            f"  {self.rows / self.seconds:8,.0f} rows/s"
        )


def ensure_days(conn: psycopg.Connection, table: str, first: date, days: int) -> None:
    """Partitions for *days* days from *first* if *table* is partitioned (as a
    writer makes them; history inserted directly needs them first)."""
    if scalar(conn, "SELECT relkind FROM pg_class WHERE oid = %s::regclass", (table,)) != "p":
        return
    for offset in range(days):
        day = first + timedelta(days=offset)
        conn.execute(
            "SELECT maskstream_create_partition(%s::regclass, %s, %s)",
            (table, day, day + timedelta(days=1)),
        )


def drop_indexes(conn: psycopg.Connection) -> None:
    conn.execute(
        "DROP INDEX IF EXISTS user_logins_message_id_key, user_logins_masked_device_id_idx"
    )


def add_devices(conn: psycopg.Connection, today: date, logins: int) -> None:
    """Add *logins* to each of the DEVICES history devices (0: create them)."""
    conn.execute(
        DEVICES_UPSERT,
        {
            "first": datetime.combine(today - timedelta(days=DAYS), datetime.min.time(), UTC),
            "last": datetime.combine(today, datetime.min.time(), UTC),
            "per_device": logins,
        },
    )


def add_history(conn: psycopg.Connection, rows: int, after: int, today: date) -> None:
    """*rows* more rows of history, spread over the DAYS days before *today*;
    *after* rows there already (their numbers, hence message ids, come after)."""
    per_day, after_per_day = rows // DAYS, after // DAYS
    first = today - timedelta(days=DAYS)
    for offset in range(DAYS):
        day = first + timedelta(days=offset)
        conn.execute(HISTORY_DAY, {"day": day, "rows": per_day, "after": after_per_day})
    add_devices(conn, today, per_day * DAYS // DEVICES)


def settle(conn: psycopg.Connection, tables: Tables) -> None:
    """Indexes back (the schema's own statements), statistics, a checkpoint."""
    ensure_schema(conn, tables)
    conn.execute("VACUUM ANALYZE user_logins")
    # Compact: each size's upsert of every device leaves the table larger
    # (dead versions), which a run would pay for as if it were history.
    conn.execute("VACUUM (FULL, ANALYZE) seen_devices")
    conn.execute("CHECKPOINT")


def outcomes(count: int, rng: random.Random, today: datetime) -> list[Outcome]:
    """*count* new logins of today, half of them from history devices."""
    made = []
    for n in range(count):
        message_id = str(uuid.UUID(int=rng.getrandbits(128)))
        device = device_token(rng.randrange(DEVICES)) if n % 2 else f"siv:k1:new-{uuid.uuid4().hex}"
        sent = today + timedelta(milliseconds=rng.randrange(3_600_000))
        sent_ms = int(sent.timestamp() * 1000)
        login = MaskedLogin(
            message_id,
            f"user-{rng.randrange(200_000)}",
            "android",
            device_token(rng.randrange(IPS)).replace("siv:k1:", "siv:k1:i"),
            device,
            "RU",
            230,
            "2.3.0",
            sent_ms,
            sent.date().isoformat(),
        )
        raw = RawLogin(message_id, sent_ms, b"{}", position=f"logins.raw:0:{n}")
        made.append(Outcome(raw, 0, login=login))
    return made


@dataclass(frozen=True)
class Spent:
    """CPU seconds of this process and of the PostgreSQL server, and wall seconds."""

    worker: float
    postgres: float
    wall: float


async def write_measured(
    url: str, tables: Tables, warm: list[Outcome], rounds: list[list[list[Outcome]]], pid: int
) -> list[Spent]:
    """Write *warm*, then each round of batches, on one writer; what each round
    cost. Read while the writer's backend lives: an exited backend's time
    reaches the server's counters only once the postmaster reaps it."""
    writer = BatchWriter(Database(url), tables)
    spent = []
    try:
        await writer.write(warm)  # today's partition, the plans, the caches
        for batches in rounds:
            before = (time.process_time(), tree_cpu_seconds(pid), time.perf_counter())
            for batch in batches:
                await writer.write(batch)
            after = (time.process_time(), tree_cpu_seconds(pid), time.perf_counter())
            spent.append(Spent(*(b - a for a, b in zip(before, after, strict=True))))
    finally:
        await writer.close()
    return spent


# Autovacuum of the loaded history, if any, is not the run's work.
QUIET_LIMIT_SECONDS = 600.0


def warm_and_quiet(url: str) -> None:
    """Read seen_devices and its key into the caches, as a running pipeline
    keeps them (the history's load pushed them out; a run that reads them
    from disk would bill the load to the writes), and wait until no
    autovacuum worker runs."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT sum(login_count) FROM seen_devices")
        conn.execute("SET enable_seqscan = off")
        conn.execute("SELECT count(*) FROM seen_devices WHERE masked_device_id >= ''")
        deadline = time.monotonic() + QUIET_LIMIT_SECONDS
        while time.monotonic() < deadline and scalar(
            conn,
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
        ):
            time.sleep(2)


def measure(
    url: str, tables: Tables, postgres_pid: int, history: int, layout: str, seed: int
) -> Run:
    """Write ROWS new rows, ROUNDS times after a warm-up batch, and take the CPU
    the cheapest round cost (a shared machine's noise only ever adds)."""
    import asyncio

    rng = random.Random(seed)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    warm = outcomes(BATCH, rng, now)
    rounds = [[outcomes(BATCH, rng, now) for _ in range(ROWS // BATCH)] for _ in range(ROUNDS)]
    warm_and_quiet(url)
    time.sleep(SETTLE_SECONDS)
    spent = asyncio.run(write_measured(url, tables, warm, rounds, postgres_pid))
    best = min(spent, key=lambda s: s.worker + s.postgres)
    return Run(layout, history, best.worker, best.postgres, ROWS // BATCH * BATCH, best.wall)


def drop_a_day(conn: psycopg.Connection, partitioned: bool, today: date) -> float:
    """Seconds to remove the oldest day of history."""
    oldest = today - timedelta(days=DAYS)
    started = time.perf_counter()
    if partitioned:
        conn.execute("SELECT maskstream_drop_partitions('user_logins', %s)", (DAYS,))
    else:
        conn.execute("DELETE FROM user_logins WHERE create_date = %s", (oldest,))
    return time.perf_counter() - started


def bytes_per_row(conn: psycopg.Connection) -> float:
    size, rows = conn.execute(
        "SELECT sum(pg_total_relation_size(c.oid)), (SELECT count(*) FROM user_logins)"
        "  FROM pg_class c WHERE c.relname LIKE 'user_logins%%' AND c.relkind IN ('r', 'p')"
    ).fetchone() or (0, 0)
    return float(size or 0) / max(int(rows or 0), 1)


# Measured: 330 (plain) to 380 (partitioned) bytes a row with indexes.
BYTES_PER_ROW_ESTIMATE = 400
FREE_BYTES_KEPT = 20 * 1024**3


def room_for(rows: int, where: Path) -> bool:
    """Can *rows* more rows be written with 20 GB left free?"""
    free = shutil.disk_usage(where if where.exists() else Path("/")).free
    return free - rows * BYTES_PER_ROW_ESTIMATE >= FREE_BYTES_KEPT


def run_layout(
    stack_env: dict[str, str], work: Path, layout: str, interval: Interval, postgres_pid: int
) -> tuple[list[Run], float]:
    tables = Tables(interval=interval)
    today = datetime.now(UTC).date()
    runs: list[Run] = []
    pipe = IsolatedPipeline(stack_env, work, topics_up_front=False)
    with pipe, psycopg.connect(pipe.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET maintenance_work_mem = '1GB'"))
        ensure_schema(conn, tables)
        ensure_days(conn, "user_logins", today - timedelta(days=DAYS), DAYS)
        # The devices exist from the start: what is measured is the growth of
        # user_logins, not of the number of devices (seen_devices is one row each).
        add_devices(conn, today, 0)
        settle(conn, tables)
        loaded = 0
        for size in SIZES:
            if not room_for(size - loaded, work):
                print(f"  {layout}: no room for {size:,} rows (20 GB must stay free)", flush=True)
                break
            if size > loaded:
                started = time.perf_counter()
                drop_indexes(conn)
                add_history(conn, size - loaded, loaded, today)
                settle(conn, tables)
                loaded = int(scalar(conn, "SELECT count(*) FROM user_logins"))
                print(
                    f"  {layout}: {loaded:,} rows of history in"
                    f" {time.perf_counter() - started:.0f} s,"
                    f" {bytes_per_row(conn):.0f} bytes a row with indexes",
                    flush=True,
                )
            run = measure(pipe.database_url, tables, postgres_pid, loaded, layout, SEED + size)
            print(run.line(), flush=True)
            runs.append(run)
        drop = drop_a_day(conn, interval is not Interval.NONE, today)
        print(f"  {layout}: dropping the oldest day took {drop:.3f} s", flush=True)
    return runs, drop


def growth(layout: str, runs: list[Run], target: str) -> Result:
    """Rows per CPU-second at the largest history against the empty table's."""
    return Result(
        "history (worker+pg)",
        f"{layout}, {runs[-1].history:,} rows",
        1e6 / runs[-1].per_row_us,
        f"{layout}, empty",
        1e6 / runs[0].per_row_us,
        "rows/cpu-s",
        target,
    )


def run() -> list[Result]:
    stack = Stack.from_settings()
    env = read_env_file(stack.env_file)
    os.environ.update(env)
    postgres_pid = read_pid(stack.service("postgres").pid_file)
    assert postgres_pid, "the stack is not running"
    work = Path(stack.dir) / "bench"
    results = []
    drops = {}
    for layout, interval in LAYOUTS.items():
        if layout in CHOSEN:
            runs, drops[layout] = run_layout(env, work, layout, interval, postgres_pid)
            # Cost at the largest history against the empty table's: within
            # 1.1x partitioned (issue 33); plain, for comparison.
            results.append(growth(layout, runs, ">= 0.91" if layout == "partitioned" else ">= 0"))
    if len(drops) == len(LAYOUTS):
        results.append(
            Result(
                "history (drop a day)",
                "drop the day's partition",
                1 / drops["partitioned"],
                "DELETE the day, plain table",
                1 / drops["plain"],
                "days/s",
                ">= 1.0",
            )
        )
    return results
