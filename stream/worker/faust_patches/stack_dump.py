"""The worker process: Faust's own, with a stack dump fit for a PII pipeline.

A mode worker answers SIGUSR1 with every thread's and task's stack, which is
how to see where a stalled worker waits. Its dump also prints each frame's
local variables, and here those hold raw logins: IPs and device ids would
reach the log. This worker's dump keeps the stacks and leaves the locals out.
"""

from __future__ import annotations

import sys
import threading
import traceback
from asyncio import all_tasks
from typing import IO

import faust
from mode.utils.logging import print_task_name
from mode.utils.tracebacks import print_task_stack


class Worker(faust.Worker):
    async def _cry(self) -> None:
        dump_stacks(self.stderr)


def dump_stacks(file: IO) -> None:
    """Every thread's stack, then every asyncio task's, without local variables."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        print(f"THREAD {names.get(ident, ident)}", file=file)
        traceback.print_stack(frame, file=file)
    print("TASKS", file=file)
    for task in all_tasks():
        print_task_name(task, file=file)
        print_task_stack(task, file=file, capture_locals=False)
    file.flush()
