"""PostgreSQL with RDS IAM tokens: the token botocore signs, the connection
arguments every connection is built from, and a worker's sink taking a fresh
token when it reconnects after PostgreSQL ended its connection.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg import sql

from stream import cli
from stream.common.aws import rds_auth_token
from stream.common.retry import Backoff
from stream.common.settings import Settings
from stream.core.keyring import dump_keyring, new_keyring
from stream.postgres.connect import Database, database_of
from stream.postgres.sink import PostgresSink

HOST, PORT, USER, REGION = (
    "maskstream.cluster-abc.eu-west-1.rds.amazonaws.com",
    5432,
    "worker",
    "eu-west-1",
)
IAM_URL = f"postgresql://{USER}@{HOST}:{PORT}/maskstream"


@pytest.fixture
def test_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials of a test profile: signing is local, nothing reaches AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTPROFILE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    """A stand-in for the RDS CA bundle (only its path is used here)."""
    bundle = tmp_path / "rds-global-bundle.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    return bundle


def iam_settings(ca_file: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": IAM_URL,
        "database_iam": True,
        "database_ca_file": str(ca_file),
        "aws_region": REGION,
        "aws_endpoint_url": "",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def check_token(token: str, host: str, port: int, user: str, region: str) -> None:
    """*token* is a SigV4 presigned ``connect`` URL for *user* at *host*:*port*."""
    url = urlsplit(f"https://{token}")
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    assert (url.hostname, url.port, url.path) == (host, port, "/")
    assert query["Action"] == "connect"
    assert query["DBUser"] == user
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    access_key, _date, scope_region, service, terminal = query["X-Amz-Credential"].split("/")
    assert (access_key, scope_region, service, terminal) == (
        "AKIDTESTPROFILE",
        region,
        "rds-db",
        "aws4_request",
    )
    assert query["X-Amz-Expires"] == "900"  # 15 minutes
    assert re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"])


def test_botocore_signs_a_connect_token(test_profile: None) -> None:
    check_token(rds_auth_token(HOST, PORT, USER, REGION), HOST, PORT, USER, REGION)


def test_iam_connections_take_a_token_and_verify_tls(test_profile: None, ca_file: Path) -> None:
    kwargs = database_of(iam_settings(ca_file)).connect_kwargs(connect_timeout=5)
    assert kwargs["sslmode"] == "verify-full"
    assert kwargs["sslrootcert"] == str(ca_file)
    assert kwargs["connect_timeout"] == 5
    check_token(kwargs["password"], HOST, PORT, USER, REGION)


def test_each_new_connection_asks_for_a_new_token(ca_file: Path) -> None:
    asked: list[tuple[str, int, str]] = []
    serial = itertools.count(1)

    def tokens(host: str, port: int, user: str) -> str:
        asked.append((host, port, user))
        return f"token-{next(serial)}"

    database = database_of(iam_settings(ca_file, database_url=f"host={HOST} user={USER}"), tokens)
    first, second = database.connect_kwargs(), database.connect_kwargs()
    assert (first["password"], second["password"]) == ("token-1", "token-2")
    assert asked == [(HOST, 5432, USER)] * 2
    assert "token" not in repr(database)  # the source is not in a log line either


def test_without_iam_the_url_is_all(ca_file: Path) -> None:
    database = database_of(iam_settings(ca_file, database_iam=False, database_ca_file=""))
    assert database == Database(IAM_URL)
    assert database.connect_kwargs(autocommit=True) == {"autocommit": True}


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"database_ca_file": ""}, "needs MASKSTREAM_DATABASE_CA_FILE"),
        ({"database_ca_file": "/nonexistent/ca.pem"}, "which is no file"),
        ({"database_url": f"postgresql://{USER}:pw@{HOST}/db"}, "holds a password"),
        ({"database_url": f"postgresql://{HOST}/db"}, "the database user"),
        ({"database_url": f"postgresql://{USER}@a,b/db"}, "one server host"),
    ],
)
def test_unusable_iam_settings_are_refused(
    overrides: dict[str, str], complaint: str, ca_file: Path
) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        database_of(iam_settings(ca_file, **overrides))
    assert "pw" not in str(caught.value)


# --------------------------------------------------------------------------- real PostgreSQL


@pytest.fixture
def token_role(database_url: str) -> Iterator[tuple[str, str]]:
    """A login role with a password, standing in for an IAM database user:
    its "token" source hands out that password (the local server does not
    check tokens)."""
    role, password = f"iam_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    try:
        yield role, password
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.services
def test_the_sink_reconnects_with_a_fresh_token(
    database_url: str, token_role: tuple[str, str]
) -> None:
    role, password = token_role
    asked = 0

    def token() -> str:
        nonlocal asked
        asked += 1
        return password

    info = psycopg.conninfo.conninfo_to_dict(database_url)
    info.pop("password", None)
    info["user"] = role
    database = Database(psycopg.conninfo.make_conninfo(**info), password=token)

    async def prepared(conn: psycopg.AsyncConnection) -> None:
        pass

    async def backend_pid(conn: psycopg.AsyncConnection, isolate_any: bool) -> int:
        cursor = await conn.execute("SELECT pg_backend_pid(), current_user")
        pid, user = await cursor.fetchone()  # type: ignore[misc]
        await conn.commit()
        assert user == role
        return int(pid)

    async def across_a_termination() -> tuple[int, int]:
        sink = PostgresSink(database, prepared, "iam-test", Backoff(base=0.05, cap=0.2))
        try:
            first = await sink.retrying(backend_pid, "a query")
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            second = await sink.retrying(backend_pid, "a query")
            return first, second
        finally:
            await sink.close()

    first, second = asyncio.run(across_a_termination())
    assert first != second  # a new server process: the sink reconnected
    assert asked == 2  # and its new connection asked for a new token


def test_a_command_refuses_unusable_iam_settings_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MASKSTREAM_KEYRING", dump_keyring(new_keyring()))
    monkeypatch.delenv("MASKSTREAM_KEYRING_FILE", raising=False)
    monkeypatch.delenv("MASKSTREAM_KEYRING_SOURCE", raising=False)
    monkeypatch.setenv("DATABASE_URL", IAM_URL)
    monkeypatch.setenv("MASKSTREAM_DATABASE_IAM", "true")
    monkeypatch.delenv("MASKSTREAM_DATABASE_CA_FILE", raising=False)
    assert cli.main(["unmask", "siv:abc:ip:AAAA"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "maskstream unmask: MASKSTREAM_DATABASE_IAM=true needs MASKSTREAM_DATABASE_CA_FILE: "
        "the RDS CA bundle that the server's certificate is verified against "
        "(sslmode=verify-full)"
    ]
