"""How far a raw partition's outputs are published, carried in the metadata
of the consumer group's committed offset.

``maskstream replay`` rewinds the workers' group to reprocess raw records
whose outputs are already on ``logins.masked`` and ``logins.rejected``. It
leaves, with each rewound offset, the offset the group had committed before
(``published-through=N``): workers write the replayed records to PostgreSQL
as always, but publish nothing below N, and carry the mark forward with
each offset they commit until they pass it. ``replay --republish`` leaves
no mark, and the replayed records are published again.
"""

from __future__ import annotations

PREFIX = "maskstream:published-through="


def published_mark(through: int) -> str:
    """The metadata saying outputs are published up to (not including) *through*."""
    return f"{PREFIX}{through}"


def published_through(metadata: str | None) -> int | None:
    """The offset a mark names, or None if *metadata* holds no mark."""
    if not metadata or not metadata.startswith(PREFIX):
        return None
    text = metadata[len(PREFIX) :]
    return int(text) if text.isascii() and text.isdigit() else None


def carried_mark(through: int | None, next_offset: int) -> str:
    """The metadata to commit with *next_offset*: the mark while still below it."""
    return published_mark(through) if through is not None and through > next_offset else ""
