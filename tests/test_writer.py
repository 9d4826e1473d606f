"""The batch writer against the real PostgreSQL: one transaction a batch,
device state exact and O(batch), concurrent writers that never deadlock."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from stream.common.retry import Backoff
from stream.core.batch import Outcome
from stream.core.records import MaskedLogin, RawLogin, Rejection
from stream.postgres.connect import Database
from stream.postgres.rows import insert_logins, login_row, logins_spec
from stream.postgres.schema import Tables, ensure_schema
from stream.postgres.sink import REPEATS_BEFORE_ISOLATING, create_staging
from stream.postgres.writer import BatchWriter, Written
from tests.support.sandbox import IsolatedPipeline

pytestmark = pytest.mark.services

TABLES = Tables()
START = datetime(2024, 1, 1, tzinfo=UTC)


def row(device: str, seconds: int = 0, message_id: str | None = None, user: str = "u") -> str:
    """A login's row as the writer COPYs it."""
    login = outcome(device, seconds, message_id, user).login
    assert login is not None
    return login_row(login)


def outcome(
    device: str, seconds: int = 0, message_id: str | None = None, user: str = "u"
) -> Outcome:
    """A masked login as the core hands it to the writer."""
    message_id = message_id or str(uuid.uuid4())
    sent_ms = int((START + timedelta(seconds=seconds)).timestamp() * 1000)
    login = MaskedLogin(
        message_id, user, "android", "masked-ip", device, None, 2, "2.3.0", sent_ms, "2024-01-01"
    )
    return Outcome(RawLogin(message_id, sent_ms, b"{}"), 0, login=login)


def run_writer(
    pipe: IsolatedPipeline, *batches: list[Outcome], database_url: str = ""
) -> list[Written]:
    async def write_all() -> list[Written]:
        writer = BatchWriter(Database(database_url or pipe.database_url), TABLES)
        try:
            return [await writer.write(batch) for batch in batches]
        finally:
            await writer.close()

    return asyncio.run(write_all())


def test_device_state_counts_only_rows_the_transaction_inserted(pipeline: IsolatedPipeline) -> None:
    first = [outcome("d1", 10), outcome("d1", 5), outcome("d2", 7)]
    again = [*first, outcome("d1", 20)]  # a redelivery plus one new login
    one, two = run_writer(pipeline, first, again)
    assert one.new_rows == 3 and two.new_rows == 1
    assert two.devices["d1"].entry.login_count == 3
    assert two.devices["d1"].new_logins == 1
    assert two.devices["d2"].entry.login_count == 1  # redelivered, absolute state returned
    assert two.devices["d2"].new_logins == 0
    d1 = two.devices["d1"].entry
    assert (d1.first_seen_ms, d1.last_seen_ms) == (
        int((START + timedelta(seconds=5)).timestamp() * 1000),
        int((START + timedelta(seconds=20)).timestamp() * 1000),
    )
    assert pipeline.device_mismatches() == {}


def test_values_with_copy_special_characters_are_stored_exactly(
    pipeline: IsolatedPipeline,
) -> None:
    """The writer formats COPY text itself (stream.postgres.copy_text): every
    character COPY treats specially, and text that looks like its NULL marker
    or end-of-data line, comes back as it went in."""
    tricky = ["tab\there", "new\nline", "back\\slash", "cr\rx", "\\N", "\\.", "é😀 \\t"]
    batch = []
    for index, value in enumerate(tricky):
        sent_ms = 1_700_000_000_123 + index
        login = MaskedLogin(
            f"id-{value}",
            value,
            value,
            "masked-ip",
            "d1",
            value,
            2,
            value,
            sent_ms,
            "2023-11-14",
            envelope_kind=value,
            envelope_id=value,
        )
        batch.append(Outcome(RawLogin(login.message_id, sent_ms, b"{}"), 0, login=login))
    (written,) = run_writer(pipeline, batch)
    assert written.new_rows == len(tricky) and not written.refused
    stored = pipeline.query(
        "SELECT message_id, user_id, device_type, locale, app_version_full, envelope_kind,"
        " envelope_id, (extract(epoch FROM sent_at) * 1000)::bigint FROM user_logins"
        " ORDER BY sent_at"
    )
    assert stored == [
        (f"id-{v}", v, v, v, v, v, v, 1_700_000_000_123 + i) for i, v in enumerate(tricky)
    ]


def test_a_database_in_another_encoding_gets_text_exactly_or_refuses_the_row(
    pipeline: IsolatedPipeline,
) -> None:
    """The writer speaks UTF-8 to every database, whatever its encoding and
    the URL's client_encoding say: a LATIN1 database stores "José" as four
    characters (not the UTF-8 bytes read as LATIN1), and refuses only the row
    holding a character LATIN1 lacks, with the server's reason."""
    pipeline.drop_database()
    pipeline.create_database(encoding="LATIN1")
    accented, rocket, plain = (
        outcome("d1", 1, user="José"),
        outcome("d1", 2, user="rocket 🚀"),
        outcome("d1", 3, user="plain"),
    )
    (written,) = run_writer(
        pipeline,
        [accented, rocket, plain],
        database_url=pipeline.database_url + "?client_encoding=LATIN1",
    )
    assert written.new_rows == 2
    ((refused, reason),) = written.refused
    assert refused is rocket and "LATIN1" in reason
    assert pipeline.query("SELECT user_id, length(user_id) FROM user_logins ORDER BY 1") == [
        ("José", 4),
        ("plain", 5),
    ]
    assert pipeline.device_mismatches() == {}


def test_a_revoked_grant_is_waited_out_not_taken_for_bad_rows(
    pipeline: IsolatedPipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer's role loses INSERT on user_logins (an operator's mistake;
    a read-only standby after a failover is alike): every attempt fails with
    one error, again and again, past the repeats after which an unknown error
    is taken for a poison row. It is the server's state, never the rows': the
    batch waits and is written whole once the grant is back, no row refused."""
    role = f"{pipeline.name}_writer"
    admin = sql.SQL
    with psycopg.connect(pipeline.admin_url, autocommit=True) as conn:
        conn.execute(admin("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            admin("GRANT ALL ON DATABASE {} TO {}").format(
                sql.Identifier(pipeline.name), sql.Identifier(role)
            )
        )
    with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
        conn.execute(admin("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(role)))
    as_role = pipeline.database_url.replace("://postgres@", f"://{role}@")
    assert as_role != pipeline.database_url
    run_writer(pipeline, [outcome("d0")], database_url=as_role)  # its own tables

    def grant(statement: str) -> None:
        with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
            conn.execute(admin(statement).format(sql.Identifier(role)))

    def retries_logged() -> int:
        return sum("permission denied" in r.getMessage() for r in caplog.records)

    batch = [outcome(f"d{n % 3}", n) for n in range(10)]

    async def write_through_a_revoked_grant() -> Written:
        writer = BatchWriter(Database(as_role), TABLES)
        writer.sink.backoff = Backoff(base=0.05, cap=0.2)
        try:
            await writer.sink.connection()  # prepared while the grant holds
            grant("REVOKE INSERT ON user_logins FROM {}")
            write = asyncio.create_task(writer.write(batch))
            while retries_logged() < 2 * REPEATS_BEFORE_ISOLATING and not write.done():
                await asyncio.sleep(0.05)
            await asyncio.to_thread(grant, "GRANT INSERT ON user_logins TO {}")
            return await write
        finally:
            await writer.close()

    try:
        written = asyncio.run(write_through_a_revoked_grant())
    finally:
        with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
            conn.execute(admin("REASSIGN OWNED BY {} TO postgres").format(sql.Identifier(role)))
            conn.execute(admin("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(pipeline.admin_url, autocommit=True) as conn:
            conn.execute(
                admin("REVOKE ALL ON DATABASE {} FROM {}").format(
                    sql.Identifier(pipeline.name), sql.Identifier(role)
                )
            )
            conn.execute(admin("DROP ROLE {}").format(sql.Identifier(role)))
    assert retries_logged() >= 2 * REPEATS_BEFORE_ISOLATING
    assert written.new_rows == len(batch) and not written.refused
    assert pipeline.query("SELECT count(*) FROM rejected_logins") == [(0,)]
    assert pipeline.device_mismatches() == {}


def test_an_unknown_error_of_one_row_refuses_that_row_after_a_few_repeats(
    pipeline: IsolatedPipeline,
) -> None:
    """An error neither about the server's state nor a known row error (here a
    trigger of the user's that raises for one row) fails the whole batch
    identically a few times; then the batch is bisected and that row alone
    refused, with the database's reason, so it cannot hold a partition."""
    run_writer(pipeline, [outcome("d0")])  # the schema in place
    pipeline.execute(
        "CREATE FUNCTION refuse_cursed() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF NEW.user_id = 'cursed' THEN RAISE EXCEPTION 'cursed row'; END IF;"
        " RETURN NEW; END $$;"
        " CREATE TRIGGER refuse_cursed BEFORE INSERT ON user_logins"
        " FOR EACH ROW EXECUTE FUNCTION refuse_cursed()"
    )
    cursed = outcome("d1", 1, user="cursed")
    batch = [outcome("d1", 2), cursed, outcome("d2", 3)]

    async def write() -> Written:
        writer = BatchWriter(Database(pipeline.database_url), TABLES)
        writer.sink.backoff = Backoff(base=0.05, cap=0.2)
        try:
            return await writer.write(batch)
        finally:
            await writer.close()

    written = asyncio.run(write())
    assert written.new_rows == 2
    assert written.refused == [(cursed, "database refused row: cursed row")]
    assert pipeline.device_mismatches() == {}


def test_refused_rows_are_returned_and_the_rest_committed(pipeline: IsolatedPipeline) -> None:
    good = [outcome("d1") for _ in range(6)]
    nul, surrogate = outcome("d2", user="nul\x00inside"), outcome("d3", user="lone \ud800")
    rejected = Outcome(RawLogin("bad", 0, b"x"), 0, rejection=Rejection("bad", 0, 0, "why", "t"))
    (written,) = run_writer(pipeline, [*good[:3], nul, rejected, *good[3:], surrogate])
    assert written.new_rows == 6
    assert [refused for refused, _ in written.refused] == [nul, surrogate]
    assert "0x00" in written.refused[0][1]
    assert "UTF-8" in written.refused[1][1]
    assert pipeline.query("SELECT message_id, reason FROM rejected_logins") == [("bad", "why")]
    assert pipeline.device_mismatches() == {}

    async def store() -> None:
        writer = BatchWriter(Database(pipeline.database_url), TABLES)
        try:
            await writer.store_rejections([(Rejection("refused", 0, 0, "NUL", "t"), "")])
        finally:
            await writer.close()

    asyncio.run(store())
    assert len(pipeline.query("SELECT 1 FROM rejected_logins")) == 2


def test_concurrent_writers_with_overlapping_batches_never_deadlock(
    pipeline: IsolatedPipeline,
) -> None:
    """Two connections write the same small batches at once, in opposite
    orders (a redelivery racing the original across a rebalance), over a few
    shared devices: without key-ordered locking these deadlock."""
    with psycopg.connect(pipeline.database_url) as conn:
        ensure_schema(conn, TABLES)
        # insert_logins alone: the partition the writer would make first.
        conn.execute("SELECT maskstream_create_partition('user_logins', '2024-01-01', NULL)")
    devices = [f"d{n}" for n in range(12)]
    rng = random.Random(7)
    batches = [
        [row(rng.choice(devices), rng.randrange(1000)) for _ in range(200)] for _ in range(60)
    ]

    async def writer(mine: list[list[tuple]], barrier: asyncio.Barrier) -> None:
        async with await psycopg.AsyncConnection.connect(pipeline.database_url) as conn:
            await create_staging(conn, logins_spec(TABLES.logins))
            await conn.commit()
            for batch in mine:
                await barrier.wait()  # both transactions of a batch run at once
                async with conn.transaction():  # a deadlock raises here: no retry
                    await insert_logins(conn, TABLES, batch)

    async def both() -> None:
        barrier = asyncio.Barrier(2)
        reversed_batches = [batch[::-1] for batch in batches]
        await asyncio.gather(writer(batches, barrier), writer(reversed_batches, barrier))

    asyncio.run(both())
    assert pipeline.query("SELECT count(*) FROM user_logins") == [(60 * 200,)]
    assert pipeline.device_mismatches() == {}


def test_an_existing_table_is_backfilled_into_seen_devices_once(pipeline: IsolatedPipeline) -> None:
    """The exercise's 7-column table with rows and no seen_devices: migrated
    under the schema lock, the device state derived from the rows once."""
    pipeline.execute(
        """CREATE TABLE user_logins(
            user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
            masked_device_id varchar(256), locale varchar(32), app_version integer,
            create_date date);
        INSERT INTO user_logins VALUES
            ('u', 'ios', 'ip', 'old-1', NULL, 1, '2020-05-01'),
            ('u', 'ios', 'ip', 'old-1', NULL, 1, '2020-05-03'),
            ('u', 'ios', 'ip', 'old-2', NULL, 1, '2020-06-01')"""
    )
    run_writer(pipeline, [outcome("old-1"), outcome("new-1")])
    counts = dict(pipeline.query("SELECT masked_device_id, login_count FROM seen_devices"))
    assert counts == {"old-1": 3, "old-2": 1, "new-1": 1}
    first = pipeline.query("SELECT first_seen FROM seen_devices WHERE masked_device_id = 'old-1'")
    assert first[0][0].date() == date(2020, 5, 1)
    run_writer(pipeline, [outcome("old-2")])  # a later start does not backfill again
    assert pipeline.device_mismatches() == {}
