"""``faust -A tests.support.crashing_worker worker``: the worker of
``stream.app`` whose agent crashes on its first batch, before writing
anything. A fault hook only tests reach: nothing in ``stream`` imports it.
"""

from __future__ import annotations

from typing import Any

from stream.worker import agents


async def crash(*_args: Any) -> None:
    raise RuntimeError("fault hook: the agent crashes")


agents.process_batch = crash  # type: ignore[assignment]

from stream.app import app  # noqa: E402  (after the hook is in place)

__all__ = ["app"]
