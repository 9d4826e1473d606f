"""Time partitions: the range arithmetic (pure), and on the real PostgreSQL
servers of the stack: days on both sides of midnight, redeliveries, a
partition missing or dropped under a writer, retention, the runtime role,
PostgreSQL 10 and an existing plain table that stays plain until converted."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from stream.cli import main
from stream.common import settings as settings_module
from stream.core.batch import Outcome
from stream.core.records import MaskedLogin, RawLogin, Rejection
from stream.ops.status.figures import DatabaseCounts
from stream.ops.status.postgres_counts import database_counts
from stream.postgres.connect import Database
from stream.postgres.partitions import (
    DayRange,
    Interval,
    days_ahead,
    parse_range,
    partition_name,
    range_for,
    range_of,
)
from stream.postgres.schema import Tables, choose_layout, ensure_schema
from stream.postgres.upkeep import keep_partitions
from stream.postgres.writer import BatchWriter, Written
from tests.support.sandbox import IsolatedPipeline
from tests.test_exercise import SEVEN_COLUMNS
from tests.test_migrate import Throwaway

TABLES = Tables()
TABLES_GROWING = ("user_logins", "rejected_logins")

# -- pure -------------------------------------------------------------------------------


def test_a_day_week_and_month_hold_their_days() -> None:
    day = date(2024, 12, 31)  # a Tuesday, the year's last day
    assert range_of(day, Interval.DAY) == DayRange(day, date(2025, 1, 1))
    assert range_of(day, Interval.WEEK) == DayRange(date(2024, 12, 30), date(2025, 1, 6))
    assert range_of(day, Interval.MONTH) == DayRange(date(2024, 12, 1), date(2025, 1, 1))
    assert range_of(date(2024, 2, 29), Interval.MONTH) == DayRange(
        date(2024, 2, 1), date(2024, 3, 1)
    )
    for interval in (Interval.DAY, Interval.WEEK, Interval.MONTH):
        assert day in range_of(day, interval)
        # The calendar's last day (where timestamps are clamped to) has a range.
        assert date.max in range_of(date.max, interval)
    with pytest.raises(ValueError):
        range_of(day, Interval.NONE)


def test_names_are_the_range_start_and_never_truncated() -> None:
    assert partition_name("user_logins", date(2024, 1, 5)) == "user_logins_p20240105"
    assert len(partition_name("x" * 53, date(2024, 1, 5)).encode()) == 63
    with pytest.raises(ValueError, match="longer than 63 bytes"):
        partition_name("x" * 54, date(2024, 1, 5))


def test_a_range_is_narrowed_to_fit_between_existing_partitions() -> None:
    converted = DayRange(date(2020, 1, 1), date(2024, 3, 16))  # an attached old table
    assert range_for(date(2024, 3, 20), Interval.MONTH, [converted]) == DayRange(
        date(2024, 3, 16), date(2024, 4, 1)
    )
    later = DayRange(date(2024, 3, 25), date(2024, 3, 26))
    assert range_for(date(2024, 3, 20), Interval.MONTH, [converted, later]) == DayRange(
        date(2024, 3, 16), date(2024, 3, 25)
    )
    with pytest.raises(ValueError, match="already has a partition"):
        range_for(date(2021, 1, 1), Interval.DAY, [converted])


def test_bounds_as_postgresql_prints_them_are_read_in_utc() -> None:
    assert parse_range("FOR VALUES FROM ('2024-01-01') TO ('2024-01-02')") == DayRange(
        date(2024, 1, 1), date(2024, 1, 2)
    )
    # A timestamptz bound printed in a session's time zone is still UTC midnight.
    assert parse_range(
        "FOR VALUES FROM ('2024-01-01 01:00:00+01') TO ('2024-01-02 01:00:00+01')"
    ) == DayRange(date(2024, 1, 1), date(2024, 1, 2))
    assert parse_range("FOR VALUES FROM ('9999-12-31') TO (MAXVALUE)") == DayRange(date.max, None)
    assert parse_range("DEFAULT") is None


def test_upkeep_makes_the_current_and_next_ranges() -> None:
    assert days_ahead(date(2024, 1, 30), Interval.DAY, 2) == [
        date(2024, 1, 30),
        date(2024, 1, 31),
        date(2024, 2, 1),
    ]
    assert days_ahead(date(2024, 1, 30), Interval.MONTH, 1) == [date(2024, 1, 30), date(2024, 2, 1)]


def test_existing_tables_keep_their_layout_and_postgresql_10_stays_plain() -> None:
    new = {"user_logins": None, "rejected_logins": None}
    layout, reasons = choose_layout(new, 150004, TABLES)
    assert (layout.logins_partitioned, layout.rejections_partitioned, reasons) == (True, True, [])
    layout, reasons = choose_layout(new, 100023, TABLES)
    assert not layout.logins_partitioned and "PostgreSQL 10 cannot" in reasons[0]
    layout, reasons = choose_layout({"user_logins": "r", "rejected_logins": None}, 150004, TABLES)
    assert (layout.logins_partitioned, layout.rejections_partitioned) == (False, True)
    assert reasons == [
        "user_logins exists as a plain table and stays plain; "
        "`maskstream migrate --partition` converts it"
    ]
    layout, reasons = choose_layout(new, 150004, Tables(interval=Interval.NONE))
    assert not layout.logins_partitioned and reasons == []


# -- on the real PostgreSQL -------------------------------------------------------------


def login_at(moment: datetime, message_id: str | None = None, device: str = "d1") -> Outcome:
    """A masked login sent at *moment* (its create_date is that UTC day)."""
    message_id = message_id or str(uuid.uuid4())
    sent_ms = int(moment.timestamp() * 1000)
    login = MaskedLogin(
        message_id,
        "u",
        "android",
        "masked-ip",
        device,
        None,
        2,
        "2.3.0",
        sent_ms,
        moment.astimezone(UTC).date().isoformat(),
    )
    return Outcome(
        RawLogin(message_id, sent_ms, b"{}", position=f"raw:0:{message_id}"), 0, login=login
    )


def rejection_at(moment: datetime) -> Outcome:
    message_id = str(uuid.uuid4())
    sent_ms = int(moment.timestamp() * 1000)
    rejection = Rejection(message_id, sent_ms, sent_ms, "not JSON", "siv:k1:token")
    return Outcome(RawLogin(message_id, sent_ms, b"x"), 0, rejection=rejection)


def write(url: str, *batches: list[Outcome], tables: Tables = TABLES) -> list[Written]:
    """Each batch through one BatchWriter (a worker's), closed afterwards."""

    async def go() -> list[Written]:
        writer = BatchWriter(Database(url), tables)
        try:
            return [await asyncio.wait_for(writer.write(batch), 60) for batch in batches]
        finally:
            await writer.close()

    return asyncio.run(go())


def partition_rows(pipe: IsolatedPipeline, table: str) -> dict[str, int]:
    """Rows per partition of *table*, by partition name."""
    rows = pipe.query(f"SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1")
    return {name: count for name, count in rows}


def relkind(pipe: IsolatedPipeline, table: str) -> str:
    return str(pipe.query("SELECT relkind FROM pg_class WHERE relname = %s", (table,))[0][0])


MIDNIGHT = datetime(2024, 3, 10, tzinfo=UTC)


@pytest.mark.services
def test_logins_either_side_of_midnight_land_in_their_days_once(
    pipeline: IsolatedPipeline,
) -> None:
    before = login_at(MIDNIGHT - timedelta(milliseconds=1))
    after = login_at(MIDNIGHT)
    rejected = rejection_at(MIDNIGHT - timedelta(milliseconds=1))
    (first,) = write(pipeline.database_url, [before, after, rejected])
    assert first.new_rows == 2
    # A redelivery (same ids, same SentTimestamp) after a restart: a new writer.
    (again,) = write(pipeline.database_url, [before, after, rejected])
    assert again.new_rows == 0 and again.wrote(before) and again.wrote(after)
    assert relkind(pipeline, "user_logins") == "p"
    assert partition_rows(pipeline, "user_logins") == {
        "user_logins_p20240309": 1,
        "user_logins_p20240310": 1,
    }
    assert partition_rows(pipeline, "rejected_logins") == {"rejected_logins_p20240309": 1}
    # sent_at's bounds are UTC midnights, whatever the session's time zone.
    (bound,) = pipeline.query(
        "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = %s",
        ("rejected_logins_p20240309",),
    )
    assert bound[0].startswith("FOR VALUES FROM ('2024-03-09 00:00:00+00')")
    assert pipeline.device_mismatches() == {}


@pytest.mark.services
def test_a_partition_dropped_under_a_writer_is_made_again_and_nothing_is_refused(
    pipeline: IsolatedPipeline,
) -> None:
    async def go() -> list[Written]:
        writer = BatchWriter(Database(pipeline.database_url), TABLES)
        try:
            one = await writer.write([login_at(MIDNIGHT)])
            # The writer believes the day's partition is there; it is not.
            with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
                conn.execute("DROP TABLE user_logins_p20240310")
            two = await asyncio.wait_for(writer.write([login_at(MIDNIGHT)]), 60)
            return [one, two]
        finally:
            await writer.close()

    one, two = asyncio.run(go())
    assert (one.new_rows, two.new_rows, two.refused) == (1, 1, [])
    assert partition_rows(pipeline, "user_logins") == {"user_logins_p20240310": 1}


@pytest.mark.services
def test_retention_drops_whole_days_and_keeps_today(pipeline: IsolatedPipeline) -> None:
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    days = [today - timedelta(days=n) for n in (3, 2, 1, 0)]
    write(pipeline.database_url, [login_at(day) for day in days] + [rejection_at(days[0])])
    database = Database(pipeline.database_url)

    upkeep = asyncio.run(keep_partitions(database, TABLES, 2, today.date()))
    assert upkeep.ran
    dropped = {f"user_logins_p{days[0]:%Y%m%d}", f"user_logins_p{days[1]:%Y%m%d}"}
    assert set(upkeep.dropped) == dropped | {f"rejected_logins_p{days[0]:%Y%m%d}"}
    kept = partition_rows(pipeline, "user_logins")
    assert kept == {f"user_logins_p{days[2]:%Y%m%d}": 1, f"user_logins_p{days[3]:%Y%m%d}": 1}
    # Made ahead: today and three days after, for both tables.
    for ahead in range(4):
        name = f"user_logins_p{today + timedelta(days=ahead):%Y%m%d}"
        assert pipeline.query("SELECT to_regclass(%s) IS NOT NULL", (name,)) == [(True,)]
    # The shortest retention still keeps the current day; none at all is refused.
    asyncio.run(keep_partitions(database, TABLES, 1, today.date()))
    assert partition_rows(pipeline, "user_logins") == {f"user_logins_p{today:%Y%m%d}": 1}
    with (
        psycopg.connect(pipeline.database_url) as conn,
        pytest.raises(psycopg.errors.InvalidParameterValue),
    ):
        conn.execute("SELECT maskstream_drop_partitions('user_logins', 0)")
    # One worker at a time: while another holds the upkeep lock, a round skips.
    with psycopg.connect(pipeline.database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('maskstream.partitions'))")
        assert not asyncio.run(keep_partitions(database, TABLES, 1, today.date())).ran


@pytest.mark.services
def test_the_runtime_role_makes_partitions_only_through_the_function(
    stack_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Throwaway(stack_env, tmp_path) as database:
        monkeypatch.setenv("DATABASE_URL", database.owner_url)
        assert database.migrate("--grant-runtime", database.role) == 0
        batch = [login_at(MIDNIGHT), login_at(MIDNIGHT + timedelta(days=1)), rejection_at(MIDNIGHT)]
        (written,) = write(database.role_url, batch)
        assert written.new_rows == 2
        with psycopg.connect(database.role_url, autocommit=True) as conn:
            for statement in (
                "CREATE TABLE user_logins_p20300101 PARTITION OF user_logins "
                "FOR VALUES FROM ('2030-01-01') TO ('2030-01-02')",
                "DROP TABLE user_logins_p20240310",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
            # The function refuses anything but a partitioned parent.
            with pytest.raises(psycopg.errors.WrongObjectType):
                conn.execute(
                    "SELECT maskstream_create_partition('seen_devices', '2030-01-01', NULL)"
                )
        with psycopg.connect(database.owner_url, autocommit=True) as conn:
            # PUBLIC may not execute the functions: only the granted role.
            (public,) = conn.execute(
                "SELECT has_function_privilege('public', "
                "'maskstream_create_partition(regclass, date, date)', 'EXECUTE')"
            ).fetchone() or (None,)
            assert public is False


@pytest.fixture
def postgres10(stack_env: dict[str, str], tmp_path: Path) -> Iterator[IsolatedPipeline]:
    """A database of its own on the stack's PostgreSQL 10 (no topics)."""
    env = {**stack_env, "DATABASE_URL": stack_env["STACK_POSTGRES10_URL"]}
    pipe = IsolatedPipeline(env, tmp_path, topics_up_front=False)
    pipe.create_database()
    try:
        yield pipe
    finally:
        pipe.drop_database()


@pytest.mark.services
def test_the_exercise_table_on_postgresql_10_stays_plain_and_takes_logins(
    postgres10: IsolatedPipeline, caplog: pytest.LogCaptureFixture
) -> None:
    assert postgres10.query("SHOW server_version_num")[0][0].startswith("10")
    postgres10.execute(SEVEN_COLUMNS)
    caplog.set_level(logging.INFO, logger="stream.postgres.schema")
    batch = [login_at(MIDNIGHT), login_at(MIDNIGHT), rejection_at(MIDNIGHT)]
    assert [w.new_rows for w in write(postgres10.database_url, batch, batch)] == [2, 0]
    assert relkind(postgres10, "user_logins") == "r"
    assert relkind(postgres10, "rejected_logins") == "r"  # created here, plain on 10
    assert postgres10.query("SELECT count(*) FROM user_logins") == [(4,)]
    messages = {record.getMessage() for record in caplog.records}
    assert any("PostgreSQL 10 cannot" in message for message in messages)
    assert any("user_logins exists as a plain table" in message for message in messages)


@pytest.mark.services
def test_a_plain_table_stays_plain_until_converted_and_keeps_its_rows(
    pipeline: IsolatedPipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline.execute(SEVEN_COLUMNS)
    old = [login_at(MIDNIGHT - timedelta(days=5)), login_at(MIDNIGHT), rejection_at(MIDNIGHT)]
    write(pipeline.database_url, old)
    assert relkind(pipeline, "user_logins") == "r"
    assert relkind(pipeline, "rejected_logins") == "p"  # missing, so created partitioned
    # Rejections kept plain too (a deployment from before partitions).
    pipeline.execute("DROP TABLE rejected_logins")
    write(pipeline.database_url, old, tables=Tables(interval=Interval.NONE))
    assert relkind(pipeline, "rejected_logins") == "r"
    before = pipeline.query("SELECT * FROM user_logins ORDER BY user_id, message_id")
    monkeypatch.setenv("DATABASE_URL", pipeline.database_url)

    assert main(["migrate", "--partition"]) == 0
    out = capsys.readouterr().out
    assert "partitioned user_logins: its 4 rows are partition user_logins_p20200101" in out
    assert "partitioned rejected_logins: its 1 rows are partition rejected_logins_p20240310" in out
    assert relkind(pipeline, "user_logins") == "p"
    assert relkind(pipeline, "rejected_logins") == "p"
    assert pipeline.query("SELECT * FROM user_logins ORDER BY user_id, message_id") == before
    # The old rows stay exactly-once; new days get partitions of their own.
    new = login_at(MIDNIGHT + timedelta(days=1))
    (written,) = write(pipeline.database_url, [*old, new, rejection_at(MIDNIGHT)])
    assert written.new_rows == 1 and written.wrote(old[0])
    assert pipeline.query("SELECT count(*) FROM rejected_logins") == [(2,)]
    assert partition_rows(pipeline, "user_logins") == {
        "user_logins_p20200101": 4,
        "user_logins_p20240311": 1,
    }
    assert main(["migrate", "--partition"]) == 0  # nothing left to convert
    assert "partitioned" not in capsys.readouterr().out


@pytest.mark.services
def test_a_table_with_rows_of_no_date_is_not_converted(
    pipeline: IsolatedPipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline.execute(SEVEN_COLUMNS + "INSERT INTO user_logins (user_id) VALUES ('no-date');")
    monkeypatch.setenv("DATABASE_URL", pipeline.database_url)
    assert main(["migrate", "--partition"]) == 2
    assert "1 rows of user_logins have no create_date" in capsys.readouterr().err
    assert relkind(pipeline, "user_logins") == "r"


@pytest.mark.services
def test_conversion_is_refused_on_postgresql_10(
    postgres10: IsolatedPipeline,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    postgres10.execute(SEVEN_COLUMNS)
    monkeypatch.setenv("DATABASE_URL", postgres10.database_url)
    assert main(["migrate", "--partition"]) == 2
    assert "PostgreSQL 10 cannot" in capsys.readouterr().err
    assert relkind(postgres10, "user_logins") == "r"
    with psycopg.connect(postgres10.database_url) as conn:
        ensure_schema(conn)  # still migrates as before


@pytest.mark.services
def test_status_shows_the_partitions_their_days_and_size(
    pipeline: IsolatedPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(pipeline.database_url, [login_at(MIDNIGHT - timedelta(days=1)), login_at(MIDNIGHT)])
    monkeypatch.setenv("DATABASE_URL", pipeline.database_url)
    counts = database_counts(settings_module.load(), timeout=5)
    assert isinstance(counts, DatabaseCounts)
    summaries = dict(counts.partitions)
    assert summaries["rejected_logins"].count == 0  # partitioned, no rejection yet
    summary = summaries["user_logins"]
    assert (summary.count, summary.oldest, summary.newest) == (
        2,
        date(2024, 3, 9),
        date(2024, 3, 10),
    )
    assert summary.total_bytes > 0


@pytest.mark.services
def test_upkeep_at_a_first_start_creates_the_tables_and_the_days_ahead(
    pipeline: IsolatedPipeline,
) -> None:
    today = date(2024, 2, 27)
    upkeep = asyncio.run(keep_partitions(Database(pipeline.database_url), TABLES, 0, today))
    assert upkeep.ran and upkeep.dropped == []
    days = ["20240227", "20240228", "20240229", "20240301"]
    assert upkeep.created == [f"{table}_p{day}" for table in TABLES_GROWING for day in days]
    # A second round finds them all and makes nothing new (the writers' path too).
    again = asyncio.run(keep_partitions(Database(pipeline.database_url), TABLES, 0, today))
    assert again.created == []
