"""``maskstream demo``: the whole pipeline on the local stack, start to finish.

Brings the stack up, sends synthetic messages (odd cases included) to SQS,
runs the bridge with ``--exit-when-idle`` and two Faust workers, shows progress
until every message is a row or a rejection, prints a summary and one audited
unmask, and stops the workers. Safe to run again: each run counts only what
it sent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg

from stream.common import settings as settings_module
from stream.common.settings import Settings
from stream.ops.generate import generate
from stream.ops.launcher import Launcher
from stream.ops.outcomes import OutcomesMissing, Progress, outcome_counts, wait_for_outcomes
from stream.ops.send import send_to_queue
from stream.postgres.connect import database_of
from stream.postgres.queries import scalar
from stream.postgres.schema import ensure_schema


def draw_progress(done: Progress, expected: int) -> None:
    """One progress line, drawn over the last one."""
    bar = "#" * int(30 * min(done.total, expected) / max(expected, 1))
    print(
        f"\r  [{bar:<30}] {done.total}/{expected}  rows {done.rows}  rejected {done.rejections}",
        end="",
        flush=True,
    )


def print_summary(
    conn: psycopg.Connection, done: Progress, started_at: float, elapsed: float
) -> str:
    """Print what the run produced; return one masked device id for the unmask example."""
    print(f"\nrows written:        {done.rows}")
    print(f"rejections:          {done.rejections}")
    reasons = conn.execute(
        """SELECT reason, count(*) FROM rejected_logins
            WHERE rejected_at >= to_timestamp(%s) GROUP BY reason ORDER BY 2 DESC""",
        (started_at,),
    ).fetchall()
    for reason, count in reasons:
        print(f"  {count:>6}  {reason}")
    repeated = scalar(
        conn,
        """SELECT count(*) FROM (SELECT masked_device_id FROM user_logins
            GROUP BY masked_device_id HAVING count(*) > 1) AS repeated""",
    )
    print(f"devices seen more than once (all runs): {repeated}")
    print(f"throughput:          {done.total / elapsed:,.0f} msgs/s end to end ({elapsed:.1f} s)")
    busiest = conn.execute(
        """SELECT masked_device_id, count(*) FROM user_logins
            GROUP BY masked_device_id ORDER BY count(*) DESC LIMIT 1"""
    ).fetchone()
    if busiest is None:
        raise RuntimeError("demo: no login reached user_logins")
    device, count = busiest
    print(f"\nbusiest device: {count} logins; masked_device_id = {device}")
    return device


def kafka_listener(stack_env: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The variables that point the demo's clients and children at the stack
    listener matching the caller's Kafka security: its plaintext one (already
    in *stack_env*), or its SASL/PLAIN one for ``SASL_PLAINTEXT``, with the
    stack's user unless the caller names one. Without this, the stack's
    plaintext address would meet the caller's SASL settings and fail."""
    protocol = settings.kafka_security_protocol.upper()
    if protocol == "PLAINTEXT":
        return {}
    if protocol != "SASL_PLAINTEXT":
        raise RuntimeError(
            f"the local stack has no TLS listener: run the demo with "
            f"KAFKA_SECURITY_PROTOCOL=PLAINTEXT or SASL_PLAINTEXT, not {protocol}"
        )
    listener = {"KAFKA_BOOTSTRAP_SERVERS": stack_env["STACK_KAFKA_SASL_BOOTSTRAP_SERVERS"]}
    if not settings.kafka_sasl_username:
        listener["KAFKA_SASL_USERNAME"] = stack_env["STACK_KAFKA_SASL_USERNAME"]
        listener["KAFKA_SASL_PASSWORD"] = stack_env["STACK_KAFKA_SASL_PASSWORD"]
    return listener


def run_demo(
    env: dict[str, str], run_dir: Path, count: int, workers: int, seed: int | None, timeout: float
) -> str:
    """Send *count* synthetic messages through the stack that *env* describes,
    run the bridge and *workers* workers until each is a row or a rejection,
    print a summary, and return the busiest device's masked id."""
    os.environ.update(env)
    settings = settings_module.load()
    with database_of(settings).connect(autocommit=True) as conn:
        ensure_schema(conn)
        baseline = outcome_counts(conn)
        lines = [line.encode() + b"\n" for line in generate(count, seed)]
        report = send_to_queue(settings, lines, concurrency=8)
        print(f"sent {report.sent} messages to {settings.sqs_queue_url}")

        launcher = Launcher(env, run_dir)
        started_at = time.time()
        started = time.monotonic()
        try:
            for n in range(1, workers + 1):
                launcher.start_worker(f"worker-{n}")
            launcher.start_bridge("bridge", "--exit-when-idle", "10")
            print(f"bridge and {workers} workers running; logs in {launcher.log_dir}")
            try:
                done = wait_for_outcomes(
                    lambda: outcome_counts(conn).since(baseline),
                    report.sent,
                    timeout,
                    launcher,
                    on_progress=lambda done: draw_progress(done, report.sent),
                )
            except OutcomesMissing as exc:
                print()
                raise RuntimeError(
                    f"demo stopped early ({exc}); logs are in {launcher.log_dir}"
                ) from None
            print()
            elapsed = time.monotonic() - started
            return print_summary(conn, done, started_at, elapsed)
        finally:
            print("stopping workers and bridge ...", flush=True)
            launcher.stop_all()
