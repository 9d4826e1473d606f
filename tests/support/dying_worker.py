"""``faust -A tests.support.dying_worker worker``: the worker of ``stream.app``
that dies (``os._exit``, as kill -9 would leave it) right after its first
batch's PostgreSQL commit, before any of that batch's Kafka writes. A fault
hook only tests reach: nothing in ``stream`` imports it.
"""

from __future__ import annotations

import os
from typing import Any

from stream.worker import pipeline


async def die(*_args: Any) -> Any:
    os._exit(137)


pipeline.deliver = die  # type: ignore[assignment]

from stream.app import app  # noqa: E402  (after the hook is in place)

__all__ = ["app"]
