"""``maskstream keygen``, ``unmask`` and ``rekey``: the key holder's commands.

- ``keygen`` creates a key ring (mode 0600) or rotates one: a fresh key is
  added and made active, older keys stay so their tokens keep opening.
- ``unmask`` prints the originals of tokens, one per line, in order. PII
  recovery is audited: a row goes to ``unmask_audit`` in PostgreSQL *before*
  anything is printed, and nothing is printed if that row cannot be written.
- ``rekey`` re-encrypts stored tokens under the active key, batch by batch,
  so an old key can eventually be retired. Rows already under the active key
  are never touched, so it is idempotent and can be stopped and rerun.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, LiteralString, cast

import psycopg
from psycopg import sql

from stream.common import settings as settings_module
from stream.common.errors import CommandError
from stream.core.keyring import (
    FILE_VARIABLE,
    MODES,
    KeyRingError,
    create_keyring_file,
    load_keyring,
    read_keyring_file,
    retire,
    rotate,
    write_keyring_file,
)
from stream.core.masking import Masker, MaskingError, key_prefix, parse_token

logger = logging.getLogger(__name__)

AUDIT_TABLE = "unmask_audit"
REKEY_BATCH = 500
MAX_FAILURES_SHOWN = 20
# Only AES-SIV tokens can be re-made; HMAC tokens and foreign values are left alone.
RECOVERABLE_PREFIX = "siv:"
RECOVERABLE_PATTERN = RECOVERABLE_PREFIX + "%"


# --------------------------------------------------------------------------- parsers


def register(subparsers: Any) -> None:
    """Add ``keygen``, ``unmask`` and ``rekey`` to the ``maskstream`` command."""
    _register_keygen(subparsers)
    _register_unmask(subparsers)
    _register_rekey(subparsers)


def _register_keygen(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "keygen",
        help="create a masking key ring, or rotate to a new key",
        description=(
            "Create a key ring file with one fresh key (mode 0600). If the file exists, "
            "add a fresh key and make it active (rotation); older keys stay so their "
            "tokens keep opening. Restart the workers, then run `maskstream rekey`."
        ),
    )
    parser.add_argument(
        "path", nargs="?", type=Path, help=f"key ring file (default: ${FILE_VARIABLE})"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        help="for a new ring: siv (recoverable, default) or hmac (irreversible)",
    )
    parser.add_argument(
        "--retire",
        metavar="KEY_ID",
        help="instead of adding a key, remove KEY_ID (after `rekey` left no tokens under it)",
    )
    parser.set_defaults(handler=run_keygen)


def _register_unmask(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "unmask",
        help="print the original values of tokens (audited)",
        description=(
            "Print each token's original value, one per line, in order. Tokens come from "
            "the arguments, from standard input (one per line), or from every column of "
            "every row of --query run on DATABASE_URL (NULL prints an empty line). Every "
            f"use is recorded in the {AUDIT_TABLE} table first; if that fails, nothing "
            "is printed."
        ),
    )
    parser.add_argument("tokens", nargs="*", metavar="TOKEN")
    parser.add_argument("--query", metavar="SQL", help="read tokens from this read-only query")
    parser.add_argument(
        "-0",
        "--null",
        action="store_true",
        help="end each value with NUL instead of a newline (for values with line breaks)",
    )
    parser.set_defaults(handler=run_unmask)


def _register_rekey(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "rekey",
        help="re-encrypt stored tokens under the active key",
        description=(
            "Re-encrypt tokens in user_logins (masked_ip, masked_device_id) and "
            "rejected_logins (body_token) that were made with a key other than the "
            "active one, in batches, each committed. Values are re-masked in canonical "
            "form (2001:DB8::1 as 2001:db8::1), so spellings of one value end with one "
            "token. Safe to stop and rerun. Afterwards it prints how many tokens each "
            "key still has."
        ),
    )
    parser.add_argument("--batch-size", type=int, default=REKEY_BATCH, metavar="ROWS")
    parser.add_argument(
        "--dry-run", action="store_true", help="only count tokens per key, change nothing"
    )
    parser.set_defaults(handler=run_rekey)


# --------------------------------------------------------------------------- shared


def masker_from_settings(settings: settings_module.Settings) -> Masker:
    """The configured key ring as a :class:`Masker`, or a :class:`CommandError` saying why not."""
    try:
        return Masker(load_keyring(settings))
    except KeyRingError as exc:
        raise CommandError(str(exc)) from None


# --------------------------------------------------------------------------- keygen


def run_keygen(args: argparse.Namespace) -> int:
    path = args.path or _configured_path(settings_module.load())
    try:
        if args.retire:
            return _retire_key(path, args.retire)
        if path.exists():
            return _rotate_ring(path, args.mode)
        create_keyring_file(path, args.mode or "siv")
        ring = read_keyring_file(path)
    except (KeyRingError, OSError) as exc:
        raise CommandError(str(exc)) from None
    print(f"created key ring {path} ({ring.mode}, key {ring.active_id}, file mode 0600)")
    print(f"use it with: export {FILE_VARIABLE}={path}")
    return 0


def _configured_path(settings: settings_module.Settings) -> Path:
    if not settings.keyring_file:
        raise CommandError(
            f"name the key ring file: `maskstream keygen PATH` or set {FILE_VARIABLE}"
        )
    return Path(settings.keyring_file)


def _rotate_ring(path: Path, mode: str | None) -> int:
    ring = read_keyring_file(path)
    if mode and mode != ring.mode:
        raise CommandError(
            f"{path} is a {ring.mode} key ring; a ring keeps one mode (make a new file for {mode})"
        )
    rotated = rotate(ring)
    write_keyring_file(path, rotated)
    print(
        f"added key {rotated.active_id} to {path} and made it active; "
        f"{ring.active_id} and older keys stay for reading"
    )
    print("next: restart the workers, then run `maskstream rekey`")
    return 0


def _retire_key(path: Path, key_id: str) -> int:
    ring = retire(read_keyring_file(path), key_id)
    write_keyring_file(path, ring)
    print(f"removed key {key_id} from {path}; tokens made with it can no longer be opened")
    return 0


# --------------------------------------------------------------------------- unmask


@dataclass(frozen=True)
class TokenInput:
    """Where the tokens came from, for error messages and the audit row."""

    source: str  # "arguments", "stdin" or "query"
    labels: list[str]  # "argument 2", "line 5", "row 3 column masked_ip"
    tokens: list[str | None]  # None: a NULL from --query
    query: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One use of ``unmask``: who, from where, how many tokens of which fields."""

    os_user: str
    host: str
    token_count: int
    fields: list[str]
    key_ids: list[str]
    source: str
    query: str | None


def run_unmask(args: argparse.Namespace) -> int:
    settings = settings_module.load()
    masker = masker_from_settings(settings)
    given = collect_tokens(args.tokens, args.query, sys.stdin, settings.database_url)
    values = open_tokens(masker, given)
    terminator = "\0" if args.null else "\n"
    check_printable(values, given.labels, terminator)
    write_audit(settings.database_url, audit_entry(given, values))
    write_values(values, terminator, sys.stdout)
    return 0


def collect_tokens(
    arguments: Sequence[str], query: str | None, stdin: IO[str], database_url: str
) -> TokenInput:
    """Tokens from exactly one source: arguments, --query, or standard input."""
    if arguments and query:
        raise CommandError("give tokens or --query, not both")
    if arguments:
        labels = [f"argument {i}" for i in range(1, len(arguments) + 1)]
        return TokenInput("arguments", labels, list(arguments))
    if query:
        return query_tokens(database_url, query)
    if stdin.isatty():
        raise CommandError("no tokens: pass them as arguments, on standard input, or use --query")
    numbered = [(n, line.strip()) for n, line in enumerate(stdin, 1) if line.strip()]
    if not numbered:
        raise CommandError("no tokens on standard input")
    return TokenInput("stdin", [f"line {n}" for n, _ in numbered], [t for _, t in numbered])


def query_tokens(database_url: str, query: str) -> TokenInput:
    """Every column of every row of *query*, run read-only, in row order."""
    labels: list[str] = []
    tokens: list[str | None] = []
    try:
        with psycopg.connect(database_url) as conn:
            conn.read_only = True
            # The key holder's own SQL, run read-only: deliberately not a literal.
            cursor = conn.execute(cast(LiteralString, query))
            if cursor.description is None:
                raise CommandError("--query returned no result set (use a SELECT)")
            names = [column.name for column in cursor.description]
            for row_number, row in enumerate(cursor, 1):
                for name, value in zip(names, row, strict=True):
                    labels.append(f"row {row_number} column {name}")
                    tokens.append(None if value is None else str(value))
    except psycopg.Error as exc:
        raise CommandError(f"--query failed: {_one_line(exc)}") from None
    return TokenInput("query", labels, tokens, query)


def open_tokens(masker: Masker, given: TokenInput) -> list[tuple[str, str] | None]:
    """``(field, value)`` for every token, or a :class:`CommandError` naming the first bad one.

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
            raise CommandError(f"{label}: {exc}; nothing printed") from None
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
            raise CommandError(f"{label}: {advice}; nothing printed")


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


AUDIT_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    os_user     text NOT NULL,
    db_user     text NOT NULL DEFAULT current_user,
    host        text NOT NULL,
    token_count integer NOT NULL,
    fields      text[] NOT NULL,
    key_ids     text[] NOT NULL,
    source      text NOT NULL,
    query       text
)"""

AUDIT_INSERT = """INSERT INTO {table}
    (os_user, host, token_count, fields, key_ids, source, query)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
    RETURNING id"""

# Two first uses at once would race on CREATE TABLE; serialize them.
AUDIT_LOCK = "SELECT pg_advisory_xact_lock(hashtext('maskstream.unmask_audit'))"


def write_audit(database_url: str, entry: AuditEntry, table: str = AUDIT_TABLE) -> int:
    """Record *entry* and commit it; return its id. Failure is a :class:`CommandError`.

    The row is committed before any value is printed: PII recovery that
    cannot be audited does not happen.
    """
    identifier = sql.Identifier(table)
    try:
        with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
            conn.execute(AUDIT_LOCK)
            conn.execute(sql.SQL(AUDIT_DDL).format(table=identifier))
            row = conn.execute(
                sql.SQL(AUDIT_INSERT).format(table=identifier),
                (
                    entry.os_user,
                    entry.host,
                    entry.token_count,
                    entry.fields,
                    entry.key_ids,
                    entry.source,
                    entry.query,
                ),
            ).fetchone()
    except psycopg.Error as exc:
        raise CommandError(
            f"refusing to print: could not write the audit row to {table}: {_one_line(exc)}"
        ) from None
    assert row is not None  # INSERT ... RETURNING always returns the row
    return int(row[0])


def write_values(values: Iterable[tuple[str, str] | None], terminator: str, out: IO[str]) -> None:
    """One value per line (or NUL-terminated); lone surrogates are written as is."""
    out.flush()
    binary = out.buffer if hasattr(out, "buffer") else None
    for item in values:
        text = (item[1] if item is not None else "") + terminator
        if binary is not None:
            binary.write(text.encode("utf-8", "surrogatepass"))
        else:
            out.write(text)
    if binary is not None:
        binary.flush()


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


# --------------------------------------------------------------------------- rekey


@dataclass(frozen=True)
class TokenTable:
    """A table holding tokens in *columns*, rows identified by the unique *key*."""

    name: str
    key: str
    columns: tuple[str, ...]


TOKEN_TABLES = (
    TokenTable("user_logins", "message_id", ("masked_ip", "masked_device_id")),
    TokenTable("rejected_logins", "message_id", ("body_token",)),
)


@dataclass
class RekeyResult:
    """Counts for one table, and a label (never a value) for each token that failed."""

    rows: int = 0
    tokens: int = 0
    failures: list[str] = field(default_factory=list)


def run_rekey(args: argparse.Namespace) -> int:
    settings = settings_module.load()
    masker = masker_from_settings(settings)
    if masker.mode != "siv":
        raise CommandError(
            "rekey needs a recoverable (siv) key ring: HMAC tokens cannot be re-made "
            "without the original values"
        )
    if args.batch_size < 1:
        raise CommandError("--batch-size must be at least 1")
    try:
        # Autocommit, so each batch's transaction() is a real COMMIT, not a savepoint.
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            tables = usable_tables(conn, TOKEN_TABLES)
            failed = 0
            if not args.dry_run:
                for table in tables:
                    result = rekey_table(conn, table, masker, args.batch_size)
                    failed += report_rekey(table, result)
            for table in tables:
                report_key_counts(table, key_counts(conn, table), masker.active_key_id)
    except psycopg.Error as exc:
        raise CommandError(f"database error: {_one_line(exc)}") from None
    return 1 if failed else 0


def usable_tables(conn: psycopg.Connection, tables: Sequence[TokenTable]) -> list[TokenTable]:
    """The tables that exist with all their columns; says clearly what is missing."""
    usable: list[TokenTable] = []
    problems: list[str] = []
    for table in tables:
        missing = missing_columns(conn, table)
        if missing is None:
            problems.append(f"table {table.name} does not exist")
        elif missing:
            problems.append(f"table {table.name} has no column {', '.join(missing)}")
        else:
            usable.append(table)
    if not usable:
        raise CommandError("nothing to rekey: " + "; ".join(problems))
    for problem in problems:
        print(f"maskstream rekey: skipping: {problem}", file=sys.stderr)
    return usable


def missing_columns(conn: psycopg.Connection, table: TokenTable) -> list[str] | None:
    """Columns of *table* that do not exist, or None if the table itself does not."""
    if conn.execute("SELECT to_regclass(%s)", (table.name,)).fetchone() == (None,):
        return None
    present = {
        row[0]
        for row in conn.execute(
            "SELECT attname FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            (table.name,),
        )
    }
    return [column for column in (table.key, *table.columns) if column not in present]


def stale_condition(table: TokenTable) -> sql.Composable:
    """SQL true for rows with an AES-SIV token under a non-active key.

    Parameters: ``pattern`` (``siv:%``), ``prefix`` (``siv:ACTIVE:``) and its
    ``length``; ``left()`` rather than LIKE so nothing in the prefix is a wildcard.
    """
    tests = [
        sql.SQL("({col} LIKE %(pattern)s AND left({col}, %(length)s) <> %(prefix)s)").format(
            col=sql.Identifier(column)
        )
        for column in table.columns
    ]
    return sql.SQL(" OR ").join(tests)


def rekey_table(
    conn: psycopg.Connection, table: TokenTable, masker: Masker, batch_size: int
) -> RekeyResult:
    """Re-encrypt stale tokens of *table*, one committed batch at a time.

    Keyset pagination on the unique key: rows that cannot be re-keyed (say, a
    token under a key no longer in the ring) are reported and passed over
    rather than fetched again forever. Rows without a key cannot be addressed
    and are left alone. *conn* must be in autocommit mode, so that each
    batch's transaction really commits.
    """
    if not conn.autocommit:
        raise ValueError("rekey_table needs an autocommit connection (one commit per batch)")
    prefix = key_prefix(masker.mode, masker.active_key_id)
    params: dict[str, Any] = {
        "pattern": RECOVERABLE_PATTERN,
        "prefix": prefix,
        "length": len(prefix),
        "limit": batch_size,
    }
    select = sql.SQL(
        "SELECT {key}, {columns} FROM {table} WHERE {key} > %(after)s AND ({stale}) "
        "ORDER BY {key} LIMIT %(limit)s"
    ).format(
        key=sql.Identifier(table.key),
        columns=sql.SQL(", ").join(map(sql.Identifier, table.columns)),
        table=sql.Identifier(table.name),
        stale=stale_condition(table),
    )
    update = update_statement(table)
    result = RekeyResult()
    after = ""
    while True:
        with conn.transaction():
            rows = conn.execute(select, {**params, "after": after}).fetchall()
            if not rows:
                return result
            changes = [change for row in rows if (change := rekey_row(table, row, masker, result))]
            if changes:
                with conn.cursor() as cursor:
                    cursor.executemany(update, changes)
        result.rows += len(changes)
        after = rows[-1][0]
        logger.info("%s: %d rows re-keyed so far", table.name, result.rows)


def rekey_row(
    table: TokenTable, row: Sequence[Any], masker: Masker, result: RekeyResult
) -> list[Any] | None:
    """Parameters for :func:`update_statement`, or None if nothing in *row* changes."""
    key, old = row[0], list(row[1:])
    new = list(old)
    for index, (column, token) in enumerate(zip(table.columns, old, strict=True)):
        if token is None or not token.startswith(RECOVERABLE_PREFIX):
            continue
        try:
            new[index] = masker.rekey(token)  # unchanged if already under the active key
        except MaskingError as exc:
            result.failures.append(f"{table.name} {table.key}={key} {column}: {exc}")
    changed = sum(a != b for a, b in zip(old, new, strict=True))
    if not changed:
        return None
    result.tokens += changed
    return [*new, key, *old]


def update_statement(table: TokenTable) -> sql.Composed:
    """UPDATE setting every token column, only if the row still holds the tokens read.

    The guard makes a concurrent change win instead of being overwritten.
    """
    columns = [sql.Identifier(column) for column in table.columns]
    return sql.SQL("UPDATE {table} SET {sets} WHERE {key} = %s AND {guards}").format(
        table=sql.Identifier(table.name),
        sets=sql.SQL(", ").join(sql.SQL("{} = %s").format(c) for c in columns),
        key=sql.Identifier(table.key),
        guards=sql.SQL(" AND ").join(
            sql.SQL("{} IS NOT DISTINCT FROM %s").format(c) for c in columns
        ),
    )


def key_counts(conn: psycopg.Connection, table: TokenTable) -> dict[str, int]:
    """How many AES-SIV tokens of *table* each key id still has."""
    union = sql.SQL(" UNION ALL ").join(
        sql.SQL(
            "SELECT split_part({col}, ':', 2) AS key_id FROM {table} WHERE {col} LIKE %(pattern)s"
        ).format(col=sql.Identifier(column), table=sql.Identifier(table.name))
        for column in table.columns
    )
    query = sql.SQL("SELECT key_id, count(*) FROM ({union}) AS t GROUP BY key_id ORDER BY key_id")
    rows = conn.execute(query.format(union=union), {"pattern": RECOVERABLE_PATTERN})
    return {key_id: count for key_id, count in rows}


def report_rekey(table: TokenTable, result: RekeyResult) -> int:
    """Print what was done; return the number of failures."""
    failures = result.failures
    print(f"{table.name}: re-keyed rows: {result.rows}, tokens: {result.tokens}")
    for label in failures[:MAX_FAILURES_SHOWN]:
        print(f"  failed: {label}", file=sys.stderr)
    if len(failures) > MAX_FAILURES_SHOWN:
        print(f"  ... and {len(failures) - MAX_FAILURES_SHOWN} more failures", file=sys.stderr)
    return len(failures)


def report_key_counts(table: TokenTable, counts: dict[str, int], active: str) -> None:
    stale = {key_id: n for key_id, n in counts.items() if key_id != active}
    summary = ", ".join(f"{key_id}: {n}" for key_id, n in counts.items()) or "no tokens"
    print(f"{table.name}: tokens per key: {summary} (active: {active})")
    if not stale:
        print(f"{table.name}: no tokens under old keys")
