"""maskstream's job as a Quix Streams application, for ``python -m bench quix``.

Run by the Python of the benchmark's own Quix virtual environment (Quix
Streams is not one of maskstream's dependencies), with the repository on
PYTHONPATH and a pipeline's environment (``KAFKA_BOOTSTRAP_SERVERS``,
``DATABASE_URL``, ``MASKSTREAM_TOPIC_RAW``, ``MASKSTREAM_TOPIC_MASKED``,
``MASKSTREAM_APP_ID``, the key ring)::

    python bench/quix_app.py own|maskstream|floor

Per raw record, as a worker does: maskstream's own parsing, validation and
masking (``stream.core``), a count per device in Quix's State (RocksDB, with
its changelog topic, as Quix defaults), the masked login published to the
masked topic (key: the masked device id), and its row written to
PostgreSQL, at each of Quix's checkpoints, one transaction per partition:

- ``own``: by Quix's own sink, ``quixstreams.sinks.community.postgresql.PostgreSQLSink``,
  into the ``user_logins`` table maskstream made (``ON CONFLICT DO NOTHING``,
  no metadata columns, no schema updates: the table is there);
- ``maskstream``: by a ``BatchingSink`` running maskstream's own SQL, as the
  worker's writer does: in a savepoint (``stream.postgres.sink.insert_isolating``),
  the rows as COPY text into the session's staging table, then the statement
  that inserts the new ones and adds them to ``seen_devices``
  (``stream.postgres.rows.insert_logins``);
- ``floor``: no work at all: counts the records into ``QUIX_COUNT_FILE`` (every
  hundred, and from ``QUIX_COUNT_EXPECTED`` on).

Rejections are left out (the benchmark gives both sides valid logins only).
QUIX_STATE_DIR, QUIX_COMMIT_EVERY and QUIX_COMMIT_INTERVAL set Quix's state
directory and checkpoints.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from quixstreams import Application, State, message_context
from quixstreams.models.serializers.base import Serializer
from quixstreams.sinks import BatchingSink, SinkBatch
from quixstreams.sinks.community.postgresql import PostgreSQLSink

from stream.common import settings as settings_module
from stream.core.keyring import load_keyring
from stream.core.masking import Masker
from stream.core.records import MaskedLogin, RawLogin
from stream.core.transform import mask_login
from stream.postgres.rows import LOGIN_COLUMNS, insert_logins, login_row, logins_spec
from stream.postgres.schema import Tables
from stream.postgres.sink import create_staging, insert_isolating

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TABLES = Tables()


class MaskedJson(Serializer):
    """A masked login as ``logins.masked`` carries it (maskstream's own JSON)."""

    def __call__(self, value: MaskedLogin, ctx: Any) -> bytes:
        return value.dumps()


class MaskstreamSink(BatchingSink):
    """Each partition's batch in one transaction, with maskstream's own SQL and
    its asyncio psycopg connection, as the worker writes it."""

    def __init__(self, database_url: str) -> None:
        super().__init__()
        self.database_url = database_url
        self.loop = asyncio.new_event_loop()
        self.conn: psycopg.AsyncConnection | None = None

    def setup(self) -> None:
        self.conn = self.loop.run_until_complete(psycopg.AsyncConnection.connect(self.database_url))
        self.loop.run_until_complete(create_staging(self.conn, logins_spec(TABLES.logins)))
        self.loop.run_until_complete(self.conn.commit())

    def write(self, batch: SinkBatch) -> None:
        where = f"{batch.topic}:{batch.partition}:"
        rows = [login_row(item.value, f"{where}{item.offset}") for item in batch]
        self.loop.run_until_complete(self._write(rows))

    async def _write(self, rows: list[str]) -> None:
        assert self.conn is not None
        async with self.conn.transaction():
            # In a savepoint, bisected on a row the database refuses, as the worker does.
            await insert_isolating(self.conn, rows, self._insert)

    @staticmethod
    async def _insert(conn: psycopg.AsyncConnection, rows: Sequence[str]) -> object:
        return await insert_logins(conn, TABLES, rows)


def own_sink(database_url: str) -> PostgreSQLSink:
    database = conninfo_to_dict(database_url)
    return PostgreSQLSink(
        host=str(database.get("host", "localhost")),
        port=int(database.get("port") or 5432),
        dbname=str(database["dbname"]),
        user=str(database.get("user", "postgres")),
        password=str(database.get("password", "")),
        table_name=TABLES.logins,
        schema_auto_update=False,
        on_conflict_do_nothing=True,
        include_metadata=False,
    )


# The columns whose value is the login's attribute of the same name.
PLAIN_COLUMNS = tuple(c for c in LOGIN_COLUMNS if c not in ("sent_at", "raw_position"))


def row(login: MaskedLogin) -> dict[str, Any]:
    """*login*'s row as Quix's PostgreSQL sink takes it: a column -> value dict
    of maskstream's columns (stream.postgres.rows.LOGIN_COLUMNS)."""
    context = message_context()
    values = {column: getattr(login, column) for column in PLAIN_COLUMNS}
    values["sent_at"] = EPOCH + timedelta(milliseconds=login.sent_at_ms)
    values["raw_position"] = f"{context.topic}:{context.partition}:{context.offset}"
    return values


def count_device(login: MaskedLogin, state: State) -> None:
    """The login's device's count in Quix's State (the record's key is the device's)."""
    state.set("logins", state.get("logins", 0) + 1)


def main(mode: str) -> None:
    settings = settings_module.load()
    masker = Masker(load_keyring(settings))
    app = Application(
        broker_address=settings.kafka_bootstrap_servers,
        consumer_group=f"{settings.app_id}-quix",
        auto_offset_reset="earliest",
        state_dir=os.environ["QUIX_STATE_DIR"],
        commit_every=int(os.environ.get("QUIX_COMMIT_EVERY", "0")),
        commit_interval=float(os.environ.get("QUIX_COMMIT_INTERVAL", "5.0")),
    )
    raw = app.topic(settings.topics.raw, key_deserializer="bytes", value_deserializer="bytes")
    sdf = app.dataframe(raw)
    if mode == "floor":
        count_file, seen = Path(os.environ["QUIX_COUNT_FILE"]), [0]
        partial = count_file.with_suffix(".partial")
        expected = int(os.environ["QUIX_COUNT_EXPECTED"])

        def count(body: bytes) -> None:
            seen[0] += 1
            if seen[0] % 100 == 0 or seen[0] >= expected:
                partial.write_text(str(seen[0]))
                partial.replace(count_file)  # never read half written

        sdf.update(count)
        app.run()
        return

    def masked(body: bytes, key: bytes, timestamp: int, headers: Any) -> object:
        context = message_context()
        raw_login = RawLogin.from_kafka(
            body=body,
            headers=dict(headers or ()),
            key=key,
            timestamp_ms=timestamp,
            position=f"{context.topic}:{context.partition}:{context.offset}",
            offset=context.offset,
        )
        return mask_login(raw_login, masker)

    masked_topic = app.topic(
        settings.topics.masked, key_serializer="str", value_serializer=MaskedJson()
    )
    sdf = sdf.apply(masked, metadata=True)
    sdf = sdf.filter(lambda outcome: isinstance(outcome, MaskedLogin))
    sdf = sdf.update(count_device, stateful=True)
    sdf = sdf.to_topic(masked_topic, key=lambda login: login.masked_device_id)
    if mode == "own":
        sdf.apply(row).sink(own_sink(settings.database_url))
    else:
        sdf.sink(MaskstreamSink(settings.database_url))
    app.run()


if __name__ == "__main__":
    main(sys.argv[1])
