"""What the benchmarks that set maskstream's worker beside another tool share.

``bench connect`` (Kafka Connect) and ``bench quix`` (Quix Streams) give both
sides the same valid logins, measure maskstream's worker the same way, print
each side's cost in the same line and compare the rows each side wrote with
the worker's, column by column.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence

import psycopg

from bench.bench_cost import Cost, measure
from bench.harness import Result
from stream.core.validation import InvalidLogin, parse_login
from stream.devstack.manager import Stack
from stream.ops.generate import Generator
from stream.postgres.schema import ensure_schema
from tests.support.sandbox import IsolatedPipeline, RawMessage

SEED = 17


def valid_workload(rows: int) -> list[RawMessage]:
    """*rows* valid generated logins (the generator's odd cases left out), as
    the bridge would have put them on the raw topic."""
    generator = Generator(seed=SEED, devices=rows // 4)
    messages: list[RawMessage] = []
    lines = generator.lines(rows * 2)
    while len(messages) < rows:
        body = next(lines).encode()
        with contextlib.suppress(InvalidLogin):
            parse_login(body)
            messages.append(RawMessage(str(uuid.uuid4()), body))
    return messages


def row_count(pipe: IsolatedPipeline) -> int:
    return int(pipe.query("SELECT count(*) FROM user_logins")[0][0])


def run_maskstream(
    stack: Stack, pipe: IsolatedPipeline, messages: Sequence[RawMessage], warm_up: int
) -> Cost:
    """One fresh maskstream worker through *messages*, measured after *warm_up* rows."""
    with psycopg.connect(pipe.database_url, autocommit=True) as conn:
        ensure_schema(conn)
    pipe.produce_raw(list(messages))
    return measure(pipe, stack, lambda: row_count(pipe), len(messages), warm_up=warm_up)


COMPARED_COLUMNS = (
    "message_id",
    "user_id",
    "device_type",
    "masked_ip",
    "masked_device_id",
    "coalesce(locale, '-')",
    "app_version",
    "app_version_full",
    "create_date",
    "extract(epoch FROM sent_at)",
)


def row_digests(pipe: IsolatedPipeline) -> tuple:
    """The row count and a digest of each compared column of *pipe*'s user_logins."""
    digests = ", ".join(
        f"md5(string_agg(({column})::text, ',' ORDER BY message_id))" for column in COMPARED_COLUMNS
    )
    return tuple(pipe.query(f"SELECT count(*), {digests} FROM user_logins")[0])


def differences(ours: tuple, theirs: tuple) -> list[str]:
    """The columns (or "count") in which two sides' rows differ."""
    names = ("count", *COMPARED_COLUMNS)
    return [name for name, a, b in zip(names, ours, theirs, strict=True) if a != b]


def rows_differing(ours: IsolatedPipeline, theirs: IsolatedPipeline, column: str) -> int:
    """How many of *ours*' rows have another value of *column* (a compared
    column expression) in *theirs*, or no row there at all."""
    statement = f"SELECT message_id, ({column})::text FROM user_logins"
    mine, other = (dict(pipe.query(statement)) for pipe in (ours, theirs))
    return sum(1 for message_id, value in mine.items() if other.get(message_id, ...) != value)


def line(label: str, cost: Cost) -> str:
    us = 1e6
    return (
        f"{label:<26} {cost.rate:6.0f} rows/s  process {cost.worker * us:6.1f} µs/row"
        f"  postgres {cost.postgres * us:6.1f}  kafka {cost.kafka * us:6.1f}"
        f"  process+postgres {(cost.worker + cost.postgres) * us:6.1f}"
        f"  ({cost.messages} rows in {cost.seconds:.1f} s)"
    )


def cpu_per_row(cost: Cost) -> float:
    """CPU seconds per row of the process and PostgreSQL together."""
    return cost.worker + cost.postgres


def results(
    benchmark: str,
    ours: Sequence[Cost],
    theirs: Sequence[Cost],
    subjects: tuple[str, str],
    baselines: tuple[str, str],
    target: str,
) -> list[Result]:
    """Rows per CPU-second of process + PostgreSQL, each side's best round,
    against *target*; and rows/s, each side's best, without one (wall time of
    a few seconds on shared cores). *subjects* and *baselines* name each side
    in those two results."""
    best_ours, best_theirs = (min(costs, key=cpu_per_row) for costs in (ours, theirs))
    return [
        Result(
            f"{benchmark} (cpu)",
            subjects[0],
            1 / cpu_per_row(best_ours),
            baselines[0],
            1 / cpu_per_row(best_theirs),
            "rows/cpu-s",
            target,
        ),
        Result(
            f"{benchmark} (rows/s)",
            subjects[1],
            max(c.rate for c in ours),
            baselines[1],
            max(c.rate for c in theirs),
            "rows/s",
            ">= 0",
        ),
    ]
