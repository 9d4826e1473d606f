"""Fault injection: nothing lost, nothing duplicated, counts exact.

Each case streams 20,000 SQS messages (about one in eight invalid) through
the real bridge, Kafka, two or three Faust workers and PostgreSQL, breaks
something mid-stream, and checks at the end that

- rows in ``user_logins`` = the valid messages sent, each exactly once;
- rows in ``rejected_logins`` = the invalid messages sent;
- every ``seen_devices`` entry, in PostgreSQL and in the Faust table (as a
  restarting worker would restore it from the changelog), counts exactly the
  rows of its device.

Run alone with ``pytest -m faults``.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from stream.core.records import MAX_SQS_BODY_BYTES
from stream.core.validation import InvalidLogin, parse_login
from stream.devstack.manager import Stack
from stream.ops.generate import Generator
from stream.ops.send import DEFAULT_MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from tests.support.sandbox import IsolatedPipeline
from tests.support.sqs_fault_proxy import fault_proxy
from tests.test_poison import POISONS, assert_worker_never_failed

pytestmark = [pytest.mark.services, pytest.mark.faults]

MESSAGES = int(os.environ.get("FAULT_MESSAGES", "20000"))
# How long outputs may still be missing once every row is in: a transaction
# coordinator's failover (Kafka's broker session, 9 s, then the election).
OUTPUTS_SETTLE_SECONDS = 60.0
T = TypeVar("T")


def synthetic_lines(count: int, seed: int) -> tuple[list[bytes], int]:
    """*count* bodies and how many of them are valid logins."""
    generator = Generator(seed=seed, devices=count // 4)
    lines = [line.encode() for line in generator.lines(count)]
    return [line + b"\n" for line in lines], count_valid(lines)


def count_valid(bodies: list[bytes]) -> int:
    valid = 0
    for body in bodies:
        try:
            parse_login(body)
            valid += 1
        except InvalidLogin:
            pass
    return valid


# SQS message text: XML 1.0 characters only (no NUL, no lone surrogates; the
# JSON escape text "\ud800" is plain ASCII and fine).
_SQS_CHARACTERS = re.compile(r"[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def sqs_can_carry(body: bytes) -> bool:
    """Whether SQS accepts *body* as a message (UTF-8 text of allowed characters)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return 0 < len(body) <= MAX_SQS_BODY_BYTES and not _SQS_CHARACTERS.search(text)


def scatter(lines: list[bytes], extra: list[bytes], rng: random.Random) -> list[bytes]:
    """*lines* with *extra* inserted at random places."""
    mixed = list(lines)
    for line in extra:
        mixed.insert(rng.randrange(len(mixed) + 1), line)
    return mixed


class FaultRun:
    """One isolated pipeline fed from its own SQS queue, with expectations."""

    def __init__(self, pipe: IsolatedPipeline) -> None:
        self.pipe = pipe
        self.sent = 0
        self.valid = 0
        pipe.create_queue()
        pipe.env.update(
            {
                "MASKSTREAM_BRIDGE_VISIBILITY_TIMEOUT": "15",
                "MASKSTREAM_BRIDGE_WAIT_SECONDS": "2",
                "MASKSTREAM_BATCH_SIZE": "500",
            }
        )

    def send(self, count: int, seed: int) -> None:
        lines, valid = synthetic_lines(count, seed)
        self.sent += self.pipe.send_to_sqs(lines)
        self.valid += valid

    def send_with_poison(self, count: int, seed: int, copies: int = 20) -> None:
        """*count* synthetic bodies with *copies* of every poison pill SQS can
        carry scattered among them; those over ``send``'s 256 KiB batch limit
        (up to SQS's 1 MiB) go one by one."""
        lines, valid = synthetic_lines(count, seed)
        carried = [p.body for p in POISONS if sqs_can_carry(p.body)]
        carried.append(b"j" * MAX_SQS_BODY_BYTES)  # the largest body SQS accepts
        assert count_valid(carried) == 0
        small = [body + b"\n" for body in carried if len(body) <= MAX_MESSAGE_BYTES]
        large = [body.decode() for body in carried if len(body) > MAX_MESSAGE_BYTES]
        self.sent += self.pipe.send_to_sqs(scatter(lines, small * copies, random.Random(seed)))
        self.sent += len(self.pipe.send_large_to_sqs(large * copies))
        self.valid += valid

    def start(self, workers: int = 2) -> None:
        for n in range(1, workers + 1):
            self.pipe.launcher.start_worker(f"worker-{n}")
        self.pipe.launcher.start_bridge("bridge")

    def wait_for_rows(self, fraction: float, timeout: float = 180.0) -> None:
        """Block until *fraction* of all expected outcomes exist (mid-stream)."""
        deadline = time.monotonic() + timeout
        while self.pipe.outcome_count() < fraction * self.sent:
            assert time.monotonic() < deadline, "the pipeline made no progress"
            time.sleep(0.2)

    def wait_until_ready(self, worker: str, timeout: float = 120.0) -> None:
        """Block until *worker* answers ``/ready``: it has joined the group and
        recovered its table (a worker stopped before that never joined)."""
        url = f"http://127.0.0.1:{self.pipe.launcher.web_ports[worker]}/ready"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return
            except OSError:  # not listening yet, or 503 while it joins
                assert time.monotonic() < deadline, f"{worker} not ready in {timeout:.0f} s"
                assert not self.pipe.launcher.failed(), self.pipe.launcher.failed()
                time.sleep(0.5)

    def stream_through(self, fault: Callable[[], T], progress: float, seed: int) -> T:
        """Stream MESSAGES through the bridge and two workers, strike *fault*
        once *progress* of the outcomes exist, then check the end state;
        return what *fault* returned."""
        self.send(MESSAGES, seed=seed)
        self.start(workers=2)
        self.wait_for_rows(progress)
        result = fault()
        self.finish_and_check()
        return result

    def finish_and_check(self, timeout: float = 300.0) -> None:
        self.pipe.wait_for_outcomes(self.sent, timeout=timeout)
        rows, distinct = self.pipe.query(
            "SELECT count(*), count(DISTINCT message_id) FROM user_logins"
        )[0]
        rejected = self.pipe.query("SELECT count(*) FROM rejected_logins")[0][0]
        assert distinct == rows, f"{rows - distinct} duplicate rows"
        assert rows == self.valid, f"{rows} rows for {self.valid} valid messages"
        assert rejected == self.sent - self.valid
        wrong = self.pipe.device_mismatches()
        assert not wrong, f"{len(wrong)} devices off in PostgreSQL, e.g. {list(wrong.items())[:3]}"
        self.check_seen_devices()
        self.check_outputs()

    def check_outputs(self) -> None:
        """Each message id once on the output topics, for read_committed consumers.

        Outputs still missing are waited for: a transaction whose coordinator
        was on a broker that died commits once another broker has taken its
        log over, which Kafka does only after the dead one's session expires
        (seconds after every row is in). Copies, strays and misplaced records
        never go away, so they fail at once."""
        deadline, started = time.monotonic() + OUTPUTS_SETTLE_SECONDS, time.monotonic()
        wrong = self.pipe.output_mismatches()
        while wrong and all(" missing" in what for what in wrong):
            if time.monotonic() > deadline:
                break
            time.sleep(2.0)
            wrong = self.pipe.output_mismatches()
        assert not wrong, f"output topics off: {wrong}"
        print(f"\noutputs complete {time.monotonic() - started:.0f} s after the check began")

    def check_seen_devices(self) -> None:
        wrong = self.pipe.changelog_mismatches()
        assert not wrong, f"{len(wrong)} devices off in the table, e.g. {list(wrong.items())[:3]}"


@pytest.fixture
def run(stack_env: dict[str, str], tmp_path: Path) -> Iterator[FaultRun]:
    with IsolatedPipeline(stack_env, tmp_path, partitions=8) as pipe:
        yield FaultRun(pipe)


@pytest.fixture
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    stack = Stack(Path(stack_env["MASKSTREAM_STACK_DIR"]))
    yield stack
    for name in ("kafka", "postgres"):  # never leave the shared stack broken
        stack.start_service(name)


# Each fault breaks something once the pipeline is part-way through the
# stream, and may have to mend it: the check that follows is the same for all.


def kill_one_of_two_workers_then_restart(run: FaultRun, stack: Stack) -> None:
    run.pipe.launcher.kill("worker-1")
    time.sleep(3)
    run.pipe.launcher.start_worker("worker-1b")


def kill_the_bridge_mid_batch_then_restart(run: FaultRun, stack: Stack) -> None:
    run.pipe.launcher.kill("bridge")
    run.pipe.launcher.start_bridge("bridge-again")


def kafka_down_for_10_seconds(run: FaultRun, stack: Stack) -> None:
    outage(stack, "kafka", 10)


def kafka_restarted_three_times_in_a_minute(run: FaultRun, stack: Stack) -> None:
    # Each restart replaces the bridge's and the workers' connections while
    # batches are in flight; a batch whose producer was replaced mid-send
    # once stayed unacknowledged until the bridge resent it.
    for _ in range(3):
        outage(stack, "kafka", 2)
        time.sleep(8)


def postgres_down_for_10_seconds(run: FaultRun, stack: Stack) -> None:
    outage(stack, "postgres", 10)


def outage(stack: Stack, service: str, seconds: float) -> None:
    stack.stop_service(service)
    time.sleep(seconds)
    stack.start_service(service)


FAULTS = [
    # (fault, fraction of outcomes written before it strikes, generator seed)
    (kill_one_of_two_workers_then_restart, 0.3, 101),
    (kill_the_bridge_mid_batch_then_restart, 0.2, 102),
    (kafka_down_for_10_seconds, 0.3, 103),
    (kafka_restarted_three_times_in_a_minute, 0.2, 108),
    (postgres_down_for_10_seconds, 0.3, 104),
]


@pytest.mark.parametrize(
    ("fault", "progress", "seed"),
    [pytest.param(*case, id=case[0].__name__) for case in FAULTS],
)
def test_nothing_lost_or_duplicated_when(
    fault: Callable[[FaultRun, Stack], None],
    progress: float,
    seed: int,
    run: FaultRun,
    stack: Stack,
) -> None:
    run.stream_through(lambda: fault(run, stack), progress, seed)


def test_replay_from_earliest_while_new_data_arrives(run: FaultRun) -> None:
    run.send(MESSAGES // 2, seed=105)
    run.start(workers=2)
    run.pipe.wait_for_outcomes(run.sent)
    for name in ("worker-1", "worker-2"):
        run.pipe.launcher.stop(name)
    replay = subprocess.run(
        # A worker stopped while the other's leaving rebalanced the group
        # may stay a member until its session times out.
        [sys.executable, "-m", "stream.cli", "replay", "--from", "earliest", "--wait", "60"],
        env={**os.environ, **run.pipe.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 0, replay.stderr
    run.send(MESSAGES // 2, seed=106)  # the bridge keeps forwarding meanwhile
    for name in ("worker-3", "worker-4"):
        run.pipe.launcher.start_worker(name)
    run.finish_and_check()


def test_poison_pills_of_every_kind_scattered_through_the_stream(run: FaultRun) -> None:
    """Every kind of poison SQS can carry (lone surrogate escapes, a 5,000-digit
    integer, NUL escapes, deep nesting, duplicate keys, bodies of ~200 KB to
    1 MiB), 20 copies each among 20,000 messages: exact rows and rejections,
    and neither worker ever exits or logs a traceback."""
    run.send_with_poison(MESSAGES, seed=109)
    run.start(workers=2)
    run.finish_and_check()
    for name in ("worker-1", "worker-2"):
        assert_worker_never_failed(run.pipe, name)


def test_third_worker_joins_mid_stream_then_leaves(run: FaultRun) -> None:
    run.send(MESSAGES, seed=107)
    run.start(workers=2)
    run.wait_for_rows(0.2)
    run.pipe.launcher.start_worker("worker-3")
    # The stream can pass half-way before a worker has even imported Faust.
    run.wait_until_ready("worker-3")
    run.wait_for_rows(0.5)
    assert run.pipe.launcher.stop("worker-3", signal.SIGTERM) == 0
    run.finish_and_check()


def test_sqs_answering_errors_and_resetting_connections_mid_answer(
    run: FaultRun, stack_env: dict[str, str]
) -> None:
    """The bridge reads SQS through a proxy that answers 5% of calls with a 500 or a
    throttling error and cuts 1% of answers halfway with a connection reset: it
    never stops, and every message still ends as exactly one row or rejection."""
    run.send(MESSAGES, seed=110)
    with fault_proxy(stack_env["AWS_ENDPOINT_URL_SQS"], error_rate=0.05, reset_rate=0.01) as proxy:
        run.pipe.env["AWS_ENDPOINT_URL_SQS"] = proxy.url
        run.pipe.env["SQS_QUEUE_URL"] = proxy.through(run.pipe.env["SQS_QUEUE_URL"])
        run.start(workers=2)
        run.finish_and_check()
        stopped = [n for n, child in run.pipe.launcher.children.items() if child.poll() is not None]
        assert not stopped, f"{stopped} stopped: {run.pipe.launcher.failed()}"
        tally = proxy.stop()
    assert tally["errors"] > 0 and tally["resets"] > 0, tally
    assert run.pipe.queue_depth() == 0
