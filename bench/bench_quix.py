"""maskstream's worker side by side with a Quix Streams worker doing the same job.

Quix Streams is the other pure-Python stream processor a data engineer would
reach for instead of Faust. ``bench/quix_app.py`` does maskstream's job with
it: per raw record, maskstream's own validation and masking (``stream.core``,
so both sides make the very same rows), a count per device in Quix's State
(RocksDB and its changelog topic, as Quix defaults), the masked login
published to the masked topic, and its row written to PostgreSQL, one
transaction per partition at each of Quix's checkpoints, in two variants:

- **maskstream's SQL**: a custom Quix ``BatchingSink`` running what the worker
  runs (``stream.postgres``: in a savepoint, COPY text into a staging table,
  then the insert of the new rows and the ``seen_devices`` upsert in one
  statement), so the comparison isolates the framework;
- **Quix's own sink**: ``quixstreams.sinks.community.postgresql.PostgreSQLSink``
  (``INSERT ... VALUES`` through psycopg2's ``execute_values``, ``ON CONFLICT
  DO NOTHING``) into the same ``user_logins``; it keeps no ``seen_devices``.

Quix Streams is pinned (QUIX_REQUIREMENT) and lives in a virtual environment
of its own, made on first use under the stack's ``bench/quix-venv`` with the
pins of ``requirements.lock`` for what maskstream's code imports there; it is
not one of maskstream's dependencies. Quix checkpoints every
BENCH_QUIX_COMMIT_EVERY records (default 8,000: about 1,000 rows a partition
and transaction, the worker's batch) or BENCH_QUIX_COMMIT_INTERVAL seconds
(default 1).

In one run, on the same stack and machine, each side gets a fresh pipeline
with the same valid generated logins (BENCH_QUIX_WARMUP = 10,000 of warm-up,
then BENCH_QUIX_ROWS = 20,000 measured) on an 8-partition raw topic, exactly
as the bridge writes them; no invalid ones (Quix's own sink has no place for
a rejection). One maskstream worker is measured by
:func:`bench.bench_cost.measure`, the Quix process by
:func:`bench.bench_cost.measure_process`: CPU from /proc of the process and
the PostgreSQL server with its backends, from the warm-up's end to the last
row. A do-nothing Faust agent (``bench/faust_floor.py``) and a do-nothing
Quix application (consume only) are measured alike (BENCH_QUIX_FLOOR=0
leaves them out). The sides take turns for BENCH_QUIX_ROUNDS rounds (default
2) and each side's best round counts. Results are rows per CPU-second of
process + PostgreSQL, maskstream's over Quix's (target >= 1.5), and rows/s
without a target. The rows each Quix variant wrote are compared column by
column with the worker's, and ``seen_devices`` too where it keeps one; every
difference is printed.

``python -m bench quix``; with BENCH_COST_PROFILE=PREFIX, py-spy samples each
worker and Quix process into PREFIX.<side>.txt, as for ``bench cost``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import sidebyside
from bench.bench_cost import Cost, measure_process, profile, run_floor
from bench.bench_history import ensure_days
from bench.harness import Result
from stream.devstack.envfile import read_env_file
from stream.devstack.manager import Stack
from stream.postgres.schema import ensure_schema
from tests.support.sandbox import IsolatedPipeline, RawMessage

ROWS = int(os.environ.get("BENCH_QUIX_ROWS", "20000"))
WARM_UP = int(os.environ.get("BENCH_QUIX_WARMUP", "10000"))
ROUNDS = int(os.environ.get("BENCH_QUIX_ROUNDS", "2"))
COMMIT_EVERY = os.environ.get("BENCH_QUIX_COMMIT_EVERY", "8000")
COMMIT_INTERVAL = os.environ.get("BENCH_QUIX_COMMIT_INTERVAL", "1.0")
FLOORS = os.environ.get("BENCH_QUIX_FLOOR", "1") != "0"
# The floors run through the logins this many times over: doing nothing,
# they would otherwise be measured over a fraction of a second.
FLOOR_TIMES = int(os.environ.get("BENCH_QUIX_FLOOR_TIMES", "4"))
PARTITIONS = 8

QUIX_REQUIREMENT = "quixstreams[postgresql]==3.28.1"
# What maskstream's code needs in the Quix environment (stream.core, and
# stream.postgres for the maskstream-SQL sink), at the versions the image runs.
LOCKED = ("psycopg", "psycopg-binary", "cryptography", "boto3", "botocore")
REPO = Path(__file__).resolve().parent.parent
QUIX_APP = REPO / "bench" / "quix_app.py"
STARTED = "The application started and is now processing incoming messages"

#: A side of the comparison: how to run it on a fresh pipeline.
Side = Callable[[IsolatedPipeline], Cost]


def locked_pins(lock: Path = REPO / "requirements.lock") -> list[str]:
    """The ``name==version`` lines of requirements.lock for LOCKED."""
    pins = [
        entry.strip()
        for entry in lock.read_text().splitlines()
        if entry.partition("==")[0].strip().lower() in LOCKED
    ]
    assert len(pins) == len(LOCKED), f"requirements.lock pins {pins}, expected {LOCKED}"
    return pins


def quix_python(venv: Path) -> Path:
    """The Python of the Quix environment at *venv*, made (or remade, when the
    requirements changed) on first use."""
    requirements = [QUIX_REQUIREMENT, *locked_pins()]
    marker = venv / "maskstream-requirements.txt"
    python = venv / "bin" / "python"
    if marker.exists() and marker.read_text().split() == requirements:
        return python
    print(f"  making {venv} with {' '.join(requirements)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
    marker.write_text("\n".join(requirements))
    return python


def prepare_tables(pipe: IsolatedPipeline, messages: list[RawMessage]) -> None:
    """maskstream's tables, with the partitions of the logins' days (a worker
    makes them itself as batches need them; Quix's sinks do not)."""
    days = sorted({datetime.fromtimestamp(m.sent_at_ms / 1000, UTC).date() for m in messages})
    with psycopg.connect(pipe.database_url, autocommit=True) as conn:
        ensure_schema(conn)
        ensure_days(conn, "user_logins", days[0], (days[-1] - days[0]).days + 1)


def run_quix(
    stack: Stack,
    pipe: IsolatedPipeline,
    messages: list[RawMessage],
    python: Path,
    mode: str,
) -> Cost:
    """bench/quix_app.py in *mode* through *messages* on *pipe*, measured after WARM_UP."""
    prepare_tables(pipe, messages)
    pipe.produce_raw(messages)
    count_file = pipe.launcher.log_dir / "quix.count"
    env = {
        "PYTHONPATH": str(REPO),
        "QUIX_STATE_DIR": str(pipe.launcher.log_dir / "quix-state"),
        "QUIX_COMMIT_EVERY": COMMIT_EVERY,
        "QUIX_COMMIT_INTERVAL": COMMIT_INTERVAL,
        "QUIX_COUNT_FILE": str(count_file),
        "QUIX_COUNT_EXPECTED": str(len(messages)),
    }

    def counted() -> int:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(count_file.read_text())
        return 0

    return measure_process(
        pipe,
        stack,
        start=lambda: pipe.launcher.start("quix", [str(python), str(QUIX_APP), mode], env),
        ready=lambda: STARTED in pipe.launcher.log("quix"),
        progress=counted if mode == "floor" else lambda: sidebyside.row_count(pipe),
        messages=len(messages),
        warm_up=WARM_UP,
        profile=lambda pid: profile(pid, f"quix-{mode}"),  # as bench cost's, BENCH_COST_PROFILE
    )


DEVICES_DIGEST = (
    "SELECT count(*), md5(string_agg(concat_ws(',', masked_device_id, login_count,"
    " extract(epoch FROM first_seen), extract(epoch FROM last_seen)), ';'"
    " ORDER BY masked_device_id)) FROM seen_devices"
)


def compare(ours: IsolatedPipeline, theirs: IsolatedPipeline, devices: bool) -> str:
    """How *theirs*' rows (and, with *devices*, its seen_devices) differ from *ours*'."""
    rows = sidebyside.row_count(ours)
    wrong = sidebyside.differences(sidebyside.row_digests(ours), sidebyside.row_digests(theirs))
    found = [
        f"{column} ({sidebyside.rows_differing(ours, theirs, column)} of {rows} rows)"
        for column in wrong
        if column != "count"
    ]
    if "count" in wrong:
        found.insert(0, f"count ({sidebyside.row_count(theirs)} rows, maskstream {rows})")
    if devices and ours.query(DEVICES_DIGEST) != theirs.query(DEVICES_DIGEST):
        found.append("seen_devices")
    return f"rows differ from maskstream's in {', '.join(found)}" if found else "rows match"


def take_turns(
    env: dict[str, str], work_dir: Path, sides: dict[str, Side], compared: dict[str, bool]
) -> dict[str, list[Cost]]:
    """Each of *sides* once a round on a fresh pipeline, ROUNDS rounds; the
    rows of the *compared* sides (label -> with seen_devices) checked against
    the first side's. Every pipeline stays until all are measured: Kafka
    deletes a topic's files a minute later, which would land in a later
    measurement. Taking turns spreads the machine's other load over every side."""
    costs: dict[str, list[Cost]] = {label: [] for label in sides}
    reference = next(iter(sides))
    with contextlib.ExitStack() as pipelines:
        for round_number in range(1, ROUNDS + 1):
            pipes: dict[str, IsolatedPipeline] = {}
            for label, side in sides.items():
                pipe = IsolatedPipeline(env, work_dir, partitions=PARTITIONS)
                pipes[label] = pipelines.enter_context(pipe)
                costs[label].append(side(pipe))
                verdict = ""
                if label in compared:
                    verdict = compare(pipes[reference], pipe, compared[label])
                print(
                    sidebyside.line(f"{round_number} {label}", costs[label][-1]),
                    verdict,
                    flush=True,
                )
    return costs


def run() -> list[Result]:
    stack = Stack.from_settings()
    env = read_env_file(stack.env_file)
    os.environ.update(env)  # the key ring, as workers see it
    bench_dir = Path(stack.dir) / "bench"
    python = quix_python(bench_dir / "quix-venv")
    messages = sidebyside.valid_workload(WARM_UP + ROWS)

    def quix(mode: str) -> Side:
        return lambda pipe: run_quix(stack, pipe, messages, python, mode)

    sides: dict[str, Side] = {
        "maskstream worker": lambda pipe: sidebyside.run_maskstream(stack, pipe, messages, WARM_UP),
        "quix, maskstream's SQL": quix("maskstream"),
        "quix, its own sink": quix("own"),
    }
    if FLOORS:
        records = messages * FLOOR_TIMES
        sides["faust floor"] = lambda pipe: run_floor(stack, pipe, records, WARM_UP)
        sides["quix floor"] = lambda pipe: run_quix(stack, pipe, records, python, "floor")
    compared = {"quix, maskstream's SQL": True, "quix, its own sink": False}
    costs = take_turns(env, bench_dir, sides, compared)
    best = {label: min(runs, key=sidebyside.cpu_per_row) for label, runs in costs.items()}
    for label, cost in best.items():
        print(sidebyside.line(f"best {label}", cost), flush=True)
    results = []
    for name, label in (
        ("maskstream's SQL", "quix, maskstream's SQL"),
        ("own sink", "quix, its own sink"),
    ):
        results += sidebyside.results(
            "quix",
            costs["maskstream worker"],
            costs[label],
            ("worker+pg", "maskstream worker (best)"),
            (f"Quix+pg, {name}", f"Quix, {name} (best)"),
            ">= 1.5",
        )
    if FLOORS:
        results.append(
            Result(
                "quix floor (cpu)",
                "Faust floor, consume only",
                1 / best["faust floor"].worker,
                "Quix floor, consume only",
                1 / best["quix floor"].worker,
                "records/cpu-s",
                ">= 0",  # no target: what either framework costs before any work
            )
        )
    return results
