"""The worker process: Faust's own, with a stack dump fit for a PII pipeline,
and an exit status that tells a supervisor when to restart it.

A mode worker answers SIGUSR1 with every thread's and task's stack, which is
how to see where a stalled worker waits. Its dump also prints each frame's
local variables, and here those hold raw logins: IPs and device ids would
reach the log. This worker's dump keeps the stacks and leaves the locals out.

An agent that crashes (not a message: each bad message already becomes a
rejection) leaves its partitions unprocessed for as long as the process
lives, and Faust's worker goes on running. The app stops the worker then
(:meth:`stream.worker.app.WorkerFaustApp.on_agent_crash`), and this worker
exits with :data:`CRASH_EXIT_STATUS` rather than Faust's 0, so Compose's
``restart:``, Kubernetes or systemd start it again; the group hands its
partitions to the other workers meanwhile.
"""

from __future__ import annotations

import sys
import threading
import traceback
from asyncio import all_tasks
from typing import IO, NoReturn

import faust
from mode.utils.logging import print_task_name
from mode.utils.tracebacks import print_task_stack

#: The exit status of a worker stopped because an agent crashed
#: (``EX_SOFTWARE``: an internal error, worth a restart).
CRASH_EXIT_STATUS = 70


class Worker(faust.Worker):
    async def _cry(self) -> None:
        dump_stacks(self.stderr)

    def execute_from_commandline(self) -> NoReturn:
        try:
            super().execute_from_commandline()
        except SystemExit as exit_:
            if not exit_.code and getattr(self.app, "crashed_agent", None):
                raise SystemExit(CRASH_EXIT_STATUS) from None
            raise


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
