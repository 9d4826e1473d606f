"""Least privilege: ``maskstream migrate`` with the owner role, workers with a
runtime role that has only the documented grants (docs/operations.md)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from stream.cli import main
from stream.postgres.audit import AuditEntry, write_audit
from stream.postgres.catalog import expected_schema, missing
from stream.postgres.connect import Database
from stream.postgres.roles import runtime_grants, unmask_grants
from stream.postgres.schema import SCHEMA_TEMPLATES, Tables
from stream.postgres.writer import BatchWriter
from tests.support.sandbox import IsolatedPipeline, RawMessage
from tests.test_local_state import logins
from tests.test_writer import outcome

TABLES = Tables()
OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


# -- pure: what the check looks for, what the docs say --------------------------------


def test_the_check_looks_for_every_object_the_schema_statements_create() -> None:
    expected = expected_schema(TABLES)
    assert expected.tables == {"user_logins", "rejected_logins", "seen_devices"}
    assert ("user_logins", "envelope_id") in expected.columns  # an ADD COLUMN
    assert ("seen_devices", "login_count") in expected.columns  # a CREATE TABLE column
    assert ("user_logins", "ingested_at") in expected.defaults  # ALTER ... SET DEFAULT
    assert ("user_logins", "user_logins_message_id_key") in expected.indexes
    assert expected.functions == {"maskstream_create_partition", "maskstream_drop_partitions"}
    added = {template.split()[-2] for template in SCHEMA_TEMPLATES if "ADD COLUMN" in template}
    assert {("user_logins", column) for column in added} <= expected.columns


def test_a_statement_the_check_cannot_read_fails_loudly() -> None:
    with pytest.raises(ValueError, match="not understood"):
        expected_schema(TABLES, ["ALTER TABLE {logins} DROP COLUMN x"])


def test_a_missing_table_stands_for_its_columns() -> None:
    expected = expected_schema(TABLES)
    present = [(t, "column", c, (t, c) in expected.defaults) for t, c in expected.columns]
    present += [(t, "index", i, False) for t, i in expected.indexes]
    present += [(f, "function", f, False) for f in expected.functions]
    assert missing(expected, present) == []
    without_devices = [row for row in present if row[0] != "seen_devices"]
    assert missing(expected, without_devices) == ["table seen_devices"]
    no_default = [(t, k, n, False) for t, k, n, _ in present]
    assert missing(expected, no_default) == [
        "default of rejected_logins.rejected_at",
        "default of user_logins.ingested_at",
    ]


def test_the_docs_give_the_exact_grants() -> None:
    docs = OPERATIONS.read_text()
    for statement in [*runtime_grants(TABLES, "maskstream_worker"), *unmask_grants("analyst")]:
        assert statement.as_string(None) in docs


# -- on the real PostgreSQL ---------------------------------------------------------


class Throwaway:
    """A database of its own, whose owner is the stack's superuser, and a login
    role of its own (cluster-wide, so dropped after the database)."""

    def __init__(self, stack_env: dict[str, str], tmp_path: Path) -> None:
        self.pipe = IsolatedPipeline(stack_env, tmp_path)
        self.owner_url = self.pipe.database_url
        self.role = f"{self.pipe.name}_runtime"
        self.role_url = self.owner_url.replace("postgres@", f"{self.role}@", 1)

    def __enter__(self) -> Throwaway:
        self.pipe.create_database()
        with psycopg.connect(self.owner_url, autocommit=True) as conn:
            # As PostgreSQL 15+ has it: only owners create in public (older
            # releases let every role: the docs say to revoke it there).
            conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(self.role)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.pipe.drop_database()
        with psycopg.connect(self.pipe.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(self.role)))

    def migrate(self, *args: str) -> int:
        return main(["migrate", *args])


@pytest.fixture
def throwaway(
    stack_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Throwaway]:
    with Throwaway(stack_env, tmp_path) as database:
        monkeypatch.setenv("DATABASE_URL", database.owner_url)
        yield database


def write(url: str, batch: list, timeout: float = 30.0) -> int:
    async def go() -> int:
        writer = BatchWriter(Database(url), TABLES)
        try:
            return (await asyncio.wait_for(writer.write(batch), timeout)).new_rows
        finally:
            await writer.close()

    return asyncio.run(go())


@pytest.mark.services
def test_migrate_is_idempotent_and_says_what_it_did(
    throwaway: Throwaway, capsys: pytest.CaptureFixture[str]
) -> None:
    assert throwaway.migrate("--grant-runtime", throwaway.role) == 0
    first = capsys.readouterr().out
    assert "created table user_logins" in first
    assert "backfilled seen_devices: 0 devices" in first
    assert "created table unmask_audit" in first
    assert f'GRANT SELECT, INSERT, UPDATE ON TABLE "seen_devices" TO "{throwaway.role}"' in first
    assert throwaway.migrate() == 0
    assert capsys.readouterr().out == "schema already current\n"


@pytest.mark.services
def test_migrate_refuses_in_one_line_without_rights_or_server(
    throwaway: Throwaway, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", throwaway.role_url)
    assert throwaway.migrate() == 2
    error = capsys.readouterr().err
    assert error.startswith("maskstream migrate: migration failed") and error.count("\n") == 1
    assert "permission denied" in error
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
    assert throwaway.migrate() == 2
    error = capsys.readouterr().err
    assert error.startswith("maskstream migrate: cannot connect") and error.count("\n") == 1


@pytest.mark.services
def test_a_runtime_role_with_the_documented_grants_writes_and_cannot_destroy(
    throwaway: Throwaway,
) -> None:
    assert throwaway.migrate("--grant-runtime", throwaway.role) == 0
    batch = [outcome("d1", 1), outcome("d1", 2), outcome("d2", 3)]
    with psycopg.connect(throwaway.owner_url, autocommit=True) as holder:
        # A current schema is checked without the schema lock: held elsewhere, no wait.
        holder.execute("SELECT pg_advisory_lock(hashtext('maskstream.schema'))")
        assert write(throwaway.role_url, batch, timeout=10.0) == 3
    assert write(throwaway.role_url, [*batch, outcome("d2", 4)]) == 1  # ON CONFLICT paths
    with psycopg.connect(throwaway.role_url, autocommit=True) as conn:
        assert conn.execute("SELECT login_count FROM seen_devices ORDER BY 1").fetchall() == [
            (2,),
            (2,),
        ]
        for statement in (
            "DROP TABLE user_logins",
            "ALTER TABLE user_logins ADD COLUMN x int",
            "ALTER TABLE seen_devices DROP COLUMN login_count",
            "DELETE FROM user_logins",
            "TRUNCATE rejected_logins",
            "CREATE TABLE elsewhere (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


@pytest.mark.services
def test_a_runtime_role_on_an_unmigrated_database_retries_and_says_to_migrate(
    throwaway: Throwaway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="stream.postgres.migration")
    with pytest.raises(TimeoutError):
        write(throwaway.role_url, [outcome("d1")], timeout=2.0)
    (line,) = {record.getMessage() for record in caplog.records}
    assert "run `maskstream migrate` with the owner role" in line
    assert "table user_logins" in line


@pytest.mark.services
def test_an_unmask_role_only_adds_audit_rows(throwaway: Throwaway) -> None:
    assert throwaway.migrate() == 0
    with psycopg.connect(throwaway.owner_url, autocommit=True) as conn:
        for statement in unmask_grants(throwaway.role):
            conn.execute(statement)
    entry = AuditEntry("me", "host", 1, ["user_id"], ["k1"], "arguments", None)
    assert write_audit(Database(throwaway.role_url), entry) == 1
    with psycopg.connect(throwaway.role_url, autocommit=True) as conn:
        for statement in ("SELECT * FROM unmask_audit", "DELETE FROM unmask_audit"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


@pytest.mark.services
def test_workers_with_only_the_runtime_grants_run_the_pipeline(
    stack_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner migrates and grants; a worker whose DATABASE_URL is the
    runtime role's starts, finds the schema current, and writes every row,
    rejection and seen_devices entry (and the outputs) exactly."""
    with IsolatedPipeline(stack_env, tmp_path) as pipe:
        role = f"{pipe.name}_runtime"
        try:
            with psycopg.connect(pipe.database_url, autocommit=True) as conn:
                conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            monkeypatch.setenv("DATABASE_URL", pipe.database_url)
            assert main(["migrate", "--grant-runtime", role]) == 0
            runtime_url = pipe.database_url.replace("postgres@", f"{role}@", 1)
            messages = [*logins(range(15), 2), RawMessage(str(uuid.uuid4()), b"{}")]
            pipe.launcher.start_worker("worker", extra_env={"DATABASE_URL": runtime_url})
            pipe.produce_raw(messages)
            pipe.wait_for_outcomes(len(messages))
            assert pipe.row_count() == 30
            assert pipe.device_mismatches() == {}
            assert pipe.output_mismatches() == {}
            assert "run `maskstream migrate`" not in pipe.launcher.log("worker")
        finally:
            pipe.launcher.stop_all()
            pipe.drop_database()
            with psycopg.connect(pipe.admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
