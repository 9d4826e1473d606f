"""The agent's steps, each taking its collaborators as arguments.

Per batch of raw records (:func:`process_batch`):

1. each record becomes one outcome, a masked login or a rejection (pure:
   stream.core.batch);
2. :func:`write`: the logins, the rejections and the devices' state go to
   PostgreSQL in one transaction, which returns each device's absolute
   state; logins whose row the database refused become rejections;
3. :func:`store_device_states`: those states go to the Faust table
   ``seen_devices`` and its changelog, at the raw partition of the device;
4. :func:`publish`: masked logins to ``logins.masked``, rejections to
   ``logins.rejected``, for downstream consumers (each can be turned off),
   in one Kafka transaction a raw partition that also commits its offset
   (stream.worker.transactions): each SQS message once;
5. :func:`count`: the counters of the periodic log line and the metrics.

Steps 3 and 4 are retried together until Kafka holds everything; only then
does the batch return and Faust acknowledge the raw offsets, so a crash
anywhere before replays the batch instead of losing it.

The collaborators are described by the protocols below, so that the steps
are tested with in-memory fakes (tests/test_worker_steps.py); the real ones
(stream.postgres.writer, stream.worker.device_table, stream.worker.outputs)
are wired in stream.worker.agents.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from stream.common.published_marks import carried_mark
from stream.common.raw_records import HEADER_ATTRIBUTE_PREFIX, HEADER_ATTRIBUTE_TYPE_PREFIX
from stream.core import batch as core
from stream.core.batch import Outcome
from stream.core.masking import Masker
from stream.core.records import MaskedLogin, RawLogin, Rejection, SeenDevice
from stream.postgres.writer import Written
from stream.worker.producing import Deliveries, KeyedRecord, until_delivered
from stream.worker.stats import PipelineStats
from stream.worker.transactions import Floor, PartitionShare, contiguous_end

log = logging.getLogger(__name__)

# An output record larger than this is left off its topic (logged, counted):
# Kafka's default message.max.bytes is 1 MiB, and retrying a record the
# broker can never take would stall the partition. Its row is in PostgreSQL.
MAX_OUTPUT_RECORD_BYTES = 900_000


class Writer(Protocol):
    """PostgreSQL, as the agent sees it (stream.postgres.writer.BatchWriter)."""

    async def write(self, batch: Sequence[Outcome]) -> Written: ...

    async def store_rejections(self, rejections: Sequence[tuple[Rejection, str]]) -> None: ...


class DeviceStates(Protocol):
    """The Faust table ``seen_devices`` (stream.worker.device_table.DeviceStore)."""

    async def store(
        self, entries: Mapping[str, SeenDevice], partitions: Mapping[str, int]
    ) -> Deliveries: ...


class Outputs(Protocol):
    """The output topics: in Kafka transactions with the raw offsets
    (stream.worker.transactions.TransactionalOutputs), or plain
    (stream.worker.outputs.KafkaOutputs)."""

    async def floors(self, partitions: set[int]) -> dict[int, Floor | None]: ...

    async def publish(self, shares: Sequence[PartitionShare]) -> Deliveries: ...


class BatchMetrics(Protocol):
    """What the agent reports per batch (stream.worker.metrics.WorkerMetrics)."""

    def observe_batch(self, table: str, rows: int, seconds: float) -> None: ...

    def observe_committed(self, logins: Sequence[MaskedLogin]) -> None: ...


@dataclass(frozen=True)
class Publishing:
    """Which output topics get records (MASKSTREAM_PUBLISH_MASKED / _REJECTED), and
    which SQS message attributes a masked login carries on (MASKSTREAM_COPY_ATTRIBUTES)."""

    masked: bool = True
    rejected: bool = True
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Collaborators:
    """Everything the steps of one worker use, built once when its agent starts."""

    masker: Masker
    writer: Writer
    devices: DeviceStates
    outputs: Outputs
    publishing: Publishing
    stats: PipelineStats
    metrics: BatchMetrics
    logins_table: str
    # Which envelopes around a login are unwrapped (MASKSTREAM_ENVELOPE).
    envelope: str = "auto"


async def process_batch(records: Iterable[tuple[RawLogin, int]], parts: Collaborators) -> None:
    """Steps 1 to 5 for one batch of (raw login, raw partition)."""
    outcomes = core.outcomes(records, parts.masker, parts.envelope)
    rows, started = len(core.logins(outcomes)), time.perf_counter()
    written = await write(outcomes, parts.writer, parts.masker)
    parts.metrics.observe_batch(parts.logins_table, rows, time.perf_counter() - started)
    parts.metrics.observe_committed(core.logins(outcomes))
    await until_delivered(partial(deliver, outcomes, written, parts), "a batch's outputs")
    count(outcomes, written, parts.stats)


async def write(outcomes: Sequence[Outcome], writer: Writer, masker: Masker) -> Written:
    """Commit the batch; the logins whose row the database refused become
    rejections (their outcomes too), stored before this returns."""
    written = await writer.write(outcomes)
    if written.refused:
        refused = [
            (core.refuse(outcome, reason, masker), outcome.raw.position)
            for outcome, reason in written.refused
        ]
        await writer.store_rejections(refused)
        if written.writers is not None:  # they wrote their rejections themselves
            written.writers.update((o.raw.message_id, o.raw.position) for o, _ in written.refused)
    return written


async def deliver(
    outcomes: Sequence[Outcome], written: Written, parts: Collaborators
) -> Deliveries:
    """Steps 3 and 4: everything the batch sends to Kafka."""
    deliveries = await store_device_states(outcomes, written, parts.devices)
    return deliveries + await publish(
        outcomes, written, parts.outputs, parts.publishing, parts.stats
    )


async def store_device_states(
    outcomes: Sequence[Outcome], written: Written, devices: DeviceStates
) -> Deliveries:
    """The devices' states as the transaction left them, each at its raw partition."""
    entries = {device: state.entry for device, state in written.devices.items()}
    return await devices.store(entries, core.device_partitions(outcomes))


async def publish(
    outcomes: Sequence[Outcome],
    written: Written,
    outputs: Outputs,
    publishing: Publishing,
    stats: PipelineStats,
) -> Deliveries:
    """Masked logins (keyed by masked device id) and rejections (keyed by
    message id) to their topics, a share per raw partition, each with the
    offset after its last record. Left out: records another copy of the
    same SQS message wrote (``Written.wrote``), records below a partition's
    floor (published by its previous owner, or before a replay), partitions
    this worker may no longer publish, and records too large for Kafka."""
    floors = await outputs.floors({o.partition for o in outcomes})
    ends = {
        partition: contiguous_end(
            floor.commit, (o.raw.offset for o in outcomes if o.partition == partition)
        )
        for partition, floor in floors.items()
        if floor is not None and floor.tracked
    }
    shares: dict[int, PartitionShare] = {}
    for o in outcomes:
        floor = floors[o.partition]
        if floor is None:
            continue
        share = shares.get(o.partition)
        if share is None:
            end = ends.get(o.partition, floor.commit)
            share = shares[o.partition] = PartitionShare(
                o.partition, end, metadata=carried_mark(floor.marked, end)
            )
        if floor.tracked and not floor.publish <= o.raw.offset < share.next_offset:
            continue  # published already, or past a record left out (read again later)
        if not written.wrote(o):
            continue
        if o.login is not None:
            if publishing.masked:
                share.masked.append(
                    KeyedRecord(
                        o.login.masked_device_id.encode(),
                        o.login.dumps(),
                        copied_attributes(o.raw.headers, publishing.attributes),
                    )
                )
        elif o.rejection is not None and publishing.rejected:
            share.rejected.append(KeyedRecord(o.rejection.message_id.encode(), o.rejection.dumps()))
    for share in shares.values():
        share.masked = fitting(share.masked, stats)
        share.rejected = fitting(share.rejected, stats)
    return await outputs.publish(list(shares.values()))


def copied_attributes(
    headers: Mapping[str, bytes], names: Sequence[str]
) -> tuple[tuple[str, bytes], ...]:
    """The raw record's headers of the SQS message attributes *names* (value and, if not
    String, type), to carry on a masked login. None by default: attributes may hold
    anything, and the outputs must hold no PII unless an operator says otherwise."""
    if not names:
        return ()
    copied = []
    for name in names:
        for prefix in (HEADER_ATTRIBUTE_PREFIX, HEADER_ATTRIBUTE_TYPE_PREFIX):
            value = headers.get(prefix + name)
            if value is not None:
                copied.append((prefix + name, value))
    return tuple(copied)


def fitting(records: list[KeyedRecord], stats: PipelineStats) -> list[KeyedRecord]:
    """*records* without those too large for any Kafka topic (counted)."""
    kept = [record for record in records if len(record.value) <= MAX_OUTPUT_RECORD_BYTES]
    if len(kept) < len(records):
        stats.unpublished += len(records) - len(kept)
        log.error(
            "%d output records too large for Kafka left off their topic", len(records) - len(kept)
        )
    return kept


def count(outcomes: Sequence[Outcome], written: Written, stats: PipelineStats) -> None:
    """Add the batch to the counters (counts only: no values, no PII)."""
    logins = core.logins(outcomes)
    stats.masked += len(logins) + len(written.refused)
    stats.extra_fields_dropped += sum(login.dropped_fields for login in logins)
    stats.rows_written += written.new_rows
    stats.rows_already_present += len(logins) - written.new_rows
    for rejection in core.rejections(outcomes):
        stats.rejections[rejection.reason] += 1
