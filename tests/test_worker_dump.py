"""The worker's SIGUSR1 stack dump shows where tasks wait, never their data."""

from __future__ import annotations

import asyncio
import io

from stream.worker.faust_patches.worker_process import dump_stacks

RAW_BODY = '{"ip": "203.0.113.9", "device_id": "593-47-5928"}'


async def waiting_with_a_raw_login(body: str, release: asyncio.Event) -> None:
    await release.wait()


async def dump_while_a_task_waits() -> str:
    release = asyncio.Event()
    task = asyncio.create_task(waiting_with_a_raw_login(RAW_BODY, release))
    await asyncio.sleep(0)
    dump = io.StringIO()
    dump_stacks(dump)
    release.set()
    await task
    return dump.getvalue()


def test_the_dump_names_the_waiting_coroutine_but_not_its_locals() -> None:
    dump = asyncio.run(dump_while_a_task_waits())
    assert "waiting_with_a_raw_login" in dump
    assert "THREAD MainThread" in dump
    assert "203.0.113.9" not in dump and "593-47-5928" not in dump
