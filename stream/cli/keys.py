"""``maskstream keygen``, ``unmask`` and ``rekey``: the key holder's commands.

- ``keygen`` creates a key ring (mode 0600) or rotates one: a fresh key is
  added and made active, older keys stay so their tokens keep opening.
- ``unmask`` prints the originals of tokens, one per line, in order. PII
  recovery is audited: a row goes to ``unmask_audit`` in PostgreSQL *before*
  anything is printed, and nothing is printed if that row cannot be written
  (:mod:`stream.ops.unmask`, :mod:`stream.postgres.audit`).
- ``rekey`` re-encrypts stored tokens under the active key, batch by batch,
  so an old key can eventually be retired. Rows already under the active key
  are never touched, so it is idempotent and can be stopped and rerun
  (:mod:`stream.postgres.rekey`).

This module parses the options, reads the tokens from where the user gave
them, and prints; the work is done by the modules named above.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import psycopg

from stream.common import settings as settings_module
from stream.common.errors import CommandError, one_line
from stream.core.keyring import (
    FILE_VARIABLE,
    MODES,
    KeyRingError,
    create_keyring_file,
    read_keyring_file,
    retire,
    rotate,
    write_keyring_file,
)
from stream.core.masking import Masker
from stream.ops.unmask import TokenInput, UnmaskRefused, query_tokens, unmask
from stream.postgres import rekey
from stream.postgres.audit import AUDIT_TABLE
from stream.postgres.connect import Database, database_of
from stream.worker.keyring_source import load_configured_keyring

MAX_FAILURES_SHOWN = 20


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
    parser.add_argument("--batch-size", type=int, default=rekey.REKEY_BATCH, metavar="ROWS")
    parser.add_argument(
        "--dry-run", action="store_true", help="only count tokens per key, change nothing"
    )
    parser.set_defaults(handler=run_rekey)


# --------------------------------------------------------------------------- shared


def masker_from_settings(settings: settings_module.Settings) -> Masker:
    """The configured key ring as a :class:`Masker`, or a :class:`CommandError` saying why not."""
    try:
        return Masker(load_configured_keyring(settings))
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


def run_unmask(args: argparse.Namespace) -> int:
    settings = settings_module.load()
    masker = masker_from_settings(settings)
    terminator = "\0" if args.null else "\n"
    try:
        database = database_of(settings)
        given = collect_tokens(args.tokens, args.query, sys.stdin, database)
        values = unmask(masker, given, terminator, database)
    except UnmaskRefused as exc:
        raise CommandError(str(exc)) from None
    write_values(values, terminator, sys.stdout)
    return 0


def collect_tokens(
    arguments: Sequence[str], query: str | None, stdin: IO[str], database: Database
) -> TokenInput:
    """Tokens from exactly one source: arguments, --query, or standard input."""
    if arguments and query:
        raise CommandError("give tokens or --query, not both")
    if arguments:
        labels = [f"argument {i}" for i in range(1, len(arguments) + 1)]
        return TokenInput("arguments", labels, list(arguments))
    if query:
        return query_tokens(database, query)
    if stdin.isatty():
        raise CommandError("no tokens: pass them as arguments, on standard input, or use --query")
    numbered = [(n, line.strip()) for n, line in enumerate(stdin, 1) if line.strip()]
    if not numbered:
        raise CommandError("no tokens on standard input")
    return TokenInput("stdin", [f"line {n}" for n, _ in numbered], [t for _, t in numbered])


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


# --------------------------------------------------------------------------- rekey


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
        with database_of(settings).connect(autocommit=True) as conn:
            tables = usable_tables(conn)
            failed = 0
            if not args.dry_run:
                for table in tables:
                    result = rekey.rekey_table(conn, table, masker, args.batch_size)
                    failed += report_rekey(table, result)
            for table in tables:
                report_key_counts(table, rekey.key_counts(conn, table), masker.active_key_id)
    except psycopg.Error as exc:
        raise CommandError(f"database error: {one_line(exc)}") from None
    return 1 if failed else 0


def usable_tables(conn: psycopg.Connection) -> list[rekey.TokenTable]:
    """The token tables that can be re-keyed; says clearly what is missing from the others."""
    usable, problems = rekey.usable_tables(conn, rekey.TOKEN_TABLES)
    if not usable:
        raise CommandError("nothing to rekey: " + "; ".join(problems))
    for problem in problems:
        print(f"maskstream rekey: skipping: {problem}", file=sys.stderr)
    return usable


def report_rekey(table: rekey.TokenTable, result: rekey.RekeyResult) -> int:
    """Print what was done; return the number of failures."""
    failures = result.failures
    print(f"{table.name}: re-keyed rows: {result.rows}, tokens: {result.tokens}")
    for label in failures[:MAX_FAILURES_SHOWN]:
        print(f"  failed: {label}", file=sys.stderr)
    if len(failures) > MAX_FAILURES_SHOWN:
        print(f"  ... and {len(failures) - MAX_FAILURES_SHOWN} more failures", file=sys.stderr)
    return len(failures)


def report_key_counts(table: rekey.TokenTable, counts: dict[str, int], active: str) -> None:
    stale = {key_id: n for key_id, n in counts.items() if key_id != active}
    summary = ", ".join(f"{key_id}: {n}" for key_id, n in counts.items()) or "no tokens"
    print(f"{table.name}: tokens per key: {summary} (active: {active})")
    if not stale:
        print(f"{table.name}: no tokens under old keys")
