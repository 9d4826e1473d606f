"""Whether the worker can reach what it depends on: PostgreSQL and Kafka.

A worker whose database is unreachable cannot commit a batch, and one cut
off from Kafka cannot fetch or acknowledge; restarting it mends neither, so
these outages make the worker *not ready* (``/ready`` answers 503 with the
reason) while it stays *alive* (``/health`` answers 200). A probe runs from
start-up on: the first one also creates or migrates the schema, so a worker
pointed at a database that does not answer says so in one line at once,
instead of ``Ready`` followed by silence until the first message. Under load
the sink's own commits prove PostgreSQL reachable and the probe sends nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import faust
import psycopg
from psycopg.conninfo import conninfo_to_dict

from stream.common.settings import Settings
from stream.postgres.connect import database_of
from stream.postgres.migration import ensure_current_async
from stream.postgres.schema import tables_of
from stream.postgres.sink import PostgresSink
from stream.worker.faust_patches.internals import aiokafka_producer

log = logging.getLogger(__name__)

PROBE_INTERVAL_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 5.0
POSTGRES = "PostgreSQL"
KAFKA = "Kafka"


@dataclass
class Dependencies:
    """Outages seen by the probes, and the sink whose retries also count as one."""

    down: dict[str, tuple[float, str]] = field(default_factory=dict)  # name -> (since, why)
    sink: PostgresSink | None = None
    schema_ready: bool = False

    def failed(self, name: str, why: str, now: float) -> None:
        """*name* did not answer; logged once per outage (the recovery is logged too)."""
        if name not in self.down:
            self.down[name] = (now, why)
            log.warning(
                "%s unreachable (%s); the worker keeps trying every %.0f s and /ready "
                "answers 503 until it answers",
                name,
                why,
                PROBE_INTERVAL_SECONDS,
            )

    def answered(self, name: str, now: float) -> None:
        outage = self.down.pop(name, None)
        if outage is not None:
            log.info("%s reachable again after %.0f s", name, now - outage[0])

    def problems(self, now: float) -> list[str]:
        """Why the worker is not ready, by dependency; names error types only."""
        found = [
            f"{name} unreachable for {now - since:.0f} s ({why})"
            for name, (since, why) in sorted(self.down.items())
        ]
        sink = self.sink
        if sink is not None and sink.failing_since is not None:
            found.append(
                f"the PostgreSQL sink has been retrying a batch for "
                f"{now - sink.failing_since:.0f} s ({sink.failure})"
            )
        return found

    def sink_recently_committed(self, now: float) -> bool:
        sink = self.sink
        return bool(
            sink is not None
            and sink.failing_since is None
            and sink.succeeded_at is not None
            and now - sink.succeeded_at < PROBE_INTERVAL_SECONDS
        )


def server_of(database_url: str) -> str:
    """``host:port/dbname`` of a libpq URL, without user or password, for the log."""
    try:
        parts = conninfo_to_dict(database_url)
    except psycopg.ProgrammingError:
        return "the configured DATABASE_URL"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


async def probe_postgres(settings: Settings, state: Dependencies) -> None:
    """Connect (and, the first time, check the schema, migrating it if need be)."""
    if state.schema_ready and state.sink_recently_committed(time.monotonic()):
        state.answered(POSTGRES, time.monotonic())
        return
    try:
        async with await database_of(settings).connect_async(
            connect_timeout=int(PROBE_TIMEOUT_SECONDS)
        ) as conn:
            if not state.schema_ready:
                await ensure_current_async(conn, tables_of(settings))
                state.schema_ready = True
                log.info("PostgreSQL reachable; tables ready")
            else:
                await conn.execute("SELECT 1")
    except psycopg.errors.InsufficientPrivilege:
        # Logged by ensure_current_async: `maskstream migrate` has to run first.
        state.failed(POSTGRES, "schema not migrated", time.monotonic())
    except (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError) as exc:
        state.failed(
            POSTGRES,
            f"{type(exc).__name__} at {server_of(settings.database_url)}",
            time.monotonic(),
        )
    else:
        state.answered(POSTGRES, time.monotonic())


async def probe_kafka(app: faust.App, state: Dependencies) -> None:
    """Whether the worker's producer has (or can open) a connection to a broker
    it knows: no request is sent, so the probe costs nothing while Kafka is up."""
    try:
        client = aiokafka_producer(app).client
        nodes = [broker.nodeId for broker in client.cluster.brokers()]
        reachable = False
        for node in nodes:
            if await asyncio.wait_for(client.ready(node), PROBE_TIMEOUT_SECONDS):
                reachable = True
                break
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # any failure to answer counts: the probe must not stop
        state.failed(KAFKA, type(exc).__name__, time.monotonic())
        return
    if reachable:
        state.answered(KAFKA, time.monotonic())
    elif nodes:
        state.failed(KAFKA, "no broker accepts a connection", time.monotonic())


async def probe_forever(app: faust.App, settings: Settings, state: Dependencies) -> None:
    """Probe both dependencies from start-up on, every :data:`PROBE_INTERVAL_SECONDS`."""
    while True:
        await probe_postgres(settings, state)
        await probe_kafka(app, state)
        await asyncio.sleep(PROBE_INTERVAL_SECONDS)
