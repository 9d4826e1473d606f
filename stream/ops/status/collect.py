"""One snapshot: SQS, Kafka and PostgreSQL asked at once, each within its timeout.

Gathering returns plain data (:mod:`.figures`), never raises for a
service's failure, and leaves the formatting to :mod:`.render`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from stream.common.settings import Settings
from stream.common.threads import DaemonThreadPool
from stream.ops.status.figures import Problem, Snapshot
from stream.ops.status.kafka_lag import consumer_lag
from stream.ops.status.postgres_counts import database_counts, database_target
from stream.ops.status.sqs_depth import queue_depths

DEFAULT_TIMEOUT = 3.0


async def _bounded(call: Any, timeout: float, target: str | None) -> Any:
    """Await *call*; a service that does not answer in time becomes a Problem.

    Each client has its own timeouts, but retries can add up: this caps a
    service at *timeout*, plus a moment for an answer already on its way.
    """
    try:
        return await asyncio.wait_for(call, timeout + 0.5)
    except TimeoutError:
        return Problem(f"no answer within {timeout:g} s", target)


async def gather(settings: Settings, timeout: float = DEFAULT_TIMEOUT) -> Snapshot:
    """Ask SQS, Kafka and PostgreSQL at once; never raises for a service's failure.

    The blocking client (psycopg) runs in a daemon thread so that one stuck
    past its deadline is abandoned rather than holding the process.
    """
    loop = asyncio.get_running_loop()
    pool = DaemonThreadPool(1, "status")
    try:
        sqs, kafka, postgres = await asyncio.gather(
            _bounded(queue_depths(settings, timeout), timeout, settings.sqs_queue_url or None),
            _bounded(consumer_lag(settings, timeout), timeout, settings.kafka_bootstrap_servers),
            _bounded(
                loop.run_in_executor(pool, database_counts, settings, timeout),
                timeout,
                database_target(settings.database_url),
            ),
        )
    finally:
        pool.shutdown(wait=False)
    return Snapshot(datetime.now(UTC), time.monotonic(), sqs, kafka, postgres)


def collect(settings: Settings, timeout: float = DEFAULT_TIMEOUT) -> Snapshot:
    """:func:`gather` for synchronous callers."""
    return asyncio.run(gather(settings, timeout))
