"""Soak run: a million messages end to end, watching throughput and memory.

``python -m bench.soak [--messages N]`` (or ``make soak``) feeds an isolated
pipeline on the local stack from SQS, through the bridge and two workers, to
PostgreSQL. The queue is kept topped up in chunks (ElasticMQ holds messages
in its heap), and every ``--every`` seconds the run records outcomes so far
and the RSS of the bridge, each worker, Kafka and PostgreSQL. It prints a
table and writes ``bench/results/soak-*.json``. Not a test: it asserts
nothing, it is read by people (is RSS flat? does throughput hold?).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import boto3

from bench.harness import machine
from stream.devstack.envfile import read_env_file
from stream.devstack.manager import Stack
from stream.devstack.processes import read_pid
from stream.ops.generate import Generator
from tests.support.sandbox import IsolatedPipeline

CHUNK = 20_000
QUEUE_HIGH_WATER = 60_000


def rss_mib(pid: int | None) -> float | None:
    """Resident memory of *pid* and its children (Postgres is many processes)."""
    if pid is None:
        return None
    total_kib = 0
    for proc in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{proc}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return round(total_kib / 1024, 1)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Feeder(threading.Thread):
    """Keeps the SQS queue topped up until *total* messages have been sent."""

    def __init__(self, pipe: IsolatedPipeline, total: int) -> None:
        super().__init__(daemon=True)
        self.pipe, self.total, self.sent = pipe, total, 0
        env = pipe.stack_env
        self.sqs = boto3.client(
            "sqs",
            endpoint_url=env["AWS_ENDPOINT_URL_SQS"],
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        self.generator = Generator(seed=2024, devices=total // 4)

    def queue_depth(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.pipe.env["SQS_QUEUE_URL"],
            AttributeNames=["ApproximateNumberOfMessages"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    def run(self) -> None:
        while self.sent < self.total:
            if self.queue_depth() > QUEUE_HIGH_WATER - CHUNK:
                time.sleep(1)
                continue
            count = min(CHUNK, self.total - self.sent)
            lines = [line.encode() + b"\n" for line in self.generator.lines(count)]
            self.sent += self.pipe.send_to_sqs(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args()

    stack = Stack.from_settings()
    env = read_env_file(stack.env_file)
    os.environ.update(env)  # boto3 clients read credentials and region from here
    pipe = IsolatedPipeline(env, stack.dir / "soak", partitions=8)
    pipe.create_database()
    pipe.create_topics()
    pipe.create_queue()
    feeder = Feeder(pipe, args.messages)
    feeder.start()
    workers = ["worker-1", "worker-2"]
    for name in workers:
        pipe.launcher.start_worker(name)
    pipe.launcher.start_bridge("bridge")
    pids: dict[str, int | None] = {
        name: child.pid for name, child in pipe.launcher.children.items()
    }
    pids["kafka"] = read_pid(stack.dir / "kafka" / "pid")
    pids["postgres"] = read_pid(stack.dir / "postgres" / "pid")

    samples = []
    started = time.monotonic()
    previous = (started, 0)
    try:
        while True:
            time.sleep(args.every)
            now, done = time.monotonic(), pipe.outcome_count()
            sample = {
                "seconds": round(now - started),
                "outcomes": done,
                "msgs_per_s": round((done - previous[1]) / (now - previous[0])),
                "rss_mib": {name: rss_mib(pid) for name, pid in pids.items()},
            }
            samples.append(sample)
            previous = (now, done)
            print(json.dumps(sample), flush=True)
            if done >= args.messages:
                break
            if any(child.poll() is not None for child in pipe.launcher.children.values()):
                print("a pipeline process exited; stopping the soak", flush=True)
                break
    finally:
        pipe.launcher.stop_all()
        pipe.drop_database()

    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    result = {"machine": machine(), "messages": args.messages, "samples": samples}
    (out / f"soak-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(result, indent=2))
    elapsed = samples[-1]["seconds"] if samples else 0
    print(f"\n{samples[-1]['outcomes'] if samples else 0} outcomes in {elapsed} s")
    for label, sample in (
        ("start", samples[0]),
        ("middle", samples[len(samples) // 2]),
        ("end", samples[-1]),
    ):
        print(f"{label:>6}: {sample['msgs_per_s']:>6} msgs/s  RSS MiB {sample['rss_mib']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
