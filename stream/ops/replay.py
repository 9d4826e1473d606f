"""Replay the raw topic: rewind the workers' group, or rebuild into fresh tables.

Replaying is safe because every row is keyed by its SQS message id: the
re-processed messages hit ``ON CONFLICT DO NOTHING``, and ``seen_devices``
gains only what a transaction inserted, so nothing. Rewinding a group's offsets while its
members run would be overwritten by their next commit, so it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from stream.common.kafka_security import KafkaClients
from stream.common.published_marks import carried_mark
from stream.common.settings import Settings


class ReplayRefused(Exception):
    """The replay cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class Rewind:
    """One partition's move: where the group was, where it will start."""

    partition: int
    committed: int | None
    target: int
    end: int

    @property
    def to_reprocess(self) -> int:
        return self.end - self.target


def parse_start(text: str) -> int | None:
    """``earliest`` -> None; an ISO-8601 time -> epoch milliseconds (UTC if naive)."""
    if text == "earliest":
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ReplayRefused(
            f"--from must be 'earliest' or an ISO-8601 time such as 2024-05-01T12:00:00Z, "
            f"got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.now().astimezone().tzinfo).astimezone()
    return int(moment.timestamp() * 1000)


async def active_members(kafka: KafkaClients, group: str) -> int:
    """How many consumers are in *group* right now (0 when it is empty or unknown)."""
    async with kafka.admin_session(request_timeout_ms=10_000) as admin:
        described = await admin.describe_consumer_groups([group])
    # One response per coordinator, each listing groups as
    # (error, group id, state, protocol type, protocol, members, ...).
    for response in described:
        for entry in response.groups:
            if entry[1] == group:
                return len(entry[5])
    return 0


async def rewind_group(
    kafka: KafkaClients,
    group: str,
    topic: str,
    start_ms: int | None,
    dry_run: bool = False,
    republish: bool = False,
) -> list[Rewind]:
    """Commit, for every partition of *topic*, the first offset at or after
    *start_ms*, marked with how far the outputs are published (the offset
    committed before) unless *republish* (stream.common.published_marks)."""
    consumer = kafka.consumer(group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(kafka, topic)
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        if start_ms is None:
            targets = await consumer.beginning_offsets(partitions)
        else:
            found = await consumer.offsets_for_times({tp: start_ms for tp in partitions})
            targets = {tp: (hit.offset if hit else end[tp]) for tp, hit in found.items()}
        moves = []
        for tp in partitions:
            committed = await consumer.committed(tp)
            moves.append(Rewind(tp.partition, committed, targets[tp], end[tp]))
        if not dry_run:
            await consumer.commit(
                {
                    TopicPartition(topic, move.partition): OffsetAndMetadata(
                        move.target, "" if republish else carried_mark(move.committed, move.target)
                    )
                    for move in moves
                }
            )
        return moves
    finally:
        await consumer.stop()


async def _partitions(kafka: KafkaClients, topic: str) -> list[TopicPartition]:
    async with kafka.admin_session(request_timeout_ms=10_000) as admin:
        (described,) = await admin.describe_topics([topic])
    if described["error_code"] or not described["partitions"]:
        raise ReplayRefused(f"topic {topic!r} does not exist; nothing to replay")
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def group_caught_up(
    kafka: KafkaClients, group: str, targets: dict[TopicPartition, int]
) -> bool:
    """True once *group* has committed at least *targets* on every partition."""
    async with kafka.admin_session(request_timeout_ms=10_000) as admin:
        committed = await admin.list_consumer_group_offsets(group)
    if not targets:
        return False  # nothing known yet is never "caught up"
    # A partition that never held a record has no commit, and needs none.
    return all(
        target == 0 or (tp in committed and committed[tp].offset >= target)
        for tp, target in targets.items()
    )


async def end_offsets(kafka: KafkaClients, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = kafka.consumer()
    await consumer.start()
    try:
        partitions = [tp for topic in topics for tp in await _partitions(kafka, topic)]
        offsets = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    missing = set(partitions) - set(offsets)
    if missing:
        # Comparing against a partial map would declare a rebuild finished early.
        raise KafkaError(f"no end offset for {sorted(missing)}")
    return offsets


def rebuild_environment(settings: Settings, table: str) -> dict[str, str]:
    """The variables of a worker that rebuilds into *table* without touching the
    live pipeline: its own consumer group, output topics and tables."""
    suffix = f"replay-{table}"
    return {
        "MASKSTREAM_APP_ID": f"{settings.app_id}-{suffix}",
        "MASKSTREAM_TOPIC_MASKED": f"{settings.topics.masked}.{suffix}",
        "MASKSTREAM_TOPIC_REJECTED": f"{settings.topics.rejected}.{suffix}",
        "MASKSTREAM_LOGINS_TABLE": table,
        "MASKSTREAM_REJECTIONS_TABLE": f"{table}_rejected",
        "MASKSTREAM_DEVICES_TABLE": f"{table}_devices",
    }


def describe(moves: list[Rewind]) -> str:
    lines = [f"{'partition':>9} {'committed':>10} {'start at':>10} {'end':>10}"]
    for move in moves:
        committed = "-" if move.committed is None else str(move.committed)
        lines.append(f"{move.partition:>9} {committed:>10} {move.target:>10} {move.end:>10}")
    total = sum(m.to_reprocess for m in moves)
    lines.append(f"{total} records will be processed again")
    return "\n".join(lines)
