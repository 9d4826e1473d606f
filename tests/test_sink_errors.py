"""Which PostgreSQL errors are a row's fault and which the server's (pure).

A row's fault: that row is refused and the rest of the batch written. The
server's: the batch is retried, however long it takes, and no row is ever
refused for it (a read-only standby after a failover must not turn valid
logins into rejections). Anything else is retried a few times, then taken
for a poison row (tests/test_writer.py shows both against the real server).
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from stream.postgres.sink import is_row_error, is_server_error


@pytest.mark.parametrize(
    "error",
    [
        errors.StringDataRightTruncation(),  # 22001 value too long
        errors.CharacterNotInRepertoire(),  # 22021 a NUL, bad UTF-8
        errors.UntranslatableCharacter(),  # 22P05 a character the database's encoding lacks
        errors.NotNullViolation(),  # 23502
        errors.ProgramLimitExceeded(),  # 54000, an OperationalError to psycopg
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    ],
)
def test_errors_about_a_rows_contents_refuse_the_row(error: BaseException) -> None:
    assert is_row_error(error) and not is_server_error(error)


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("connection lost"),
        errors.AdminShutdown(),  # 57P01
        errors.CannotConnectNow(),  # 57P03 starting up, in recovery
        errors.ReadOnlySqlTransaction(),  # 25006 a standby after a failover
        errors.InsufficientPrivilege(),  # 42501 a revoked grant
        errors.UndefinedTable(),  # 42P01 a dropped table
        errors.InvalidCatalogName(),  # 3D000 a dropped database
        errors.DiskFull(),  # 53100
        errors.SerializationFailure(),  # 40001
        errors.InternalError_(),  # XX000
        OSError("network unreachable"),
        TimeoutError(),
    ],
)
def test_errors_about_the_servers_state_are_never_a_rows_fault(error: BaseException) -> None:
    assert is_server_error(error) and not is_row_error(error)


@pytest.mark.parametrize(
    "error",
    [
        errors.RaiseException(),  # P0001: a trigger refusing something
        errors.FeatureNotSupported(),  # 0A000
        RuntimeError("a bug"),
    ],
)
def test_other_errors_are_neither_until_they_repeat(error: BaseException) -> None:
    assert not is_row_error(error) and not is_server_error(error)
