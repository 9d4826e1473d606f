"""How records become rows of ``user_logins`` and ``rejected_logins``, and how
``seen_devices`` is kept from exactly the rows a transaction inserts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import psycopg
from psycopg import sql

from stream.core.records import MaskedLogin, Rejection, SeenDevice
from stream.postgres.copy_text import line, text, timestamp
from stream.postgres.schema import Tables
from stream.postgres.sink import Row, TableSpec, copy_to_staging

LOGIN_COLUMNS = (
    "message_id",
    "user_id",
    "device_type",
    "masked_ip",
    "masked_device_id",
    "locale",
    "app_version",
    "app_version_full",
    "create_date",
    "sent_at",
    "envelope_kind",
    "envelope_id",
    "raw_position",
)
REJECTION_COLUMNS = ("message_id", "sent_at", "rejected_at", "reason", "body_token", "raw_position")


def logins_spec(table: str) -> TableSpec:
    return TableSpec(table, LOGIN_COLUMNS)


def rejections_spec(table: str) -> TableSpec:
    return TableSpec(table, REJECTION_COLUMNS)


def login_row(login: MaskedLogin, position: str = "") -> Row:
    """*login*'s row of the logins table, as a line of COPY text (LOGIN_COLUMNS);
    *position* is where its raw record is (empty: unknown)."""
    return line(
        (
            text(login.message_id),
            text(login.user_id),
            text(login.device_type),
            login.masked_ip,  # tokens hold only letters, digits and -_:=
            login.masked_device_id,
            text(login.locale),
            str(login.app_version),
            text(login.app_version_full),
            login.create_date,  # ISO, from stream.core.timestamps.utc_date
            timestamp(login.sent_at_ms),
            text(login.envelope_kind),
            text(login.envelope_id),
            text(position or None),
        )
    )


def rejection_row(rejection: Rejection, position: str = "") -> Row:
    """*rejection*'s row of the rejections table, as a line of COPY text
    (REJECTION_COLUMNS); *position* as for :func:`login_row`."""
    return line(
        (
            text(rejection.message_id),
            timestamp(rejection.sent_at_ms),
            timestamp(rejection.rejected_at_ms),
            text(rejection.reason),
            rejection.body_token,
            text(position or None),
        )
    )


def to_epoch_ms(moment: datetime | None) -> int:
    return 0 if moment is None else int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A device's ``seen_devices`` entry after a transaction, and how many of
    that transaction's rows were new for it (0 for a redelivery or replay)."""

    masked_device_id: str
    entry: SeenDevice
    new_logins: int


# One statement, one round trip: insert the rows not yet present, count what
# was inserted per device, and add exactly that to each device of the batch.
# The per-device work is proportional to the batch, never to a device's
# history. Every device of the batch is upserted, by +0 if it gained nothing,
# so the statement returns the absolute state of all of them: a redelivered
# batch rewrites a changelog entry that a crash after the commit left out.
# Rows and devices are locked in key order, so concurrent workers whose
# batches overlap wait for each other instead of deadlocking.
INSERT_LOGINS = """
WITH batch AS (
    SELECT DISTINCT masked_device_id FROM {staging}
), inserted AS (
    INSERT INTO {logins} ({columns})
    SELECT {columns} FROM {staging} ORDER BY message_id
    ON CONFLICT DO NOTHING
    RETURNING masked_device_id, sent_at
), added AS (
    SELECT masked_device_id, min(sent_at) AS first_seen, max(sent_at) AS last_seen,
           count(*) AS logins
      FROM inserted GROUP BY masked_device_id
), upserted AS (
    INSERT INTO {devices} AS d (masked_device_id, first_seen, last_seen, login_count)
    SELECT b.masked_device_id, a.first_seen, a.last_seen, coalesce(a.logins, 0)
      FROM batch b LEFT JOIN added a USING (masked_device_id)
     ORDER BY b.masked_device_id
    ON CONFLICT (masked_device_id) DO UPDATE SET
        first_seen = least(d.first_seen, excluded.first_seen),
        last_seen = greatest(d.last_seen, excluded.last_seen),
        login_count = d.login_count + excluded.login_count
    RETURNING d.masked_device_id, d.first_seen, d.last_seen, d.login_count
)
SELECT u.masked_device_id, {first_ms}, {last_ms}, u.login_count, coalesce(a.logins, 0)
  FROM upserted u LEFT JOIN added a USING (masked_device_id)
"""
# Epoch milliseconds computed by the server: cheaper than a datetime per device.
EPOCH_MS = "coalesce((extract(epoch FROM {}) * 1000)::bigint, 0)"


async def insert_logins(
    conn: psycopg.AsyncConnection, tables: Tables, rows: Sequence[Row]
) -> list[DeviceState]:
    """Insert the login *rows* not yet present and update their devices; the
    state of every device of *rows* afterwards. Runs inside the caller's
    transaction."""
    spec = logins_spec(tables.logins)
    statement = sql.SQL(INSERT_LOGINS).format(
        staging=sql.Identifier(spec.staging),
        logins=sql.Identifier(tables.logins),
        devices=sql.Identifier(tables.devices),
        columns=sql.SQL(", ").join(map(sql.Identifier, spec.columns)),
        first_ms=sql.SQL(EPOCH_MS.format("u.first_seen")),
        last_ms=sql.SQL(EPOCH_MS.format("u.last_seen")),
    )
    async with conn.cursor() as cur:
        await copy_to_staging(cur, spec, rows)
        await cur.execute(statement)
        returned = await cur.fetchall()
    return [
        DeviceState(device, SeenDevice(first, last, count), new)
        for device, first, last, count, new in returned
    ]


async def device_entry(conn: psycopg.AsyncConnection, table: str, device: str) -> SeenDevice | None:
    """One device's entry as the database holds it (exact: written with its rows)."""
    cursor = await conn.execute(
        sql.SQL(
            "SELECT first_seen, last_seen, login_count FROM {} WHERE masked_device_id = %s"
        ).format(sql.Identifier(table)),
        (device,),
    )
    found = await cursor.fetchone()
    await conn.rollback()
    if found is None:
        return None
    first, last, count = found
    return SeenDevice(to_epoch_ms(first), to_epoch_ms(last), count)


async def row_writers(
    conn: psycopg.AsyncConnection,
    table: str,
    message_ids: Sequence[str],
    time_column: str,
    times: Sequence[date],
) -> list[tuple[str, str]]:
    """(message id, raw position) of the rows of *table* holding *message_ids*:
    which raw record wrote each (rows written before positions were recorded
    have none, and are left out). *times* are the values of *time_column* (the
    partition key) of those rows: a partitioned table is searched only in
    their partitions, one index lookup per id in each, never in every
    partition of its history; a plain one filters on them for free."""
    cursor = await conn.execute(
        sql.SQL(
            "SELECT message_id, raw_position FROM {} WHERE message_id = ANY(%s)"
            " AND {} = ANY(%s) AND raw_position IS NOT NULL"
        ).format(sql.Identifier(table), sql.Identifier(time_column)),
        (list(message_ids), sorted(set(times))),
    )
    return [(message_id, position) for message_id, position in await cursor.fetchall()]
