"""maskstream's worker side by side with Kafka Connect's JDBC sink, Kafka -> PostgreSQL.

Kafka Connect is what a data engineer would otherwise run from a Kafka topic
into Postgres. No SQS source connector resolves from Maven Central (neither
Apache Camel's nor Nordstrom's), so only the Kafka -> Postgres half is
compared. In one run, on the same stack and machine, with the same 30,000
valid generated logins (10,000 of warm-up, 20,000 measured):

- **maskstream**: one fresh worker reads the raw bodies from an 8-partition
  topic, validates and masks them, writes rows, device state and the masked
  topic (measured by :func:`bench.bench_cost.measure`);
- **Connect**: one Kafka Connect standalone worker (``connect-runtime``),
  one task of Debezium's JDBC sink connector, reading the same logins,
  already masked by maskstream's own code, as JsonConverter records with
  schemas from an 8-partition topic and upserting them on ``message_id`` into
  a ``user_logins`` table made by maskstream's schema (same columns, same
  indexes), once its task has logged "finished initialization and start".
  It is measured twice: with JDBC batches
  (the connector's default way to write), and with the PostgreSQL UNNEST
  insert its documentation offers for throughput.

Each side first writes 10,000 rows (the JVM compiles its hot paths in its
first seconds; a long-running deployment does not pay that per row), then
CPU is read from /proc (bench/cpu.py, by :func:`bench.bench_cost.measure_process`)
over the next 20,000: the Connect JVM or the worker, and the PostgreSQL
server with its backends. The sides take turns for BENCH_CONNECT_ROUNDS rounds
(default 2) and each side's best round counts. Results are rows per
CPU-second of process + PostgreSQL, maskstream's over Connect's; the target
is >= 1.0. Rows/s are printed too, without a target: a few seconds of wall
time on two cores shared with the stack are noisy. The rows each side wrote
are compared column by column with maskstream's.

``python -m bench connect``; BENCH_CONNECT_ROWS, BENCH_CONNECT_WARMUP and
BENCH_CONNECT_BATCH change the rows measured, the warm-up rows and Connect's
batch.size (= its consumer's max.poll.records, as Debezium advises; 2,000
used the least CPU per row here of 500, 2,000 and 5,000).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tarfile
from pathlib import Path

import psycopg
from aiokafka.admin import NewTopic
from psycopg.conninfo import conninfo_to_dict

from bench.bench_cost import Cost, measure_process
from bench.harness import Result
from bench.sidebyside import (
    cpu_per_row,
    differences,
    line,
    row_count,
    row_digests,
    run_maskstream,
    valid_workload,
)
from bench.sidebyside import results as sidebyside_results
from stream.common import settings as settings_module
from stream.common.ports import any_free_port
from stream.core.keyring import load_keyring
from stream.core.masking import Masker
from stream.core.records import MaskedLogin, RawLogin
from stream.core.transform import mask_login
from stream.devstack import jvm
from stream.devstack.envfile import read_env_file
from stream.devstack.kafka import log4j2_config
from stream.devstack.manager import Stack
from stream.postgres.schema import ensure_schema
from tests.support.sandbox import IsolatedPipeline, RawMessage

ROWS = int(os.environ.get("BENCH_CONNECT_ROWS", "20000"))
# Rows each side writes before its CPU is read: the JVM compiles its hot
# paths in the first seconds, and a long-running deployment does not pay
# that per row.
WARM_UP = int(os.environ.get("BENCH_CONNECT_WARMUP", "10000"))
ROUNDS = int(os.environ.get("BENCH_CONNECT_ROUNDS", "2"))
# Debezium's batch.size (default 500); its documentation says the consumer's
# max.poll.records caps it, so both are set to this.
BATCH = int(os.environ.get("BENCH_CONNECT_BATCH", "2000"))
PARTITIONS = 8
MAVEN_DIR = Path(__file__).resolve().parent / "maven"
CONNECT_MAIN = "org.apache.kafka.connect.cli.ConnectStandalone"
TASK_STARTED = "Sink task finished initialization and start"
CONNECT_HEAP = "512m"  # as the stack's Kafka broker

LOG4J2_CONFIG = log4j2_config({"org.apache.kafka.connect": "INFO", "io.debezium": "INFO"})


def _field(name: str, kind: str, optional: bool = False, logical: str | None = None) -> dict:
    field: dict[str, object] = {"field": name, "type": kind, "optional": optional}
    if logical:
        field |= {"name": logical, "version": 1}
    return field


# A user_logins row as a Connect struct (JsonConverter, schemas.enable=true).
LOGIN_SCHEMA = {
    "type": "struct",
    "name": "maskstream.user_login",
    "optional": False,
    "fields": [
        _field("message_id", "string"),
        _field("user_id", "string"),
        _field("device_type", "string"),
        _field("masked_ip", "string"),
        _field("masked_device_id", "string"),
        _field("locale", "string", optional=True),
        _field("app_version", "int32"),
        _field("app_version_full", "string"),
        _field("create_date", "int32", logical="org.apache.kafka.connect.data.Date"),
        _field("sent_at", "int64", logical="org.apache.kafka.connect.data.Timestamp"),
        _field("envelope_kind", "string", optional=True),
        _field("envelope_id", "string", optional=True),
    ],
}
EPOCH_DAY_MS = 86_400_000


def connect_record(login: MaskedLogin) -> tuple[bytes, bytes]:
    """(key, value) of *login* as Kafka Connect's JsonConverter reads it."""
    payload = {
        "message_id": login.message_id,
        "user_id": login.user_id,
        "device_type": login.device_type,
        "masked_ip": login.masked_ip,
        "masked_device_id": login.masked_device_id,
        "locale": login.locale,
        "app_version": login.app_version,
        "app_version_full": login.app_version_full,
        "create_date": login.sent_at_ms // EPOCH_DAY_MS,
        "sent_at": login.sent_at_ms,
        "envelope_kind": login.envelope_kind,
        "envelope_id": login.envelope_id,
    }
    value = json.dumps({"schema": LOGIN_SCHEMA, "payload": payload}, separators=(",", ":"))
    return login.masked_device_id.encode(), value.encode()


def connect_records(messages: list[RawMessage], masker: Masker) -> list[tuple[bytes, bytes]]:
    """The logins masked by maskstream's own code, so both sides write the same rows."""
    records = []
    for m in messages:
        login = mask_login(RawLogin(m.message_id, m.sent_at_ms, m.body), masker)
        assert isinstance(login, MaskedLogin), "the workload holds valid logins only"
        records.append(connect_record(login))
    return records


def produce(pipe: IsolatedPipeline, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    async def go() -> None:
        async with pipe.kafka.admin_session() as admin:
            await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        producer = pipe.kafka.producer(acks="all", linger_ms=10)
        await producer.start()
        try:
            futures = [await producer.send(topic, value, key=key) for key, value in records]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(go())


def connect_classpath(cache_dir: Path) -> tuple[str, Path]:
    """The Connect worker's classpath and a plugin.path holding Debezium's
    JDBC sink, both from bench/maven/connect/pom.xml."""
    entries = jvm.resolve_classpath("connect", cache_dir / "classpath.txt", MAVEN_DIR).split(":")
    archives = [e for e in entries if e.endswith(".tar.gz")]
    assert len(archives) == 1, f"expected one connector archive, got {archives}"
    plugins = cache_dir / "plugins"
    marker = plugins / (Path(archives[0]).name + ".unpacked")
    if not marker.exists():
        plugins.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archives[0]) as archive:
            archive.extractall(plugins, filter="data")
        marker.touch()
    return ":".join(e for e in entries if e.endswith(".jar")), plugins


def _properties(values: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


def connect_files(
    pipe: IsolatedPipeline, topic: str, plugins: Path, unnest: bool
) -> tuple[Path, Path, Path]:
    """worker.properties, connector.properties and the log4j2 configuration."""
    work = pipe.launcher.log_dir / "connect"
    work.mkdir(parents=True, exist_ok=True)
    worker = {
        "bootstrap.servers": pipe.env["KAFKA_BOOTSTRAP_SERVERS"],
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true",
        "offset.storage.file.filename": str(work / "offsets"),
        "offset.flush.interval.ms": "10000",
        "plugin.path": str(plugins),
        # Every plugin here has ServiceLoader manifests (Connect's log says so):
        # no ~10 s reflective scan of the connector's jars at start-up.
        "plugin.discovery": "service_load",
        "listeners": f"http://127.0.0.1:{any_free_port()}",
        # Lets the connector set its consumer's max.poll.records, as Debezium advises.
        "connector.client.config.override.policy": "All",
    }
    database = conninfo_to_dict(pipe.database_url)
    connector = {
        "name": f"{pipe.name}-jdbc-sink",
        "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
        "tasks.max": "1",
        "topics": topic,
        "connection.url": (
            f"jdbc:postgresql://{database['host']}:{database['port']}/{database['dbname']}"
        ),
        "connection.username": str(database.get("user", "postgres")),
        "connection.password": str(database.get("password", "")),
        "insert.mode": "upsert",
        "primary.key.mode": "record_value",
        "primary.key.fields": "message_id",
        "schema.evolution": "basic",
        "collection.name.format": "user_logins",
        "use.time.zone": "UTC",
        "batch.size": str(BATCH),
        "consumer.override.max.poll.records": str(BATCH),
        "dialect.postgres.unnest.insert.enabled": "true" if unnest else "false",
    }
    paths = (work / "worker.properties", work / "connector.properties", work / "log4j2.xml")
    for path, text in zip(
        paths, (_properties(worker), _properties(connector), LOG4J2_CONFIG), strict=True
    ):
        path.write_text(text)
    return paths


def run_connect(
    stack: Stack,
    pipe: IsolatedPipeline,
    records: list[tuple[bytes, bytes]],
    classpath: str,
    plugins: Path,
    unnest: bool,
) -> Cost:
    with psycopg.connect(pipe.database_url, autocommit=True) as conn:
        ensure_schema(conn)  # the table maskstream writes: same columns and indexes
    topic = f"{pipe.name}.connect"
    produce(pipe, topic, records)
    worker, connector, log4j2 = connect_files(pipe, topic, plugins, unnest)
    argv = jvm.java_command(
        classpath,
        CONNECT_MAIN,
        [str(worker), str(connector)],
        heap=CONNECT_HEAP,
        properties={"log4j2.configurationFile": str(log4j2)},
    )
    return measure_process(
        pipe,
        stack,
        start=lambda: pipe.launcher.start("connect", argv),
        ready=lambda: TASK_STARTED in pipe.launcher.log("connect"),
        progress=lambda: row_count(pipe),
        messages=len(records),
        warm_up=WARM_UP,
    )


def run() -> list[Result]:
    stack = Stack.from_settings()
    env = read_env_file(stack.env_file)
    os.environ.update(env)  # the key ring, as workers see it
    bench_dir = Path(stack.dir) / "bench"
    classpath, plugins = connect_classpath(bench_dir / "connect-jvm")
    messages = valid_workload(WARM_UP + ROWS)
    masker = Masker(load_keyring(settings_module.load()))
    records = connect_records(messages, masker)
    sides: dict[str, list[Cost]] = {"maskstream": [], "batch": [], "unnest": []}
    # Every pipeline stays until all are measured (Kafka deletes a topic's
    # files a minute later, which would land in a later measurement). The
    # sides take turns, round after round, so load from elsewhere on the
    # machine falls on each alike; each side's best round is reported.
    with contextlib.ExitStack() as pipelines:
        for round_number in range(1, ROUNDS + 1):
            ours, batched, unnested = (
                pipelines.enter_context(IsolatedPipeline(env, bench_dir, partitions=PARTITIONS))
                for _ in range(3)
            )
            sides["maskstream"].append(run_maskstream(stack, ours, messages, WARM_UP))
            print(line(f"{round_number} maskstream worker", sides["maskstream"][-1]), flush=True)
            for label, pipe in (("batch", batched), ("unnest", unnested)):
                cost = run_connect(stack, pipe, records, classpath, plugins, label == "unnest")
                sides[label].append(cost)
                wrong = differences(row_digests(ours), row_digests(pipe))
                verdict = f"differ from maskstream's in {', '.join(wrong)}" if wrong else "match"
                print(
                    line(f"{round_number} connect ({label})", cost), f"rows {verdict}", flush=True
                )
    worker, jdbc, unnest = (min(costs, key=cpu_per_row) for costs in sides.values())
    for label, cost in (("maskstream", worker), ("batch", jdbc), ("unnest", unnest)):
        print(line(f"best {label}", cost), flush=True)
    results = []
    for name, label in (("JDBC batches", "batch"), ("UNNEST insert", "unnest")):
        results += sidebyside_results(
            "connect",
            sides["maskstream"],
            sides[label],
            ("worker+pg, masking", "maskstream worker (best)"),
            (f"Connect+pg, {name}", f"Connect, {name} (best)"),
            ">= 1.0",
        )
    return results
