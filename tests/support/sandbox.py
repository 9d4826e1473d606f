"""An isolated pipeline on a shared stack, for tests and benchmarks (not production).

Each :class:`IsolatedPipeline` has its own topics, consumer group and
PostgreSQL database, so tests can run side by side on one stack and each
can count exactly what it produced.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from aiokafka import TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import ConsumerRecord
from psycopg import sql
from psycopg.abc import QueryNoTemplate

from stream.common import settings as settings_module
from stream.common.canonical import raw_record_key
from stream.common.kafka_security import KafkaClients
from stream.common.topic_admin import TopicSpec, ensure_topics
from stream.core.records import (
    HEADER_MESSAGE_ID,
    HEADER_RECEIVE_COUNT,
    HEADER_SENT_TIMESTAMP,
    MAX_RAW_RECORD_BYTES,
)
from stream.ops.launcher import Launcher
from stream.ops.outcomes import (
    ChildrenExited,
    OutcomesTimedOut,
    Progress,
    outcome_counts,
    wait_for_outcomes,
)
from stream.worker.table_partitions import changelog_name
from tests.support.sqs import SqsServer

# A record as another producer might write it: key, value and maybe headers.
PlainRecord = tuple[bytes | None, bytes] | tuple[bytes | None, bytes, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class RawMessage:
    """What the bridge would have put on the raw topic for one SQS message."""

    message_id: str
    body: bytes
    sent_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    # Header values to send instead of the bridge's (e.g. a broken timestamp).
    odd_headers: Mapping[str, bytes] = field(default_factory=dict)

    def headers(self) -> list[tuple[str, bytes]]:
        bridge = {
            HEADER_MESSAGE_ID: self.message_id.encode(),
            HEADER_SENT_TIMESTAMP: str(self.sent_at_ms).encode(),
            HEADER_RECEIVE_COUNT: b"1",
        }
        return list((bridge | dict(self.odd_headers)).items())


def with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@dataclass
class IsolatedPipeline:
    stack_env: dict[str, str]
    work_dir: Path
    partitions: int = 4
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    # False: leave the topics to the first worker, as a deployment that never
    # creates them itself does (the worker must then still consume them).
    topics_up_front: bool = True

    def __post_init__(self) -> None:
        self.admin_url = self.stack_env["DATABASE_URL"]
        self.database_url = with_database(self.admin_url, self.name)
        self.raw_topic = f"{self.name}.raw"
        self.masked_topic = f"{self.name}.masked"
        self.rejected_topic = f"{self.name}.rejected"
        self.env = {
            **self.stack_env,
            "DATABASE_URL": self.database_url,
            "MASKSTREAM_APP_ID": self.name,
            "MASKSTREAM_TOPIC_RAW": self.raw_topic,
            "MASKSTREAM_TOPIC_MASKED": self.masked_topic,
            "MASKSTREAM_TOPIC_REJECTED": self.rejected_topic,
            "MASKSTREAM_PARTITIONS": str(self.partitions),
            "MASKSTREAM_BATCH_SECONDS": "0.5",
            # Tests kill workers: let the group notice within seconds.
            "MASKSTREAM_SESSION_TIMEOUT_SECONDS": "10",
        }
        self.launcher = Launcher(self.env, self.work_dir / self.name)

    def __enter__(self) -> IsolatedPipeline:
        """Create the database and (unless not *topics_up_front*) the topics;
        on exit stop children, drop the database and delete every topic named
        after this pipeline."""
        self.create_database()
        if self.topics_up_front:
            self.create_topics()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.launcher.stop_all()
        self.drop_database()
        self.delete_topics()

    # -- database ---------------------------------------------------------------

    def create_database(self, encoding: str | None = None) -> None:
        """The pipeline's database; in *encoding* (from template0, C locale) if given."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name))
        if encoding is not None:
            statement += sql.SQL(
                " ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
            ).format(sql.Literal(encoding))
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)

    def drop_database(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            if conn.info.server_version < 130000:  # no DROP ... WITH (FORCE) before 13
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (self.name,),
                )
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(self.name))
                )
                return
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )

    def query(self, statement: QueryNoTemplate, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(statement, params).fetchall()

    def execute(self, statements: str) -> None:
        with psycopg.connect(self.database_url) as conn:
            conn.execute(statements)

    def row_count(self) -> int:
        try:
            return int(self.query("SELECT count(*) FROM user_logins")[0][0])
        except psycopg.errors.UndefinedTable:
            return 0

    def device_mismatches(
        self, logins: str = "user_logins", devices: str = "seen_devices"
    ) -> dict[str, tuple[int | None, int]]:
        """Devices whose count in *devices* differs from their rows in *logins*:
        masked id -> (stored count or None, rows)."""
        rows = self.query(
            sql.SQL(
                "SELECT l.masked_device_id, d.login_count, l.n FROM"
                " (SELECT masked_device_id, count(*) AS n FROM {} GROUP BY 1) l"
                " FULL JOIN {} d USING (masked_device_id)"
                " WHERE d.login_count IS DISTINCT FROM l.n"
            ).format(sql.Identifier(logins), sql.Identifier(devices))
        )
        return {device: (stored, n or 0) for device, stored, n in rows}

    def changelog_topic(self, partitions: int | None = None) -> str:
        """``seen_devices``' changelog for a raw topic of *partitions* (by default
        the raw topic's count as Kafka has it now, else the sandbox's own)."""
        return changelog_name(self.name, "seen_devices", partitions or self.raw_partitions())

    def raw_partitions(self) -> int:
        """The raw topic's partition count (the sandbox's own if it does not exist)."""

        async def count() -> int:
            async with self.kafka.admin_session() as admin:
                if self.raw_topic not in await admin.list_topics():
                    return self.partitions
                (described,) = await admin.describe_topics([self.raw_topic])
                return len(described["partitions"]) or self.partitions

        return asyncio.run(count())

    def changelog_mismatches(self, timeout: float = 60.0) -> dict[str, tuple[int | None, int]]:
        """Devices whose ``seen_devices`` entry, as a recovering worker would
        restore it from the table's changelog, differs from their rows:
        masked id -> (restored count or None, rows). Waits up to *timeout*
        for the last changelog writes to land."""
        per_device = dict(
            self.query("SELECT masked_device_id, count(*) FROM user_logins GROUP BY 1")
        )
        changelog = self.changelog_topic()
        deadline = time.monotonic() + timeout
        while True:
            latest: dict[str, int] = {}
            for key, value in self.read_topic(changelog):
                latest[(key or b"").decode()] = json.loads(value)["login_count"]
            wrong = {d: (latest.get(d), n) for d, n in per_device.items() if latest.get(d) != n}
            if not wrong or time.monotonic() > deadline:
                return wrong
            time.sleep(2)  # a final changelog write may still be in a producer buffer

    def progress(self) -> Progress:
        """Rows and rejections (none before the worker has created the tables)."""
        try:
            with psycopg.connect(self.database_url) as conn:
                return outcome_counts(conn)
        except psycopg.errors.UndefinedTable:
            return Progress(0, 0)

    def outcome_count(self) -> int:
        """Rows plus rejections (0 before the worker has created the tables)."""
        return self.progress().total

    def wait_for_outcomes(self, expected: int, timeout: float = 120.0) -> None:
        """:func:`stream.ops.outcomes.wait_for_outcomes` as a test assertion, with
        the diagnostics a stalled pipeline needs."""
        try:
            wait_for_outcomes(self.progress, expected, timeout, self.launcher)
        except ChildrenExited as exc:
            raise AssertionError(f"children exited: {exc.exited}") from None
        except OutcomesTimedOut as exc:
            # Workers answer SIGUSR1 with every thread's and task's stack
            # in their logs (stream/worker/faust_patches/worker_process.py): where a
            # stalled one waits.
            self.launcher.signal_workers(signal.SIGUSR1)
            time.sleep(2)
            raise AssertionError(
                f"only {exc.done.total} of {expected} outcomes ({self.row_count()} rows); "
                f"uncommitted records by partition: {self.lag()}; "
                f"workers' stacks are in their logs under {self.launcher.log_dir}"
            ) from None
        # Let in-flight batches land so a test can see an excess, not just
        # enough, and the last transactions commit their outputs.
        time.sleep(2 * float(self.env["MASKSTREAM_BATCH_SECONDS"]) + self.transaction_seconds() + 1)

    def transaction_seconds(self) -> float:
        """How long the workers' output transactions stay open at most."""
        return settings_module.load({**os.environ, **self.env}).transaction_seconds

    # -- sqs ---------------------------------------------------------------------

    def _sqs(self) -> SqsServer:
        """The stack's SQS server this pipeline uses (the test's own client, either protocol)."""
        return SqsServer(self.stack_env["AWS_ENDPOINT_URL_SQS"], "auto")

    def create_queue(self) -> str:
        """A queue of this pipeline's own; the bridge and `send` use it from now on."""
        url = self._sqs().create_queue(self.name)
        self.env["SQS_QUEUE_URL"] = url
        return url

    def queue_depth(self) -> int:
        """Messages still in this pipeline's queue, visible or received and not deleted."""
        return self._sqs().depth(self.env["SQS_QUEUE_URL"])

    def send_large_to_sqs(self, bodies: Iterable[str]) -> list[str]:
        """Send each body alone, whatever its size up to what SQS accepts
        (``send`` batches at most the queue's limit); return the SQS message ids."""
        sqs, url = self._sqs(), self.env["SQS_QUEUE_URL"]
        return [message_id for body in bodies for message_id in sqs.send(url, [body])]

    def send_to_sqs(self, lines: list[bytes], threads: int = 8) -> int:
        """Send each line as one message body; return how many SQS accepted."""
        from stream.common.settings import Settings
        from stream.ops.send import send_to_queue

        settings = Settings(
            sqs_queue_url=self.env["SQS_QUEUE_URL"],
            sqs_endpoint_url=self.stack_env["AWS_ENDPOINT_URL_SQS"],
        )
        report = send_to_queue(settings, lines, threads)
        assert not report.errors, report.errors[:3]
        return report.sent

    # -- kafka ---------------------------------------------------------------------

    @property
    def kafka(self) -> KafkaClients:
        """Clients configured as this pipeline's workers are (bootstrap servers,
        TLS, SASL), from its variables as they are now."""
        return KafkaClients.from_settings(settings_module.load({**os.environ, **self.env}))

    def create_topics(self) -> None:
        """Create the three topics up front, as a deployment would, so that no
        worker starts subscribed to a topic that does not exist yet."""
        asyncio.run(self._create_topics())

    async def _create_topics(self) -> None:
        # Kept forever: tests replay logins "sent" in 2023, and Kafka's
        # time-based retention counts from the record's timestamp (the SQS
        # SentTimestamp), so a default 7-day retention would delete them
        # at its next check, in the middle of a test.
        forever = {"retention.ms": "-1"}
        # The raw topic takes every body SQS accepts, as the bridge's does.
        largest = {"max.message.bytes": str(MAX_RAW_RECORD_BYTES)}
        specs = [
            TopicSpec(self.raw_topic, self.partitions, forever | largest),
            TopicSpec(self.masked_topic, self.partitions, forever),
            TopicSpec(self.rejected_topic, self.partitions, forever),
        ]
        # Replicated as the pipeline's own topics are (min(3, brokers) by default).
        setting = settings_module.load({**os.environ, **self.env}).topics.replication_factor
        async with self.kafka.admin_session() as admin:
            await ensure_topics(admin, specs, setting)

    def delete_topics(self, only: Sequence[str] | None = None, wait: bool = False) -> None:
        """Delete this pipeline's topics (or the *only* ones named), Faust's
        changelogs and replay topics included; with *wait*, until the broker
        no longer lists them (so that they can be created again).

        A suite creates hundreds of partitions; a broker keeping them all
        takes minutes to restart on a loaded 2-core machine, which is what
        the fault cases that restart Kafka then wait for.
        """
        asyncio.run(self._delete_topics(only, wait))

    async def _delete_topics(self, only: Sequence[str] | None, wait: bool) -> None:
        async with self.kafka.admin_session() as admin:

            async def ours() -> list[str]:
                return [
                    topic
                    for topic in await admin.list_topics()
                    if topic.startswith((f"{self.name}.", f"{self.name}-"))
                    and (only is None or topic in only)
                ]

            if doomed := await ours():
                await admin.delete_topics(doomed)
            deadline = time.monotonic() + 60
            while wait and await ours():
                assert time.monotonic() < deadline, "topics not deleted in 60 s"
                await asyncio.sleep(0.5)

    def topic_config(self, topic: str) -> dict[str, str] | None:
        """*topic*'s configuration as the broker reports it, None while it does not exist."""
        return asyncio.run(self._topic_config(topic))

    async def _topic_config(self, topic: str) -> dict[str, str] | None:
        async with self.kafka.admin_session() as admin:
            if topic not in await admin.list_topics():
                return None
            (response,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
        # One resource: (error, message, type, name, [(name, value, ...), ...]).
        (resource,) = response.resources
        return {entry[0]: entry[1] for entry in resource[4]}

    def wait_for_topic(self, topic: str, timeout: float = 60.0) -> dict[str, str]:
        """Block until *topic* exists (a worker or the bridge creates it); its configuration."""
        deadline = time.monotonic() + timeout
        while (config := self.topic_config(topic)) is None:
            failed = self.launcher.failed()
            assert not failed, f"children exited: {failed}"
            assert time.monotonic() < deadline, f"topic {topic} not created in {timeout:.0f} s"
            time.sleep(0.5)
        return config

    def wait_until_caught_up(self, timeout: float = 120.0) -> None:
        """Block until the workers have committed every raw record (a replay
        adds no outcomes to wait for); fail if a child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while lag := self.lag():
            failed = self.launcher.failed()
            assert not failed, f"children exited: {failed}"
            assert time.monotonic() < deadline, f"raw records not committed: {lag}"
            time.sleep(1.0)

    def lag(self) -> dict[str, int]:
        """Records past the workers' committed offset, per partition of the
        raw topic: which partitions a stalled pipeline left behind."""
        return asyncio.run(self._lag())

    async def _lag(self) -> dict[str, int]:
        consumer = self.kafka.consumer(group_id=self.name, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, partition)
                for topic in (self.raw_topic,)
                for partition in range(self.partitions)
            ]
            ends = await consumer.end_offsets(partitions)
            lag = {}
            for tp in partitions:
                behind = ends[tp] - (await consumer.committed(tp) or 0)
                if behind:
                    lag[f"{tp.topic.removeprefix(self.name + '.')}:{tp.partition}"] = behind
            return lag
        finally:
            await consumer.stop()

    def produce_raw(self, messages: Iterable[RawMessage]) -> None:
        asyncio.run(self._produce_raw(list(messages)))

    async def _produce_raw(self, messages: list[RawMessage]) -> None:
        producer = self.kafka.producer(
            enable_idempotence=True,
            acks="all",
            linger_ms=10,
            max_request_size=MAX_RAW_RECORD_BYTES,
        )
        await producer.start()
        try:
            futures = [
                await producer.send(
                    self.raw_topic,
                    m.body,
                    key=raw_record_key(m.body, "device_id") or m.message_id.encode(),
                    timestamp_ms=m.sent_at_ms,
                    headers=m.headers(),
                )
                for m in messages
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    def produce_plain(self, topic: str, records: Sequence[PlainRecord]) -> None:
        """(key, value) or (key, value, headers) records onto *topic*, as some
        other producer might write them."""
        asyncio.run(self._produce_plain(topic, records))

    async def _produce_plain(self, topic: str, records: Sequence[PlainRecord]) -> None:
        producer = self.kafka.producer(max_request_size=MAX_RAW_RECORD_BYTES)
        await producer.start()
        try:
            for key, value, *headers in records:
                await producer.send_and_wait(
                    topic, value, key=key, headers=headers[0] if headers else None
                )
        finally:
            await producer.stop()

    def read_topic(
        self, topic: str, isolation_level: str = "read_committed"
    ) -> list[tuple[bytes | None, bytes]]:
        """Every record currently on *topic*, as (key, value), as a consumer
        reading committed records (by default) sees them."""
        records = asyncio.run(self._read_topic(topic, isolation_level))
        return [(record.key, record.value) for record in records]

    def output_ids(self, isolation_level: str = "read_committed") -> dict[str, Counter[str]]:
        """How often each SQS message id is on each output topic."""
        return {
            "masked": Counter(
                json.loads(value)["message_id"]
                for _key, value in self.read_topic(self.masked_topic, isolation_level)
            ),
            "rejected": Counter(
                (key or b"").decode()
                for key, _value in self.read_topic(self.rejected_topic, isolation_level)
            ),
        }

    def output_mismatches(self) -> dict[str, object]:
        """What the output topics hold that PostgreSQL does not say they
        should, as a read_committed consumer sees them: ids with several
        copies, committed rows or rejections missing, ids with no row."""
        seen = self.output_ids()
        wanted = {
            "masked": {r[0] for r in self.query("SELECT message_id FROM user_logins")},
            "rejected": {r[0] for r in self.query("SELECT message_id FROM rejected_logins")},
        }
        wrong: dict[str, object] = {}
        if misplaced := self.misplaced_outputs():
            wrong["outputs off their raw record's partition"] = (
                f"{len(misplaced)}, e.g. {misplaced[:3]}"
            )
        for topic, counts in seen.items():
            copies = {m: n for m, n in counts.items() if n > 1}
            missing = wanted[topic] - set(counts)
            extra = set(counts) - wanted[topic]
            for what, found in (("copies", copies), ("missing", missing), ("extra", extra)):
                if found:
                    wrong[f"{topic} {what}"] = f"{len(found)}, e.g. {sorted(found)[:3]}"
        return wrong

    def misplaced_outputs(self) -> list[str]:
        """Output records not in the partition that carries their raw record's
        partition (stream.worker.producing.output_partition): ``topic:message id``."""

        async def partitions_of(topic: str) -> list[tuple[int, int, bytes | None, bytes]]:
            records = await self._read_topic(topic, "read_uncommitted")
            count = await self._partition_count(topic)
            return [(r.partition, count, r.key, r.value) for r in records]

        raw = {
            dict(record.headers).get(HEADER_MESSAGE_ID, b"").decode(): record.partition
            for record in asyncio.run(self._read_topic(self.raw_topic, "read_uncommitted"))
        }
        misplaced = []
        for topic, message_id in (
            (self.masked_topic, lambda key, value: json.loads(value)["message_id"]),
            (self.rejected_topic, lambda key, value: (key or b"").decode()),
        ):
            for partition, count, key, value in asyncio.run(partitions_of(topic)):
                found = message_id(key, value)
                if found in raw and partition != raw[found] % count:
                    misplaced.append(f"{topic}:{found}")
        return misplaced

    async def _partition_count(self, topic: str) -> int:
        async with self.kafka.admin_session() as admin:
            (described,) = await admin.describe_topics([topic])
            return len(described["partitions"])

    async def _read_topic(self, topic: str, isolation_level: str) -> list[ConsumerRecord]:
        consumer = self.kafka.consumer(
            topic,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level=isolation_level,
        )
        await consumer.start()
        try:
            tps = list(consumer.assignment())
            end = await consumer.end_offsets(tps)
            records: list[ConsumerRecord] = []
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                for batch in (await consumer.getmany(timeout_ms=2000)).values():
                    records.extend(batch)
            return records
        finally:
            await consumer.stop()
