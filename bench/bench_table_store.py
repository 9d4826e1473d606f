"""``seen_devices`` at millions of devices: the RocksDB store against the memory store.

``python -m bench table_store`` (``BENCH_TABLE_STORE_DEVICES``, default
10,000,000). One isolated pipeline on the local stack, one worker, 8
partitions, no standby (there is no other worker to hold one):

1. the table's changelog is filled with one entry per distinct device, in
   bulk (one aiokafka batch per partition at a time). Pushing ten million
   logins through SQS, masking and PostgreSQL would take hours here; what a
   store costs is set by the entries it holds and must read back, and a
   changelog of N distinct devices is exactly what N devices leave behind.
2. RocksDB store: a worker starts on an empty data directory (it reads the
   whole changelog once), processes live logins of new devices, is stopped
   with SIGTERM and started again, then killed with SIGKILL and started again.
3. Memory store, same pipeline, same changelog: a worker starts. Every start
   of the memory store is this one: it has nothing on disk, so it reads the
   whole changelog before it processes anything.

"Back to processing" is timed from the moment the process starts until a
probe of logins produced to the raw topic beforehand is in PostgreSQL. The
worker's RSS (from /proc) is sampled every ``SAMPLE_SECONDS`` throughout.
Absolute limits checked: the RocksDB worker's RSS <= ``RSS_LIMIT_MIB`` at
every sample, and each of its restarts back to processing within
``RESTART_LIMIT_SECONDS``. Samples and figures go to
``bench/results/table-store-*.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import NewTopic

from bench.harness import Result, machine
from bench.soak import rss_mib
from stream.core.records import SeenDevice
from stream.devstack.envfile import read_env_file
from stream.devstack.manager import Stack
from stream.ops.generate import Generator
from tests.support.sandbox import IsolatedPipeline, RawMessage

DEVICES = int(os.environ.get("BENCH_TABLE_STORE_DEVICES", "10000000"))
LIVE_LOGINS = int(os.environ.get("BENCH_TABLE_STORE_LIVE", "20000"))
PROBE_LOGINS = 200
PARTITIONS = 8
SAMPLE_SECONDS = 2.0
RSS_LIMIT_MIB = 300.0
RESTART_LIMIT_SECONDS = 30.0
# A memory-store start that has not caught up by then is reported as "more than".
START_TIMEOUT_SECONDS = float(os.environ.get("BENCH_TABLE_STORE_TIMEOUT", "1200"))
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(eq=False)  # a thread must stay hashable
class Sampler(threading.Thread):
    """Records the RSS of whichever worker is current, with the phase it is in."""

    samples: list[dict[str, object]] = field(default_factory=list)
    pid: int | None = None
    phase: str = ""
    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        while not self.done.wait(SAMPLE_SECONDS):
            rss = rss_mib(self.pid)
            if rss:
                self.samples.append(
                    {
                        "t": round(time.monotonic() - self.started, 1),
                        "phase": self.phase,
                        "rss_mib": rss,
                    }
                )

    def peak(self, prefix: str) -> float:
        return max(
            (float(str(s["rss_mib"])) for s in self.samples if str(s["phase"]).startswith(prefix)),
            default=0.0,
        )


def device_key(index: int) -> bytes:
    """A key as long as a real masked device id (``siv:<key id>:device_id:<payload>``)."""
    return b"siv:bench0:device_id:%032x" % index


async def fill_changelog(pipe: IsolatedPipeline, topic: str, devices: int) -> None:
    """*devices* entries on *topic*, device i on partition i mod PARTITIONS.

    The topic is created as Faust would create the table's changelog
    (compacted, same partitions), so the worker finds it as its own."""
    async with pipe.kafka.admin_session() as admin:
        await admin.create_topics(
            [NewTopic(topic, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    await asyncio.to_thread(pipe.wait_for_topic, topic)
    producer = pipe.kafka.producer(acks=1, max_batch_size=1024 * 1024, linger_ms=50)
    await producer.start()
    now_ms = int(time.time() * 1000)
    value = SeenDevice(now_ms - 86_400_000, now_ms, 3).dumps()
    pending: list[asyncio.Future[object]] = []
    try:
        for partition in range(PARTITIONS):
            batch = producer.create_batch()
            for index in range(partition, devices, PARTITIONS):
                if batch.append(key=device_key(index), value=value, timestamp=None) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=device_key(index), value=value, timestamp=None)
                    if len(pending) >= 64:
                        await asyncio.gather(*pending)
                        pending.clear()
            pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def logins(count: int, seed: int) -> list[RawMessage]:
    """Valid logins of devices never seen before (most a new table entry)."""
    generator = Generator(seed=seed, devices=count)
    return [
        RawMessage(str(uuid.uuid4()), json.dumps(generator.login()).encode()) for _ in range(count)
    ]


@dataclass
class Run:
    pipe: IsolatedPipeline
    sampler: Sampler
    seed: int = 100
    figures: dict[str, float | str] = field(default_factory=dict)

    def next_logins(self, count: int) -> list[RawMessage]:
        self.seed += 1
        return logins(count, self.seed)

    def start_until_processing(self, name: str, store: str, phase: str) -> float | None:
        """Start worker *name* on *store*; seconds until a probe produced
        beforehand is in PostgreSQL (None if not within the timeout)."""
        expected = self.pipe.outcome_count() + PROBE_LOGINS
        self.pipe.produce_raw(self.next_logins(PROBE_LOGINS))
        started = time.monotonic()
        child = self.pipe.launcher.start_worker(
            name, {"MASKSTREAM_TABLE_STORE": store, "MASKSTREAM_STANDBY_REPLICAS": "0"}
        )
        self.sampler.pid, self.sampler.phase = child.pid, phase
        while self.pipe.outcome_count() < expected:
            failed = self.pipe.launcher.failed()
            assert not failed, f"worker exited: {failed}"
            if time.monotonic() - started > START_TIMEOUT_SECONDS:
                return None
            time.sleep(0.5)
        seconds = time.monotonic() - started
        print(f"  {phase}: processing after {seconds:.1f} s", flush=True)
        return seconds

    def live(self, phase: str) -> None:
        """Live logins of new devices, until all are rows."""
        self.sampler.phase = phase
        expected = self.pipe.outcome_count() + LIVE_LOGINS
        started = time.monotonic()
        self.pipe.produce_raw(self.next_logins(LIVE_LOGINS))
        self.pipe.wait_for_outcomes(expected, timeout=600)
        self.figures[f"{phase} rows/s"] = round(LIVE_LOGINS / (time.monotonic() - started))

    def measure(self, label: str, seconds: float | None) -> None:
        self.figures[label] = (
            round(seconds, 1) if seconds is not None else (f"> {START_TIMEOUT_SECONDS:.0f}")
        )

    def rocksdb(self) -> None:
        name = "rocksdb"
        self.measure("rocksdb first start s", self.start_until_processing(name, name, "rocksdb"))
        self.live("rocksdb live")
        for how, sig in (("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL)):
            self.pipe.launcher.stop(name, sig)
            seconds = self.start_until_processing(name, name, f"rocksdb restart {how}")
            self.measure(f"rocksdb restart after {how} s", seconds)
            self.live(f"rocksdb live after {how}")
        data = self.pipe.launcher.log_dir / f"{name}-data"
        self.figures["rocksdb data dir MiB"] = round(du_mib(data), 1)
        self.pipe.launcher.stop(name)

    def memory(self) -> None:
        seconds = self.start_until_processing("memory", "memory", "memory start")
        self.measure("memory start s", seconds)
        if seconds is not None:
            self.live("memory live")
        self.pipe.launcher.stop("memory")


def du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def timed(func: Callable[[], object]) -> float:
    started = time.monotonic()
    func()
    return time.monotonic() - started


def run() -> list[Result]:
    stack = Stack.from_settings()
    stack_env = read_env_file(stack.env_file)
    with IsolatedPipeline(stack_env, Path(stack.dir) / "bench", partitions=PARTITIONS) as pipe:
        changelog = pipe.changelog_topic()
        print(f"  filling {changelog} with {DEVICES:,} devices", flush=True)
        fill_seconds = timed(lambda: asyncio.run(fill_changelog(pipe, changelog, DEVICES)))
        print(f"  filled in {fill_seconds:.0f} s", flush=True)
        sampler = Sampler()
        sampler.start()
        bench = Run(pipe, sampler, figures={"devices": DEVICES, "fill s": round(fill_seconds)})
        try:
            bench.rocksdb()
            bench.memory()
        finally:
            sampler.done.set()
            pipe.launcher.stop_all()
    return summarize(bench.figures, sampler)


def summarize(figures: dict[str, float | str], sampler: Sampler) -> list[Result]:
    """Print the figures and the absolute checks, save them with the samples,
    and give the harness the comparisons with the memory store."""
    rocksdb_peak, memory_peak = sampler.peak("rocksdb"), sampler.peak("memory")
    figures["rocksdb peak RSS MiB"], figures["memory peak RSS MiB"] = rocksdb_peak, memory_peak
    restarts = [v for k, v in figures.items() if k.startswith("rocksdb restart")]
    checks = {
        f"rocksdb RSS <= {RSS_LIMIT_MIB:.0f} MiB at every sample": (rocksdb_peak <= RSS_LIMIT_MIB),
        f"rocksdb restarts processing within {RESTART_LIMIT_SECONDS:.0f} s": all(
            isinstance(v, float) and v <= RESTART_LIMIT_SECONDS for v in restarts
        ),
    }
    for label, value in figures.items():
        print(f"  {label:<36} {value}")
    for label, ok in checks.items():
        print(f"  {label:<56} {'ok' if ok else 'MISSED'}")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"table-store-{stamp}.json").write_text(
        json.dumps(
            {
                "machine": machine(),
                "figures": figures,
                "checks": checks,
                "samples": sampler.samples,
            },
            indent=1,
        )
    )
    memory_start = figures["memory start s"]
    memory_seconds = memory_start if isinstance(memory_start, float) else START_TIMEOUT_SECONDS
    restart = figures["rocksdb restart after SIGKILL s"]
    return [
        Result(
            "table_store",
            "rocksdb: kill -9, restart",
            float(restart) if isinstance(restart, float) else float("nan"),
            "memory store: start",
            memory_seconds,
            "s",
            "<= 0.25",
        ),
        Result(
            "table_store",
            "rocksdb: peak RSS",
            rocksdb_peak,
            "memory store: peak RSS",
            memory_peak,
            "MiB",
            "<= 0.5",
        ),
    ]
