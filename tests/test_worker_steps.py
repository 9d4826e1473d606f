"""The agent's steps (stream.worker.pipeline) on in-memory fakes: no Kafka, no PostgreSQL.

The fakes keep what they are given; the writer answers as the real one
does (tests/test_writer.py shows that on PostgreSQL): absolute device
states, the outcomes whose rows it refuses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from stream.common.published_marks import carried_mark, published_through
from stream.core import batch as core
from stream.core.batch import Outcome
from stream.core.keyring import new_keyring
from stream.core.masking import Masker
from stream.core.records import MaskedLogin, RawLogin, Rejection, SeenDevice
from stream.postgres.rows import DeviceState
from stream.postgres.writer import Written
from stream.worker import pipeline, transactions
from stream.worker.pipeline import Collaborators, Publishing
from stream.worker.producing import Deliveries, KeyedRecord, output_partition
from stream.worker.stats import PipelineStats
from stream.worker.transactions import Floor, PartitionPublisher, PartitionShare, contiguous_end

MASKER = Masker(new_keyring("siv"))


def raw(message_id: str, device: str = "dev-1", **fields: object) -> RawLogin:
    body = {
        "user_id": "u",
        "app_version": "2.3.0",
        "device_type": "android",
        "ip": "10.0.0.1",
        "locale": None,
        "device_id": device,
    }
    return RawLogin(message_id, 1_700_000_000_000, json.dumps(body | fields).encode())


@dataclass
class FakeWriter:
    """Commits everything but the logins of *refusing* (message ids)."""

    refusing: set[str] = field(default_factory=set)
    written: list[Outcome] = field(default_factory=list)
    stored_rejections: list[Rejection] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    async def write(self, batch: Sequence[Outcome]) -> Written:
        refused, devices = [], {}
        for outcome in batch:
            self.written.append(outcome)
            login = outcome.login
            if login is None:
                assert outcome.rejection is not None
                self.stored_rejections.append(outcome.rejection)
            elif login.message_id in self.refusing:
                refused.append((outcome, "database refused row: NUL"))
            else:
                device = login.masked_device_id
                self.counts[device] = self.counts.get(device, 0) + 1
                entry = SeenDevice(login.sent_at_ms, login.sent_at_ms, self.counts[device])
                added = devices[device].new_logins + 1 if device in devices else 1
                devices[device] = DeviceState(device, entry, added)
        return Written(devices, refused, new_rows=sum(s.new_logins for s in devices.values()))

    async def store_rejections(self, rejections: Sequence[tuple[Rejection, str]]) -> None:
        self.stored_rejections.extend(rejection for rejection, _position in rejections)


@dataclass
class FakeDevices:
    stored: dict[str, tuple[int, int]] = field(default_factory=dict)  # device -> (count, partition)

    async def store(
        self, entries: Mapping[str, SeenDevice], partitions: Mapping[str, int]
    ) -> Deliveries:
        for device, entry in entries.items():
            self.stored[device] = (entry.login_count, partitions[device])
        return []


@dataclass
class FakeOutputs:
    """Publishes every partition from *floor* on, but those in *lost*."""

    masked: list[KeyedRecord] = field(default_factory=list)
    rejected: list[KeyedRecord] = field(default_factory=list)
    shares: list[PartitionShare] = field(default_factory=list)
    floor: int = 0
    lost: set[int] = field(default_factory=set)
    tracked: bool = False  # True: offsets committed with the outputs, from *floor* on

    async def floors(self, partitions: set[int]) -> dict[int, Floor | None]:
        floor = Floor(self.floor, self.floor, tracked=self.tracked)
        return {p: None if p in self.lost else floor for p in partitions}

    async def publish(self, shares: Sequence[PartitionShare]) -> Deliveries:
        self.shares.extend(shares)
        for share in shares:
            self.masked.extend(share.masked)
            self.rejected.extend(share.rejected)
        return []


@dataclass
class FakeMetrics:
    batches: list[tuple[str, int]] = field(default_factory=list)

    committed: list[str] = field(default_factory=list)

    def observe_batch(self, table: str, rows: int, seconds: float) -> None:
        self.batches.append((table, rows))

    def observe_committed(self, logins: Sequence[MaskedLogin]) -> None:
        self.committed.extend(login.message_id for login in logins)


def collaborators(
    writer: FakeWriter | None = None, publishing: Publishing | None = None
) -> Collaborators:
    return Collaborators(
        masker=MASKER,
        writer=writer or FakeWriter(),
        devices=FakeDevices(),
        outputs=FakeOutputs(),
        publishing=publishing or Publishing(),
        stats=PipelineStats(),
        metrics=FakeMetrics(),
        logins_table="user_logins",
    )


def run(records: list[tuple[RawLogin, int]], parts: Collaborators) -> None:
    asyncio.run(pipeline.process_batch(records, parts))


def test_a_batch_goes_to_the_database_the_table_and_both_topics() -> None:
    parts = collaborators()
    run([(raw("m1", "dev-a"), 3), (raw("m2", "dev-a"), 3), (raw("m3", "dev-b"), 1)], parts)
    run([(RawLogin("m4", 0, b"not json"), 2)], parts)

    outputs, devices = parts.outputs, parts.devices
    assert isinstance(outputs, FakeOutputs) and isinstance(devices, FakeDevices)
    masked = [json.loads(record.value) for record in outputs.masked]
    assert [m["message_id"] for m in masked] == ["m1", "m2", "m3"]
    assert all(
        record.key.decode() == m["masked_device_id"]
        for record, m in zip(outputs.masked, masked, strict=True)
    )
    # Each device's state, absolute, at the raw partition its logins came from.
    assert sorted(devices.stored.values()) == [(1, 1), (2, 3)]
    assert [record.key for record in outputs.rejected] == [b"m4"]
    stats = parts.stats
    assert (stats.masked, stats.rows_written, stats.rows_already_present) == (3, 3, 0)
    assert stats.rejections == {"not JSON": 1}
    metrics = parts.metrics
    assert isinstance(metrics, FakeMetrics)
    assert metrics.batches == [("user_logins", 3), ("user_logins", 0)]
    assert metrics.committed == ["m1", "m2", "m3"]  # freshness counts committed logins


def test_a_refused_row_becomes_a_stored_and_published_rejection() -> None:
    writer = FakeWriter(refusing={"m2"})
    parts = collaborators(writer)
    run([(raw("m1"), 0), (raw("m2"), 0)], parts)

    assert [r.message_id for r in writer.stored_rejections] == ["m2"]
    refused = writer.stored_rejections[0]
    assert refused.reason == "database refused row: NUL"
    assert MASKER.unmask(refused.body_token) == (
        "body",
        raw("m2").body.decode(),
    )  # the body, recoverable
    outputs = parts.outputs
    assert isinstance(outputs, FakeOutputs)
    assert [json.loads(record.value)["message_id"] for record in outputs.masked] == ["m1"]
    assert [record.key for record in outputs.rejected] == [b"m2"]
    assert parts.stats.rejections == {"database refused row: NUL": 1}
    assert (parts.stats.rows_written, parts.stats.rows_already_present) == (1, 0)


def test_redelivered_logins_count_as_already_present() -> None:
    writer = FakeWriter()
    parts = collaborators(writer)
    run([(raw("m1"), 0)], parts)
    written = Written({}, [], new_rows=0)  # what the database says of a redelivery
    outcomes = [Outcome(raw("m1"), 0, login=writer.written[0].login)]
    pipeline.count(outcomes, written, parts.stats)
    assert (parts.stats.rows_written, parts.stats.rows_already_present) == (1, 1)


@pytest.mark.parametrize(
    ("publishing", "masked", "rejected"),
    [(Publishing(masked=False), 0, 1), (Publishing(rejected=False), 1, 0)],
)
def test_each_output_topic_can_be_turned_off(
    publishing: Publishing, masked: int, rejected: int
) -> None:
    parts = collaborators(publishing=publishing)
    run([(raw("m1"), 0), (RawLogin("m2", 0, b"[]"), 0)], parts)
    outputs = parts.outputs
    assert isinstance(outputs, FakeOutputs)
    assert (len(outputs.masked), len(outputs.rejected)) == (masked, rejected)


def test_records_too_large_for_kafka_are_left_off_and_counted() -> None:
    stats = PipelineStats()
    too_large = b"x" * (pipeline.MAX_OUTPUT_RECORD_BYTES + 1)
    records = [KeyedRecord(b"k", b"x" * 10), KeyedRecord(b"k", too_large)]
    assert pipeline.fitting(records, stats) == records[:1]
    assert stats.unpublished == 1


class BrokenMasker(Masker):
    """Fails on device ids only: the rejection's body token still works."""

    def mask(self, field: str, value: str) -> str:
        if field == "device_id":
            raise RuntimeError(f"cannot mask {value}")
        return super().mask(field, value)


def test_an_unexpected_failure_is_that_records_rejection_without_values() -> None:
    masker = BrokenMasker(new_keyring("siv"))
    (broken, junk) = core.outcomes(
        [(raw("m1", "dev-secret"), 5), (RawLogin("m2", 0, b"{"), 6)], masker
    )
    assert broken.login is None and broken.partition == 5
    assert broken.rejection is not None
    assert broken.rejection.reason == "could not process the message (RuntimeError)"
    assert junk.rejection is not None and junk.rejection.reason == "not JSON"


def test_masked_logins_carry_on_only_the_attributes_a_setting_names() -> None:
    headers = {
        "sqs_message_id": b"m1",
        "sqs_attr.trace": b"trace-1",
        "sqs_attr.weight": b"3.5",
        "sqs_attr_type.weight": b"Number",
        "sqs_attr.email": b"someone@example.com",
    }
    login = raw("m1")
    login.headers = headers
    default = collaborators()
    run([(login, 0)], default)
    assert isinstance(default.outputs, FakeOutputs)
    assert [record.headers for record in default.outputs.masked] == [()]

    naming = collaborators(publishing=Publishing(attributes=("trace", "weight", "absent")))
    run([(login, 0), (RawLogin("m2", 0, b"not json", headers=headers), 1)], naming)
    assert isinstance(naming.outputs, FakeOutputs)
    assert [record.headers for record in naming.outputs.masked] == [
        (
            ("sqs_attr.trace", b"trace-1"),
            ("sqs_attr.weight", b"3.5"),
            ("sqs_attr_type.weight", b"Number"),
        )
    ]
    assert [record.headers for record in naming.outputs.rejected] == [()]


def at(record: RawLogin, partition: int, offset: int) -> RawLogin:
    record.position, record.offset = f"raw:{partition}:{offset}", offset
    return record


def test_a_copy_of_a_message_another_record_wrote_publishes_nothing() -> None:
    """Two copies of one SQS message (a bridge that died before deleting it):
    only the record whose row it is publishes."""
    first, copy = at(raw("m1"), 0, 10), at(raw("m1"), 0, 11)
    outcomes = core.outcomes([(first, 0), (copy, 0), (at(raw("m2"), 0, 12), 0)], MASKER)
    written = Written({}, [], new_rows=2, writers={("m1", "raw:0:10"), ("m2", "raw:0:12")})
    outputs = FakeOutputs()
    asyncio.run(pipeline.publish(outcomes, written, outputs, Publishing(), PipelineStats()))
    assert [json.loads(r.value)["message_id"] for r in outputs.masked] == ["m1", "m2"]


def test_a_batch_processed_again_publishes_what_its_records_wrote() -> None:
    """Nothing new inserted (the batch was committed before its outputs): the
    rows say these very records wrote them, so they are published again."""
    records = [(at(raw(f"m{n}"), 1, n), 1) for n in range(3)]
    outcomes = core.outcomes(records, MASKER)
    writers = {(r.message_id, r.position) for r, _ in records}
    written = Written({}, [], new_rows=0, writers=writers)
    outputs = FakeOutputs()
    asyncio.run(pipeline.publish(outcomes, written, outputs, Publishing(), PipelineStats()))
    assert len(outputs.masked) == 3


def test_records_below_the_floor_or_of_a_lost_partition_are_left_out() -> None:
    """Below the committed offset found when the partition was taken over,
    the outputs are published already; a partition lost to another worker
    publishes nothing, and commits nothing."""
    records = [(at(raw(f"m{n}"), 0, n), 0) for n in range(5)]
    records += [(at(raw("m9", device="dev-9"), 2, 7), 2)]
    outcomes = core.outcomes(records, MASKER)
    outputs = FakeOutputs(floor=3, lost={2}, tracked=True)
    asyncio.run(
        pipeline.publish(outcomes, Written({}, [], 6), outputs, Publishing(), PipelineStats())
    )
    assert [json.loads(r.value)["message_id"] for r in outputs.masked] == ["m3", "m4"]
    assert [(s.partition, s.next_offset) for s in outputs.shares] == [(0, 5)]


@dataclass
class HeldOutputs(FakeOutputs):
    """Holds every share in one raw partition's open transaction, as the
    transactional outputs do (its producer is never reached before a commit)."""

    publisher: PartitionPublisher = field(
        default_factory=lambda: PartitionPublisher(None, Floor(0, 0))  # type: ignore[arg-type]
    )

    async def floors(self, partitions: set[int]) -> dict[int, Floor | None]:
        return dict.fromkeys(partitions, self.publisher.floor)

    async def publish(self, shares: Sequence[PartitionShare]) -> Deliveries:
        for share in shares:
            self.publisher.add(share)
        return []


def test_a_batch_delivered_again_is_held_once_in_the_open_transaction() -> None:
    """A delivery is retried whole (the changelog's write failed, say) after
    its outputs were added to the open transaction: the retry adds none of
    them again, so the commit carries each once; the next batch goes on."""
    first = core.outcomes([(at(raw(f"m{n}"), 0, n), 0) for n in range(3)], MASKER)
    outputs = HeldOutputs()
    for _attempt in range(2):
        asyncio.run(
            pipeline.publish(first, Written({}, [], 3), outputs, Publishing(), PipelineStats())
        )
    following = core.outcomes([(at(raw("m3"), 0, 3), 0)], MASKER)
    asyncio.run(
        pipeline.publish(following, Written({}, [], 1), outputs, Publishing(), PipelineStats())
    )
    held = [json.loads(record.value)["message_id"] for record in outputs.publisher.masked]
    assert held == ["m0", "m1", "m2", "m3"]
    assert outputs.publisher.offset is not None and outputs.publisher.offset.offset == 4


def test_a_commit_that_hangs_is_given_up_as_a_kafka_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka may wait for ever on a transaction coordinator that died; the
    commit ends with a Kafka error (retried: abort, read again) instead of
    holding every later commit of the worker."""

    class HangingProducer:
        async def begin_transaction(self) -> None:
            await asyncio.Event().wait()

    monkeypatch.setattr(transactions, "COMMIT_TIMEOUT_SECONDS", 0.05)
    publisher = PartitionPublisher(HangingProducer(), Floor(0, 0))  # type: ignore[arg-type]
    publisher.add(PartitionShare(0, 1))
    with pytest.raises(KafkaError, match="did not commit"):
        asyncio.run(publisher.commit(TopicPartition("raw", 0), "group", ("masked", "rejected")))


def test_a_share_never_commits_below_its_floor() -> None:
    """A stale batch (fetched before the previous owner's last commit) moves
    no offset back."""
    outcomes = core.outcomes([(at(raw("m1"), 0, 2), 0)], MASKER)
    outputs = FakeOutputs(floor=40, tracked=True)
    asyncio.run(
        pipeline.publish(outcomes, Written({}, [], 1), outputs, Publishing(), PipelineStats())
    )
    assert outputs.masked == []
    assert [(s.partition, s.next_offset) for s in outputs.shares] == [(0, 40)]


def test_below_a_replays_mark_records_are_written_not_published() -> None:
    """After `maskstream replay` (the group rewound to 0, marked published
    through 3): offsets advance from the batch, nothing below 3 is
    published, and the mark rides along until the commits pass it."""
    outcomes = core.outcomes([(at(raw(f"m{n}"), 0, n), 0) for n in range(2)], MASKER)

    @dataclass
    class Replayed(FakeOutputs):
        async def floors(self, partitions: set[int]) -> dict[int, Floor | None]:
            return dict.fromkeys(partitions, Floor(0, 3, marked=3, tracked=True))

    outputs = Replayed()
    asyncio.run(
        pipeline.publish(outcomes, Written({}, [], 0), outputs, Publishing(), PipelineStats())
    )
    assert outputs.masked == []
    (share,) = outputs.shares
    assert (share.next_offset, published_through(share.metadata)) == (2, 3)
    assert carried_mark(3, 3) == "" and carried_mark(None, 0) == ""


def test_a_commit_never_passes_a_record_left_out_of_the_batch() -> None:
    """Offsets 5, 6 and 8 (7 fetched in an earlier generation, left out):
    5 and 6 are published and committed (7), 8 waits to be read again."""
    records = [(at(raw(f"m{n}"), 0, n), 0) for n in (5, 6, 8)]
    outcomes = core.outcomes(records, MASKER)
    outputs = FakeOutputs(floor=5, tracked=True)
    asyncio.run(
        pipeline.publish(outcomes, Written({}, [], 3), outputs, Publishing(), PipelineStats())
    )
    assert [json.loads(r.value)["message_id"] for r in outputs.masked] == ["m5", "m6"]
    assert [(s.partition, s.next_offset) for s in outputs.shares] == [(0, 7)]
    assert contiguous_end(5, [8, 6, 5, 3]) == 7 and contiguous_end(5, []) == 5


class _ProducerKnowingNoBroker:
    """A transactional producer whose start finds no broker to ask (aiokafka
    asserts there is one), as while Kafka restarts; it records its stop."""

    stopped = False

    async def start(self) -> None:
        raise AssertionError("Did we not perform bootstrap?")

    async def stop(self) -> None:
        self.stopped = True


class _Clients:
    def __init__(self) -> None:
        self.made = _ProducerKnowingNoBroker()

    def producer(self, **_settings: object) -> _ProducerKnowingNoBroker:
        return self.made


def test_taking_a_partition_over_with_no_broker_known_is_an_availability_error() -> None:
    """It is retried with the batch (a Kafka error), not an agent crash."""
    from aiokafka.errors import KafkaConnectionError

    from stream.worker.transactions import TransactionalOutputs

    async def nothing(_partitions: set[int]) -> None:
        return None

    clients = _Clients()
    outputs = TransactionalOutputs(
        clients,  # type: ignore[arg-type]
        "group",
        "raw",
        "masked",
        "rejected",
        lambda: {0},
        nothing,
        0.25,
    )
    with pytest.raises(KafkaConnectionError):
        asyncio.run(outputs.floors({0}))
    assert clients.made.stopped


def test_a_raw_partitions_outputs_share_one_partition_of_each_output_topic() -> None:
    # As many output partitions: the same number, so a device's logins keep
    # their order and a transaction touches one partition a topic.
    assert [output_partition(p, list(range(8))) for p in range(8)] == list(range(8))
    # Fewer or more: the raw partition's number modulo the count, never a
    # partition the topic lacks.
    assert [output_partition(p, [0, 1, 2]) for p in range(8)] == [0, 1, 2, 0, 1, 2, 0, 1]
    assert {output_partition(p, list(range(12))) for p in range(8)} == set(range(8))
