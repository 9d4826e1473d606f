"""How every PostgreSQL connection of maskstream is opened: one place for the
conninfo, the password and TLS, so that an authentication mode applies to all
of them (the worker's sink, probes and pages, ``status``, ``replay``,
``unmask``, ``rekey``, the demo).

With ``MASKSTREAM_DATABASE_IAM=true`` the password is an RDS IAM token, asked
for anew by *each* connection: a token is valid 15 minutes, while a worker's
connection may be re-opened hours later (after a failover, an idle timeout,
``pg_terminate_backend``), and a token taken at start would be refused by
then. IAM also requires TLS verified against a CA bundle
(``MASKSTREAM_DATABASE_CA_FILE``): the token is a bearer credential and must
not reach an impostor server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from stream.common.aws import rds_auth_token
from stream.common.errors import CommandError
from stream.common.settings import Settings

IAM_VARIABLE = "MASKSTREAM_DATABASE_IAM"
CA_FILE_VARIABLE = "MASKSTREAM_DATABASE_CA_FILE"
DEFAULT_PORT = 5432

# (host, port, user) -> a password good for one new connection.
TokenSource = Callable[[str, int, str], str]


class DatabaseSettingError(CommandError, ValueError):
    """The database settings cannot work: one line and exit status 2, both where
    a worker starts (stream.app refuses ValueError) and in a command (CommandError)."""


@dataclass(frozen=True)
class Database:
    """A PostgreSQL server to connect to: its URL, and, for IAM, a password
    source called once per connection and the TLS options it requires."""

    url: str
    password: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def connect_kwargs(self, **extra: Any) -> dict[str, Any]:
        """Keyword arguments of one new connection (besides the URL), with a
        fresh password; they override what the URL says."""
        kwargs: dict[str, Any] = {**self.options, **extra}
        if self.password is not None:
            kwargs["password"] = self.password()
        return kwargs

    def connect(self, **extra: Any) -> psycopg.Connection[Any]:
        """A new connection (psycopg.connect's *extra* arguments: autocommit, timeouts)."""
        return psycopg.connect(self.url, **self.connect_kwargs(**extra))

    async def connect_async(self, **extra: Any) -> psycopg.AsyncConnection[Any]:
        """A new asynchronous connection."""
        return await psycopg.AsyncConnection.connect(self.url, **self.connect_kwargs(**extra))


def database_of(settings: Settings, tokens: TokenSource | None = None) -> Database:
    """The database *settings* configure; with IAM, tokens from *tokens* (default:
    botocore's signer with the default credential chain). Raises
    :class:`DatabaseSettingError` for an IAM setting that cannot work, before
    any connection is tried."""
    if not settings.database_iam:
        return Database(settings.database_url)
    if not settings.database_ca_file:
        raise DatabaseSettingError(
            f"{IAM_VARIABLE}=true needs {CA_FILE_VARIABLE}: the RDS CA bundle that the "
            "server's certificate is verified against (sslmode=verify-full)"
        )
    if not Path(settings.database_ca_file).is_file():
        # Found now rather than as a TLS error on every connection attempt.
        raise DatabaseSettingError(
            f"{CA_FILE_VARIABLE} names {settings.database_ca_file}, which is no file"
        )
    host, port, user = iam_login(settings.database_url)
    if tokens is None:
        tokens = partial(
            _signed_token, region=settings.aws_region, endpoint_url=settings.aws_endpoint_url
        )
    return Database(
        settings.database_url,
        password=partial(tokens, host, port, user),
        options=MappingProxyType(
            {"sslmode": "verify-full", "sslrootcert": settings.database_ca_file}
        ),
    )


def iam_login(database_url: str) -> tuple[str, int, str]:
    """``(host, port, user)`` the token is signed for: exactly what the URL
    connects to, since RDS checks the token against them."""
    try:
        parts = conninfo_to_dict(database_url)
    except psycopg.ProgrammingError:
        raise DatabaseSettingError("DATABASE_URL is not a PostgreSQL URL or conninfo") from None
    host, user = str(parts.get("host", "")), str(parts.get("user", ""))
    if not host or "," in host or host.startswith("/"):
        raise DatabaseSettingError(
            f"{IAM_VARIABLE}=true needs DATABASE_URL to name one server host"
        )
    if not user:
        raise DatabaseSettingError(
            f"{IAM_VARIABLE}=true needs DATABASE_URL to name the database user"
        )
    if parts.get("password"):
        raise DatabaseSettingError(
            f"{IAM_VARIABLE}=true: DATABASE_URL holds a password; "
            "remove it (the token is the password)"
        )
    try:
        port = int(parts.get("port") or DEFAULT_PORT)
    except ValueError:
        raise DatabaseSettingError("DATABASE_URL's port is not a number") from None
    return host, port, user


def _signed_token(host: str, port: int, user: str, *, region: str, endpoint_url: str) -> str:
    return rds_auth_token(host, port, user, region, endpoint_url)
