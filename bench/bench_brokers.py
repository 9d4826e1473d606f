"""Kafka's CPU per message on the production topology, end to end, and the rate it sustains.

Run it on a three-node stack (``maskstream stack up --brokers 3``; the
pipeline's topics then have three replicas and ``min.insync.replicas=2``).
Logins are sent to SQS and go through the whole pipeline: the bridge, two
workers, PostgreSQL. So the brokers carry everything a deployment writes:
the raw records, the masked and rejected outputs, the ``seen_devices``
changelog, offsets, the transactions' markers and state, and the followers'
fetches of all of it.

Two measurements, each for every setting in turn, on one stack:

- **paced**: ``BENCH_BROKERS_RATE`` messages a second (1,000) for
  ``BENCH_BROKERS_MESSAGES`` (20,000). The brokers' CPU (all nodes, from
  /proc, less their rate while the pipeline was up and idle) from the moment
  the first tenth has its row or rejection until all have, divided by the
  messages counted in between; also the bridge's, the workers' and
  PostgreSQL's, for the whole picture; and the p99 of every row's
  ``ingested_at - sent_at`` (target: at most 1 s).
- **flat out**: ``BENCH_BROKERS_BACKLOG`` messages (30,000) already queued
  in SQS before the bridge starts; the rate at which rows and rejections
  appear between the first and the last tenth, and the CPU each part
  spent a message meanwhile, ElasticMQ's too: the local SQS takes the
  same two cores as the pipeline, where a deployment's SQS is AWS's.

The settings compared: the defaults (``current``), ``session12`` (those of
7 December, before the workers' fetches waited) and ``before``, the
defaults before issue 36 (transactions of 0.25 s, a bridge lingering 20 ms);
what the code changed with them (each raw partition's outputs to one output
partition, sent once a transaction) is in both, see docs/performance.md for
the code before. The target for ``current``: at most 200 µs of broker CPU a
message at 1,000 msgs/s. ``python -m bench brokers``; ``BENCH_BROKERS_SETTINGS=current``
measures one setting only. Each paced line also gives the brokers' requests
a message by type, as they count them (bench/kafka_requests.py): far steadier
than their CPU, which differs by a third between identical runs.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import cpu_seconds, tree_cpu_seconds
from bench.harness import Result
from bench.kafka_requests import RequestCounter, per_message
from bridge.sqs.client import SqsClient
from stream.common.settings import Settings
from stream.devstack.envfile import read_env_file
from stream.devstack.manager import Stack
from stream.devstack.processes import read_pid
from stream.ops.generate import Generator
from stream.ops.send import message_size_limit, send_stream
from tests.support.sandbox import IsolatedPipeline
from tests.test_readiness import wait_for

RATE = int(os.environ.get("BENCH_BROKERS_RATE", "1000"))
MESSAGES = int(os.environ.get("BENCH_BROKERS_MESSAGES", "20000"))
BACKLOG = int(os.environ.get("BENCH_BROKERS_BACKLOG", "30000"))
WORKERS = 2
PARTITIONS = 8
# Seconds of the idle pipeline over which the brokers' own rate is read
# (heartbeats, metadata, the controller): not the messages' cost.
IDLE_SECONDS = 15.0
TARGET_US = 200.0
# The part of Meters.read that is the local stand-in for SQS, not the pipeline.
LOCAL_SQS = "elasticmq"
SEED = 36

# Each setting is the environment the bridge and workers get on top of the
# pipeline's own. "before" undoes what issue 36 changed.
# "session12" is the defaults of 7 December (transactions of 1 s, a bridge
# lingering 100 ms, Faust's fetches: whatever is there, at once).
FAUST_FETCHES = {"MASKSTREAM_FETCH_MIN_BYTES": "1", "MASKSTREAM_FETCH_WAIT_MS": "1500"}
SETTINGS: dict[str, dict[str, str]] = {
    "current": {},
    "session12": {
        "MASKSTREAM_TRANSACTION_SECONDS": "1",
        "MASKSTREAM_BRIDGE_LINGER_MS": "100",
        **FAUST_FETCHES,
    },
    "before": {
        "MASKSTREAM_TRANSACTION_SECONDS": "0.25",
        "MASKSTREAM_BRIDGE_LINGER_MS": "20",
        **FAUST_FETCHES,
    },
}


@dataclass(frozen=True)
class PacedCost:
    """CPU seconds a message of each part, over the measured part of a paced run."""

    brokers: float
    bridge: float
    workers: float
    postgres: float
    messages: int
    seconds: float
    p99_latency: float  # seconds from SQS's SentTimestamp to the row, over every row
    idle_brokers: float  # CPU seconds a second of the brokers, pipeline up and idle
    requests: dict[str, float]  # the brokers' requests a message, by type, most first

    def line(self, label: str) -> str:
        us = 1e6
        top = ", ".join(f"{name} {count:.3f}" for name, count in list(self.requests.items())[:6])
        return (
            f"{label:<10} brokers {self.brokers * us:6.1f} µs/msg  bridge {self.bridge * us:5.1f}"
            f"  workers {self.workers * us:5.1f}  postgres {self.postgres * us:5.1f}"
            f"  p99 sent -> row {self.p99_latency * 1000:.0f} ms"
            f"  ({self.messages} msgs in {self.seconds:.1f} s,"
            f" {self.messages / self.seconds:.0f}/s)\n"
            f"{'':<10} brokers idle {self.idle_brokers * 1000:.0f} ms of CPU a second;"
            f" requests a message {sum(self.requests.values()):.3f}: {top}"
        )


class Meters:
    """The CPU seconds spent so far by each part of the pipeline and the stack.

    ``elasticmq`` is the local stand-in for SQS: on a deployment its work is
    AWS's, but here it takes the same two cores as the pipeline.
    """

    def __init__(self, stack: Stack, pipe: IsolatedPipeline) -> None:
        self._brokers = [_pid(node.pid_file) for node in stack.kafka_nodes()]
        self._postgres = _pid(stack.dir / "postgres" / "pid")
        self._sqs = _pid(stack.service("elasticmq").pid_file)
        self._pipe = pipe

    def _children(self, prefix: str) -> float:
        return sum(
            cpu_seconds(child.pid)
            for name, child in self._pipe.launcher.children.items()
            if name.startswith(prefix)
        )

    def read(self) -> dict[str, float]:
        return {
            "brokers": sum(cpu_seconds(pid) for pid in self._brokers),
            "bridge": self._children("bridge"),
            "workers": self._children("worker"),
            "postgres": tree_cpu_seconds(self._postgres),
            LOCAL_SQS: cpu_seconds(self._sqs),
        }


def _pid(path: Path) -> int:
    pid = read_pid(path)
    if pid is None:
        raise RuntimeError(f"no running process in {path}: is the stack up?")
    return pid


def logins(count: int) -> Iterator[bytes]:
    """*count* generated logins (about one in eight invalid), one a line."""
    yield from (line.encode() for line in Generator(seed=SEED, devices=MESSAGES // 4).lines(count))


async def send_paced(pipe: IsolatedPipeline, lines: Iterator[bytes], total: int) -> None:
    """Send *total* lines to the pipeline's queue, a tenth of RATE every 0.1 s."""
    settings = Settings(
        sqs_queue_url=pipe.env["SQS_QUEUE_URL"],
        sqs_endpoint_url=pipe.stack_env["AWS_ENDPOINT_URL_SQS"],
    )
    async with SqsClient.from_settings(settings, connections=8) as client:
        limit = await message_size_limit(client, settings.sqs_queue_url)
        started, sent, tick = time.monotonic(), 0, 0
        while sent < total:
            await asyncio.sleep(max(0.0, started + tick / 10 - time.monotonic()))
            chunk = [next(lines) for _ in range(min(RATE // 10, total - sent))]
            report = await send_stream(client, settings.sqs_queue_url, iter(chunk), 8, limit)
            sent, tick = sent + len(chunk), tick + 1
            assert not report.errors, report.errors[:3]
        behind = time.monotonic() - started - total / RATE
        if behind > 1.0:
            print(f"  note: the feeder fell {behind:.1f} s behind {RATE} msgs/s", flush=True)


def start_pipeline(pipe: IsolatedPipeline, extra_env: dict[str, str]) -> None:
    """The workers (once both are in the group and ready), then the bridge."""
    # The workers' batches as deployed (the test pipelines' are longer).
    pipe.env["MASKSTREAM_BATCH_SECONDS"] = str(Settings().batch_seconds)
    pipe.env.update(extra_env)
    for n in range(WORKERS):
        pipe.launcher.start_worker(f"worker-{n}")
    for n in range(WORKERS):
        port = pipe.launcher.web_ports[f"worker-{n}"]
        wait_for(f"http://127.0.0.1:{port}/ready", 200, 180, f"http://127.0.0.1:{port}/health")
    pipe.launcher.start_bridge("bridge")


def wait_until(pipe: IsolatedPipeline, done: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll *done*; stop early if one of the pipeline's processes has exited."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:.0f} s")
        if failed := pipe.launcher.failed():
            raise RuntimeError(f"a pipeline process exited: {failed}")
        time.sleep(0.2)


def paced(stack: Stack, env: dict[str, str], extra_env: dict[str, str]) -> PacedCost:
    """Feed a fresh pipeline at RATE; the CPU a message of each part."""
    with IsolatedPipeline(env, Path(stack.dir) / "bench", partitions=PARTITIONS) as pipe:
        pipe.create_queue()
        start_pipeline(pipe, extra_env)
        meters = Meters(stack, pipe)
        counter = RequestCounter(
            [_pid(node.pid_file) for node in stack.kafka_nodes()], Path(stack.dir) / "bench"
        )
        time.sleep(5.0)  # the bridge's first polls, the workers' first fetches
        idle_start, idle_at = meters.read(), time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle_end = meters.read()
        idle_rate = (idle_end["brokers"] - idle_start["brokers"]) / (time.monotonic() - idle_at)
        lines = logins(MESSAGES)
        feeder = asyncio.new_event_loop()
        try:
            task = feeder.create_task(send_paced(pipe, lines, MESSAGES))
            warm_up = MESSAGES // 10
            feeder.run_until_complete(until(pipe, lambda: pipe.outcome_count() >= warm_up))
            # Counted first: reading them takes a JVM's start, the rest an instant.
            first_requests = counter.read()
            first, first_count, first_at = meters.read(), pipe.outcome_count(), time.monotonic()
            feeder.run_until_complete(task)
        finally:
            feeder.close()
        wait_until(pipe, lambda: pipe.outcome_count() >= MESSAGES, 300, "not every message arrived")
        last, last_at = meters.read(), time.monotonic()
        counted, seconds = MESSAGES - first_count, last_at - first_at
        requests = per_message(first_requests, counter.read(), counted)
        spent = {part: last[part] - first[part] for part in last}
        spent["brokers"] -= idle_rate * seconds
        return PacedCost(
            spent["brokers"] / counted,
            spent["bridge"] / counted,
            spent["workers"] / counted,
            spent["postgres"] / counted,
            counted,
            seconds,
            p99_latency(pipe),
            idle_rate,
            requests,
        )


def p99_latency(pipe: IsolatedPipeline) -> float:
    ((p99,),) = pipe.query(
        "SELECT percentile_cont(0.99) WITHIN GROUP"
        " (ORDER BY extract(epoch FROM ingested_at - sent_at)) FROM user_logins"
    )
    return float(p99)


async def until(pipe: IsolatedPipeline, done: Callable[[], bool]) -> None:
    """:func:`wait_until` for the feeder's event loop, which must keep sending."""
    while not done():
        if failed := pipe.launcher.failed():
            raise RuntimeError(f"a pipeline process exited: {failed}")
        await asyncio.sleep(0.2)


@dataclass(frozen=True)
class FlatOut:
    """A backlog's rate end to end, and the CPU a message of each part meanwhile."""

    rate: float  # messages a second
    cpu: dict[str, float]  # CPU seconds a message, by part (Meters.read)

    def pipeline_cpu(self) -> float:
        """What a deployment runs here: everything but the local SQS."""
        return sum(seconds for part, seconds in self.cpu.items() if part != LOCAL_SQS)

    def line(self, label: str) -> str:
        us = 1e6
        parts = "  ".join(f"{part} {seconds * us:.0f}" for part, seconds in self.cpu.items())
        return (
            f"{label:<10} flat out: {self.rate:.0f} msgs/s end to end;"
            f" µs of CPU a message: {parts};"
            f" the pipeline without ElasticMQ {self.pipeline_cpu() * us:.0f}"
        )


def flat_out(stack: Stack, env: dict[str, str], extra_env: dict[str, str]) -> FlatOut:
    """Queue BACKLOG messages, then start the pipeline; messages a second end
    to end, and what each part spent a message on the way."""
    with IsolatedPipeline(env, Path(stack.dir) / "bench", partitions=PARTITIONS) as pipe:
        pipe.create_queue()
        pipe.send_to_sqs(list(logins(BACKLOG)))
        start_pipeline(pipe, extra_env)
        meters = Meters(stack, pipe)
        tenth = BACKLOG // 10
        wait_until(pipe, lambda: pipe.outcome_count() >= tenth, 300, "no first tenth")
        first, first_at, first_cpu = pipe.outcome_count(), time.monotonic(), meters.read()
        wait_until(pipe, lambda: pipe.outcome_count() >= BACKLOG - tenth, 600, "no last tenth")
        last, last_at, last_cpu = pipe.outcome_count(), time.monotonic(), meters.read()
        counted = last - first
        return FlatOut(
            counted / (last_at - first_at),
            {part: (last_cpu[part] - first_cpu[part]) / counted for part in last_cpu},
        )


def run() -> list[Result]:
    stack = Stack.from_settings()
    if stack.brokers < 3:
        print(f"  note: the stack has {stack.brokers} broker(s); run `stack up --brokers 3`")
    env = read_env_file(stack.env_file)
    os.environ.update(env)
    chosen = os.environ.get("BENCH_BROKERS_SETTINGS", ",".join(SETTINGS)).split(",")
    costs: dict[str, PacedCost] = {}
    flat_outs: dict[str, FlatOut] = {}
    for label in chosen:
        costs[label] = paced(stack, env, SETTINGS[label])
        print(" ", costs[label].line(label), flush=True)
    for label in chosen:
        flat_outs[label] = flat_out(stack, env, SETTINGS[label])
        print(" ", flat_outs[label].line(label), flush=True)
    subject = chosen[0]
    results = [
        Result(
            "brokers (cpu)",
            f"{subject}, {RATE} msgs/s, {stack.brokers} nodes",
            1 / costs[subject].brokers,
            f"{TARGET_US:.0f} µs a message",
            1e6 / TARGET_US,
            "msgs/cpu-s",
            ">= 1.0",
        ),
        Result(
            "brokers (latency)",
            f"{subject}, p99 sent -> row at {RATE} msgs/s",
            1 / costs[subject].p99_latency,
            "1 s",
            1.0,
            "1/s",
            ">= 1.0",
        ),
    ]
    for label in chosen[1:]:
        results += [
            Result(
                "brokers (cpu)",
                f"{subject}, {RATE} msgs/s",
                1 / costs[subject].brokers,
                f"{label}, same run",
                1 / costs[label].brokers,
                "msgs/cpu-s",
                ">= 1.0",
            ),
            Result(
                "brokers (rate)",
                f"{subject}, flat out",
                flat_outs[subject].rate,
                f"{label}, same run",
                flat_outs[label].rate,
                "msgs/s",
                ">= 0.9",  # the settings cost no rate (flat-out runs differ by 10%)
            ),
        ]
    return results
