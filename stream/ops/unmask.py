"""``maskstream unmask``: tokens opened, the use audited, and only then the values shown.

All or nothing: a token that does not open, a value that cannot be shown one
to a line, or an audit row that cannot be written refuses the whole request
(:class:`UnmaskRefused`) before anything is printed.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import LiteralString, cast

import psycopg

from stream.common.errors import one_line
from stream.core.masking import Masker, MaskingError, parse_token
from stream.postgres.audit import AUDIT_TABLE, AuditEntry, write_audit
from stream.postgres.connect import Database


class UnmaskRefused(Exception):
    """Nothing is printed; the message says why."""


@dataclass(frozen=True)
class TokenInput:
    """Where the tokens came from, for error messages and the audit row."""

    source: str  # "arguments", "stdin" or "query"
    labels: list[str]  # "argument 2", "line 5", "row 3 column masked_ip"
    tokens: list[str | None]  # None: a NULL from --query
    query: str | None = None


def query_tokens(database: Database, query: str) -> TokenInput:
    """Every column of every row of *query*, run read-only, in row order."""
    labels: list[str] = []
    tokens: list[str | None] = []
    try:
        with database.connect() as conn:
            conn.read_only = True
            # The key holder's own SQL, run read-only: deliberately not a literal.
            cursor = conn.execute(cast(LiteralString, query))  # type: ignore[redundant-cast]
            if cursor.description is None:
                raise UnmaskRefused("--query returned no result set (use a SELECT)")
            names = [column.name for column in cursor.description]
            for row_number, row in enumerate(cursor, 1):
                for name, value in zip(names, row, strict=True):
                    labels.append(f"row {row_number} column {name}")
                    tokens.append(None if value is None else str(value))
    except psycopg.Error as exc:
        raise UnmaskRefused(f"--query failed: {one_line(exc)}") from None
    return TokenInput("query", labels, tokens, query)


def open_tokens(masker: Masker, given: TokenInput) -> list[tuple[str, str] | None]:
    """``(field, value)`` for every token, or :class:`UnmaskRefused` naming the first bad one.

    All or nothing: printing the good ones and skipping a bad one would shift
    every later line out of step with the input.
    """
    opened: list[tuple[str, str] | None] = []
    for label, token in zip(given.labels, given.tokens, strict=True):
        if token is None:
            opened.append(None)
            continue
        try:
            opened.append(masker.unmask(token))
        except MaskingError as exc:
            raise UnmaskRefused(f"{label}: {exc}; nothing printed") from None
    return opened


def check_printable(
    values: Sequence[tuple[str, str] | None], labels: Sequence[str], terminator: str
) -> None:
    """Refuse, before auditing, output that would not be one value per line."""
    advice = (
        "the value contains a line break; use --null (-0) for NUL-terminated output"
        if terminator == "\n"
        else "the value contains a NUL character, so it cannot be NUL-terminated"
    )
    for label, item in zip(labels, values, strict=True):
        if item is not None and terminator in item[1]:
            raise UnmaskRefused(f"{label}: {advice}; nothing printed")


def audit_entry(given: TokenInput, values: Sequence[tuple[str, str] | None]) -> AuditEntry:
    present = [token for token in given.tokens if token is not None]
    return AuditEntry(
        os_user=_os_user(),
        host=socket.gethostname(),
        token_count=len(present),
        fields=sorted({item[0] for item in values if item is not None}),
        key_ids=sorted({parse_token(token).key_id for token in present}),
        source=given.source,
        query=given.query,
    )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. an arbitrary container uid
        return f"uid {os.getuid()}"


def record_use(database: Database, entry: AuditEntry, table: str = AUDIT_TABLE) -> int:
    """Commit the audit row of one use; return its id, or refuse if it cannot be written.

    The row is committed before any value is printed: PII recovery that
    cannot be audited does not happen.
    """
    try:
        return write_audit(database, entry, table)
    except psycopg.Error as exc:
        raise UnmaskRefused(
            f"refusing to print: could not write the audit row to {table}: {one_line(exc)}"
        ) from None


def unmask(
    masker: Masker, given: TokenInput, terminator: str, database: Database
) -> list[tuple[str, str] | None]:
    """Open *given*, check each value can be printed ended by *terminator*, audit the use;
    return ``(field, value)`` per token (None for a NULL). Raises :class:`UnmaskRefused`."""
    values = open_tokens(masker, given)
    check_printable(values, given.labels, terminator)
    record_use(database, audit_entry(given, values))
    return values
