"""``maskstream unmask`` and ``rekey`` against a real PostgreSQL.

Other tests share the database: these create their own uniquely named tables
for rekey, and remove only the audit rows they wrote themselves.
"""

from __future__ import annotations

import getpass
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from stream.cli import keys, main
from stream.common.errors import CommandError
from stream.core.keyring import (
    FILE_VARIABLE,
    INLINE_VARIABLE,
    KeyRing,
    create_keyring_file,
    new_keyring,
    read_keyring_file,
    rotate,
    write_keyring_file,
)
from stream.core.masking import Masker
from stream.postgres import rekey
from stream.postgres.audit import AUDIT_DDL, AUDIT_TABLE
from stream.postgres.rekey import TokenTable, key_counts, rekey_table

IP = "198.51.100.23"
DEVICE = "593-47-5928"


@pytest.fixture
def keyring_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "keyring.json"
    create_keyring_file(path)
    monkeypatch.delenv(INLINE_VARIABLE, raising=False)
    monkeypatch.setenv(FILE_VARIABLE, str(path))
    return path


@pytest.fixture
def masker(keyring_path: Path) -> Masker:
    return Masker(read_keyring_file(keyring_path))


@pytest.fixture
def db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[psycopg.Connection]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def audit_since(db: psycopg.Connection) -> Iterator[int]:
    """The last audit id before the test; afterwards, this user's newer rows are deleted."""
    table = sql.Identifier(AUDIT_TABLE)
    db.execute(sql.SQL(AUDIT_DDL).format(table=table))
    (before,) = db.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(table)).fetchone()
    yield before
    db.execute(
        sql.SQL("DELETE FROM {} WHERE id > %s AND os_user = %s").format(table),
        (before, getpass.getuser()),
    )


def audit_rows(db: psycopg.Connection, since: int) -> list[tuple]:
    """This user's audit rows newer than *since*, oldest first."""
    return db.execute(
        sql.SQL(
            "SELECT os_user, token_count, fields, key_ids, source, query FROM {} "
            "WHERE id > %s AND os_user = %s ORDER BY id"
        ).format(sql.Identifier(AUDIT_TABLE)),
        (since, getpass.getuser()),
    ).fetchall()


# ----------------------------------------------------------------------------- unmask


@pytest.mark.services
def test_unmask_prints_originals_in_order_and_audits(
    masker: Masker,
    db: psycopg.Connection,
    audit_since: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    values = [("ip", IP), ("device_id", DEVICE), ("ip", "2001:db8::1"), ("device_id", "ü-42")]
    tokens = [masker.mask(field, value) for field, value in values]
    assert main(["unmask", *tokens]) == 0
    assert capsys.readouterr().out == "".join(value + "\n" for _, value in values)

    rows = audit_rows(db, audit_since)
    assert len(rows) == 1
    assert rows[0] == (
        getpass.getuser(),
        4,
        ["device_id", "ip"],
        [masker.active_key_id],
        "arguments",
        None,
    )


@pytest.mark.services
def test_unmask_reads_stdin(
    masker: Masker,
    db: psycopg.Connection,
    audit_since: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = f"{masker.mask('ip', IP)}\n\n{masker.mask('device_id', DEVICE)}\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert main(["unmask"]) == 0
    assert capsys.readouterr().out == f"{IP}\n{DEVICE}\n"
    assert [row[4] for row in audit_rows(db, audit_since)] == ["stdin"]


@pytest.mark.services
def test_unmask_query_keeps_row_order_and_nulls(
    masker: Masker,
    db: psycopg.Connection,
    audit_since: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = masker.mask("ip", IP), masker.mask("device_id", DEVICE)
    query = f"SELECT * FROM (VALUES (1, '{first}'), (2, NULL), (3, '{second}')) AS t(n, tok)"
    query = f"SELECT tok FROM ({query}) AS q ORDER BY n"
    assert main(["unmask", "--query", query]) == 0
    assert capsys.readouterr().out == f"{IP}\n\n{DEVICE}\n"
    rows = audit_rows(db, audit_since)
    assert [(row[1], row[4], row[5]) for row in rows] == [(2, "query", query)]


@pytest.mark.services
def test_unmask_refuses_hmac_tokens_and_prints_nothing(
    masker: Masker,
    db: psycopg.Connection,
    audit_since: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hmac_token = Masker(new_keyring("hmac")).mask("ip", IP)
    assert main(["unmask", masker.mask("ip", IP), hmac_token]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "argument 2" in captured.err
    assert "irreversible" in captured.err
    assert IP not in captured.err
    assert audit_rows(db, audit_since) == []


@pytest.mark.services
def test_unmask_refuses_tampered_tokens_without_revealing_values(
    masker: Masker, db: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    token = masker.mask("device_id", DEVICE)
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    assert main(["unmask", tampered]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "failed authentication" in captured.err
    assert DEVICE not in captured.err


@pytest.mark.services
def test_unmask_reads_tokens_of_rotated_keys(
    keyring_path: Path,
    masker: Masker,
    db: psycopg.Connection,
    audit_since: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old_token = masker.mask("ip", IP)
    write_keyring_file(keyring_path, rotate(read_keyring_file(keyring_path)))
    assert main(["unmask", old_token]) == 0
    assert capsys.readouterr().out == f"{IP}\n"


@pytest.mark.services
def test_values_with_line_breaks_need_nul_termination(
    masker: Masker,
    db: psycopg.Connection,
    audit_since: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = '{"ip": "198.51.100.23",\n "device_id": "593-47-5928"}'
    token = masker.mask("body", body)
    assert main(["unmask", token]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--null" in captured.err
    assert IP not in captured.err
    assert audit_rows(db, audit_since) == []

    assert main(["unmask", "-0", token]) == 0
    assert capsys.readouterr().out == body + "\0"
    assert len(audit_rows(db, audit_since)) == 1


def test_unmask_refuses_to_print_when_the_audit_cannot_be_written(
    masker: Masker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 1 on localhost: nothing listens, so the audit row cannot be written.
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/postgres")
    assert main(["unmask", masker.mask("ip", IP)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "refusing to print" in captured.err
    assert IP not in captured.err


# ----------------------------------------------------------------------------- rekey


@pytest.fixture
def token_table(db: psycopg.Connection) -> Iterator[TokenTable]:
    """A private table shaped like user_logins' token columns, dropped afterwards."""
    table = TokenTable(f"rekey_test_{uuid.uuid4().hex[:12]}", "message_id", ("a", "b"))
    db.execute(
        sql.SQL("CREATE TABLE {} (message_id varchar(128) UNIQUE, a varchar(256), b text)").format(
            sql.Identifier(table.name)
        )
    )
    yield table
    db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table.name)))


def fill(db: psycopg.Connection, table: TokenTable, rows: list[tuple]) -> None:
    with db.cursor() as cursor:
        cursor.executemany(
            sql.SQL("INSERT INTO {} (message_id, a, b) VALUES (%s, %s, %s)").format(
                sql.Identifier(table.name)
            ),
            rows,
        )


def table_rows(db: psycopg.Connection, table: TokenTable) -> list[tuple]:
    return db.execute(
        sql.SQL("SELECT message_id, a, b FROM {} ORDER BY message_id").format(
            sql.Identifier(table.name)
        )
    ).fetchall()


@pytest.mark.services
def test_rekey_moves_old_tokens_to_the_active_key(
    db: psycopg.Connection, token_table: TokenTable
) -> None:
    old_ring = new_keyring()
    old = Masker(old_ring)
    stranger = Masker(new_keyring())  # a key the new ring does not hold
    rows = [
        (f"m{i:03}", old.mask("ip", f"10.0.0.{i}"), old.mask("body", f"body {i}")) for i in range(7)
    ]
    rows.append(("m100", None, "not a token"))
    rows.append(("m101", stranger.mask("ip", IP), None))
    fill(db, token_table, rows)

    ring: KeyRing = rotate(old_ring)
    new = Masker(ring)
    result = rekey_table(db, token_table, new, batch_size=2)
    assert (result.rows, result.tokens) == (7, 14)
    assert len(result.failures) == 1
    assert "m101" in result.failures[0] and IP not in result.failures[0]

    after = {row[0]: row for row in table_rows(db, token_table)}
    for i in range(7):
        _, a, b = after[f"m{i:03}"]
        assert new.token_key_id(a) == new.token_key_id(b) == ring.active_id
        assert new.unmask(a) == ("ip", f"10.0.0.{i}")
        assert new.unmask(b) == ("body", f"body {i}")
    assert after["m100"] == ("m100", None, "not a token")
    assert after["m101"] == rows[-1]
    assert key_counts(db, token_table) == {ring.active_id: 14, stranger.active_key_id: 1}

    # Idempotent: a second run finds nothing it can do, and changes nothing.
    snapshot = table_rows(db, token_table)
    again = rekey_table(db, token_table, new, batch_size=2)
    assert (again.rows, again.tokens, len(again.failures)) == (0, 0, 1)
    assert table_rows(db, token_table) == snapshot


@pytest.mark.services
def test_rekey_names_missing_tables_and_columns(
    db: psycopg.Connection,
    token_table: TokenTable,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    absent = TokenTable(f"absent_{uuid.uuid4().hex[:12]}", "message_id", ("masked_ip",))
    lacking = TokenTable(token_table.name, "message_id", ("a", "masked_device_id"))
    usable, problems = rekey.usable_tables(db, [absent, lacking])
    assert usable == []
    assert problems[0] == f"table {absent.name} does not exist"
    assert problems[1].startswith(f"table {lacking.name} has no column ")
    # The command refuses when nothing is usable, and names what it skips otherwise.
    monkeypatch.setattr(rekey, "TOKEN_TABLES", (absent, lacking))
    with pytest.raises(CommandError) as caught:
        keys.usable_tables(db)
    assert f"table {absent.name} does not exist" in str(caught.value)
    assert f"table {lacking.name} has no column masked_device_id" in str(caught.value)
    monkeypatch.setattr(rekey, "TOKEN_TABLES", (absent, token_table))
    assert keys.usable_tables(db) == [token_table]
    assert f"skipping: table {absent.name} does not exist" in capsys.readouterr().err


@pytest.mark.services
def test_rekey_command_commits_each_batch_and_resumes(
    keyring_path: Path,
    masker: Masker,
    db: psycopg.Connection,
    token_table: TokenTable,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [
        (f"m{i}", masker.mask("ip", f"10.0.0.{i}"), masker.mask("body", f"b{i}")) for i in range(6)
    ]
    fill(db, token_table, rows)
    write_keyring_file(keyring_path, rotate(read_keyring_file(keyring_path)))
    active = read_keyring_file(keyring_path).active_id
    monkeypatch.setattr(rekey, "TOKEN_TABLES", (token_table,))

    # Interrupt in the middle of the second batch (two rows, two tokens each).
    calls = 0
    real_rekey = Masker.rekey

    def interrupted(self: Masker, token: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 6:
            raise KeyboardInterrupt
        return real_rekey(self, token)

    monkeypatch.setattr(Masker, "rekey", interrupted)
    assert main(["rekey", "--batch-size", "2"]) == 130
    assert key_counts(db, token_table) == {masker.active_key_id: 8, active: 4}

    monkeypatch.setattr(Masker, "rekey", real_rekey)
    assert main(["rekey", "--batch-size", "2"]) == 0
    assert key_counts(db, token_table) == {active: 12}
    out = capsys.readouterr().out
    assert "re-keyed rows: 4, tokens: 8" in out
    assert "no tokens under old keys" in out
