"""Is the schema current? Read-only catalog queries, so a role without DDL rights can tell.

The workers run with a runtime role that may not create or alter tables
(docs/operations.md, "Roles and grants"): before running any DDL they ask
the catalog whether every table, column, default and index that
:data:`stream.postgres.schema.SCHEMA_TEMPLATES` creates is already there.
What to look for is read off those very statements (:func:`expected_schema`),
so a column added to the templates is looked for without another list to
keep in step; a statement of a kind this module cannot read fails loudly
(and so does the unit test that parses them all).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from stream.postgres.schema import SCHEMA_TEMPLATES, Tables, template_names

# A placeholder of the templates, e.g. {logins}.
_NAME = r"\{(\w+)\}"
# A table's statement may end with its layout's placeholder (PARTITION BY ...):
# either layout has the same columns, defaults and indexes.
_CREATE_TABLE = re.compile(
    rf"CREATE TABLE IF NOT EXISTS {_NAME}\s*\((.*)\)\s*(?:\{{\w+\}})?\s*$", re.S
)
_ADD_COLUMN = re.compile(rf"ALTER TABLE {_NAME} ADD COLUMN IF NOT EXISTS (\w+)\s")
_SET_DEFAULT = re.compile(rf"ALTER TABLE {_NAME} ALTER COLUMN (\w+) SET DEFAULT\s")
_CREATE_INDEX = re.compile(rf"CREATE (?:UNIQUE )?INDEX IF NOT EXISTS {_NAME} ON {_NAME}\s")
_CREATE_FUNCTION = re.compile(rf"CREATE OR REPLACE FUNCTION {_NAME}\(")
# Privileges taken away are not looked for: a worker neither needs nor can tell.
_REVOKE = re.compile(r"REVOKE ")
# Items of a CREATE TABLE body that are constraints, not columns.
_CONSTRAINT_WORDS = frozenset({"CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN", "EXCLUDE"})


@dataclass(frozen=True)
class ExpectedSchema:
    """What the schema statements leave in the database, by table name."""

    tables: frozenset[str]
    columns: frozenset[tuple[str, str]]  # (table, column)
    defaults: frozenset[tuple[str, str]]  # (table, column) with a default
    indexes: frozenset[tuple[str, str]]  # (table, index)
    functions: frozenset[str] = frozenset()


def _top_level_items(body: str) -> list[str]:
    """The comma-separated items of a CREATE TABLE body (commas inside
    parentheses, as in numeric(10,2), do not separate)."""
    items, depth, start = [], 0, 0
    for index, char in enumerate(body):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(body[start:index])
            start = index + 1
    items.append(body[start:])
    return [item.strip() for item in items if item.strip()]


def expected_schema(tables: Tables, templates: Iterable[str] = SCHEMA_TEMPLATES) -> ExpectedSchema:
    """What *templates* create for *tables*. Raises ValueError on a statement
    it cannot read (better than a check that silently looks for less)."""
    names = template_names(tables)
    created: set[str] = set()
    columns: set[tuple[str, str]] = set()
    defaults: set[tuple[str, str]] = set()
    indexes: set[tuple[str, str]] = set()
    functions: set[str] = set()
    for template in templates:
        statement = template.strip()
        if match := _CREATE_TABLE.match(statement):
            table = names[match[1]]
            created.add(table)
            for item in _top_level_items(match[2]):
                column, *definition = item.split()
                if column.upper() not in _CONSTRAINT_WORDS:
                    columns.add((table, column))
                    if "DEFAULT" in (word.upper() for word in definition):
                        defaults.add((table, column))
        elif match := _ADD_COLUMN.match(statement):
            columns.add((names[match[1]], match[2]))
        elif match := _SET_DEFAULT.match(statement):
            defaults.add((names[match[1]], match[2]))
        elif match := _CREATE_INDEX.match(statement):
            indexes.add((names[match[2]], names[match[1]]))
        elif match := _CREATE_FUNCTION.match(statement):
            functions.add(names[match[1]])
        elif _REVOKE.match(statement):
            continue
        else:
            raise ValueError(f"schema statement not understood: {statement.splitlines()[0]}")
    return ExpectedSchema(
        frozenset(created),
        frozenset(columns),
        frozenset(defaults),
        frozenset(indexes),
        frozenset(functions),
    )


# Every column (with whether it has a default) and every index of the named
# tables, as the search_path resolves them; a missing table yields no row.
# pg_catalog is readable by every role.
CATALOG_QUERY = """
SELECT t.name, 'column', a.attname, a.atthasdef
  FROM unnest(%(tables)s::text[]) AS t(name)
  JOIN pg_attribute a ON a.attrelid = to_regclass(quote_ident(t.name))
 WHERE a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT t.name, 'index', i.relname, false
  FROM unnest(%(tables)s::text[]) AS t(name)
  JOIN pg_index x ON x.indrelid = to_regclass(quote_ident(t.name))
  JOIN pg_class i ON i.oid = x.indexrelid
UNION ALL
SELECT p.proname, 'function', p.proname, false
  FROM pg_proc p
 WHERE p.proname = ANY(%(functions)s::text[])
   AND p.pronamespace = to_regnamespace(quote_ident(current_schema()))
"""

# One row of CATALOG_QUERY: table (a function: its name), 'column', 'index' or
# 'function', name, has a default.
CatalogRow = tuple[str, str, str, bool]


def missing(expected: ExpectedSchema, present: Iterable[CatalogRow]) -> list[str]:
    """What of *expected* the catalog rows *present* lack, in words, sorted
    (a missing table stands for its columns and indexes)."""
    rows = list(present)
    have_tables = {table for table, *_ in rows}
    have_columns = {(table, name) for table, kind, name, _ in rows if kind == "column"}
    have_defaults = {(table, name) for table, kind, name, default in rows if default}
    have_indexes = {(table, name) for table, kind, name, _ in rows if kind == "index"}
    have_functions = {name for _, kind, name, _ in rows if kind == "function"}
    lacking = [f"table {table}" for table in expected.tables - have_tables]
    lacking += [f"function {name}" for name in expected.functions - have_functions]
    described = (
        ("column {0}.{1}", expected.columns, have_columns),
        ("default of {0}.{1}", expected.defaults, have_defaults),
        ("index {1} on {0}", expected.indexes, have_indexes),
    )
    for form, wanted, have in described:
        lacking += [form.format(t, n) for t, n in wanted - have if t in have_tables]
    return sorted(lacking)


def _parameters(expected: ExpectedSchema) -> dict[str, list[str]]:
    return {"tables": sorted(expected.tables), "functions": sorted(expected.functions)}


def missing_objects(conn: psycopg.Connection, tables: Tables) -> list[str]:
    """What the database lacks of the schema (empty: current); read-only."""
    expected = expected_schema(tables)
    rows = conn.execute(CATALOG_QUERY, _parameters(expected)).fetchall()
    return missing(expected, rows)


async def missing_objects_async(conn: psycopg.AsyncConnection, tables: Tables) -> list[str]:
    """:func:`missing_objects` for the workers' asyncio connections."""
    expected = expected_schema(tables)
    cursor = await conn.execute(CATALOG_QUERY, _parameters(expected))
    return missing(expected, await cursor.fetchall())
