"""How records become rows of ``user_logins`` and ``rejected_logins``, and how
``seen_devices`` entries are derived back from those rows."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime

import psycopg
from psycopg import sql

from stream.records import MaskedLogin, Rejection, SeenDevice
from stream.sink import Row, TableSpec

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
)
REJECTION_COLUMNS = ("message_id", "sent_at", "rejected_at", "reason", "body_token")


def logins_spec(table: str) -> TableSpec:
    return TableSpec(table, LOGIN_COLUMNS)


def rejections_spec(table: str) -> TableSpec:
    return TableSpec(table, REJECTION_COLUMNS)


def from_epoch_ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


def login_row(login: MaskedLogin) -> Row:
    return (
        login.message_id,
        login.user_id,
        login.device_type,
        login.masked_ip,
        login.masked_device_id,
        login.locale,
        login.app_version,
        login.app_version_full,
        date.fromisoformat(login.create_date),
        from_epoch_ms(login.sent_at_ms),
    )


def rejection_row(rejection: Rejection) -> Row:
    return (
        rejection.message_id,
        from_epoch_ms(rejection.sent_at_ms),
        from_epoch_ms(rejection.rejected_at_ms),
        rejection.reason,
        rejection.body_token,
    )


async def device_summaries(
    conn: psycopg.AsyncConnection, table: str, device_ids: Iterable[str]
) -> dict[str, SeenDevice]:
    """``seen_devices`` entries recomputed from the rows themselves.

    Deriving the entry from ``user_logins`` (rather than adding one per event)
    makes the update idempotent: a redelivered batch, a restart between the
    database commit and the changelog write, or a replay all leave the count
    equal to the number of rows for the device.
    """
    async with conn.cursor() as cur:
        await cur.execute(
            sql.SQL(
                """SELECT masked_device_id, count(*), min(sent_at), max(sent_at)
                     FROM {} WHERE masked_device_id = ANY(%s)
                    GROUP BY masked_device_id"""
            ).format(sql.Identifier(table)),
            (list(device_ids),),
        )
        rows = await cur.fetchall()
    await conn.commit()
    return {
        device: SeenDevice(
            first_seen_ms=int(first.timestamp() * 1000),
            last_seen_ms=int(last.timestamp() * 1000),
            login_count=count,
        )
        for device, count, first, last in rows
    }
