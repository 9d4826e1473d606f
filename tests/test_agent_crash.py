"""A crashed agent heals: the worker exits non-zero, a restart processes everything.

Every message already becomes a row or a rejection; what is left is a bug
or a fault no message causes. Faust's worker would run on with the agent
dead and its partitions unprocessed; ours stops and exits with
``CRASH_EXIT_STATUS``, so any supervisor starts it again. On the real
Kafka and PostgreSQL, with a fault hook only tests reach.
"""

from __future__ import annotations

import pytest

from stream.worker.faust_patches.worker_process import CRASH_EXIT_STATUS
from tests.support.sandbox import IsolatedPipeline
from tests.test_local_state import logins, rows_per_device


@pytest.mark.services
def test_a_crashed_agent_stops_the_worker_and_a_restart_processes_everything(
    pipeline: IsolatedPipeline,
) -> None:
    messages = logins(range(20), 2)
    pipeline.launcher.start_worker("worker", app="tests.support.crashing_worker")
    pipeline.produce_raw(messages)

    status = pipeline.launcher.children["worker"].wait(timeout=120)

    assert status == CRASH_EXIT_STATUS
    log = pipeline.launcher.log("worker")
    assert "crashed (RuntimeError): stopping this worker" in log
    assert pipeline.outcome_count() == 0  # the hook crashed before any write

    pipeline.launcher.start_worker("worker")  # the supervisor's restart, with the real agent
    pipeline.wait_for_outcomes(len(messages))

    assert pipeline.outcome_count() == len(messages)
    assert set(rows_per_device(pipeline).values()) == {2}
    assert len(rows_per_device(pipeline)) == 20
    assert pipeline.device_mismatches() == {}
    assert pipeline.launcher.children["worker"].poll() is None
