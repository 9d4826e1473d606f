"""The workers' periodic partition upkeep (stream.postgres.upkeep), as a Faust task.

A task of the app rather than a timer: it runs at start (a timer first
waits its interval), then every :data:`UPKEEP_INTERVAL_SECONDS`. Failures
are logged and tried again a minute later: a batch makes its own
partitions anyway, so upkeep being late never stops a worker.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from stream.postgres.connect import database_of
from stream.postgres.schema import tables_of
from stream.postgres.upkeep import keep_partitions
from stream.worker.app import WorkerApp

log = logging.getLogger(__name__)

# Hourly: partitions are made INTERVALS_AHEAD intervals ahead, and retention
# is counted in days, so an hour late changes nothing.
UPKEEP_INTERVAL_SECONDS = 3600.0
RETRY_SECONDS = 60.0


def register_partition_upkeep(worker: WorkerApp) -> None:
    """Put the upkeep task on *worker*'s app."""
    settings = worker.settings
    database, tables = database_of(settings), tables_of(settings)

    @worker.app.task
    async def partition_upkeep() -> None:
        while True:
            pause = UPKEEP_INTERVAL_SECONDS
            try:
                today = datetime.now(UTC).date()
                await keep_partitions(database, tables, settings.retention_days, today)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # PostgreSQL's primary message only (its DETAIL may quote values).
                reason = getattr(getattr(exc, "diag", None), "message_primary", None)
                log.warning(
                    "partition upkeep failed (%s: %s); trying again in %.0f s",
                    type(exc).__name__,
                    reason or "no message",
                    RETRY_SECONDS,
                )
                pause = RETRY_SECONDS
            await asyncio.sleep(pause)
