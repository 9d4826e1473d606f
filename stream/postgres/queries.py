"""Queries that answer one value (a count, an existence test).

psycopg types ``fetchone()`` as "a row or None", since a query may return
no row; these queries always return one, and say so loudly if not, so that
callers need neither an index on an optional nor a ``type: ignore``.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.abc import Params
from psycopg.abc import QueryNoTemplate as Query


def scalar(conn: psycopg.Connection[Any], query: Query, params: Params | None = None) -> Any:
    """The first column of the one row *query* returns."""
    return _first(conn.execute(query, params).fetchone(), query)


async def scalar_async(
    conn: psycopg.AsyncConnection[Any], query: Query, params: Params | None = None
) -> Any:
    """:func:`scalar` on an asyncio connection."""
    cursor = await conn.execute(query, params)
    return _first(await cursor.fetchone(), query)


def _first(row: Any, query: Query) -> Any:
    if row is None:
        raise LookupError(f"query returned no row: {query!r}")
    return row[0]
