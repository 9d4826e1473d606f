"""Send lines as SQS message bodies, byte for byte, in batches of ten.

Each line, without its ``\\n`` terminator, becomes one message body exactly as
written: nothing parses it, so malformed events reach the queue as they would
in production. Lines go out in SendMessageBatch calls of up to ten entries
(and at most the queue's ``MaximumMessageSize`` in all: 1 MiB on AWS since
2025, 256 KiB on many servers), several calls at once on the project's own
SQS client. A line SQS refuses is reported by number; the others are still sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from bridge.ports import MAX_BATCH_ENTRIES
from bridge.sqs.client import SqsClient
from bridge.sqs.errors import SqsRequestError
from stream.common.settings import Settings

log = logging.getLogger(__name__)

# The limit when the queue does not say (SQS's default before 2025, and ElasticMQ's).
DEFAULT_MAX_MESSAGE_BYTES = 262_144
# The most any SQS queue accepts.
LARGEST_MESSAGE_BYTES = 1_048_576


@dataclass(frozen=True, slots=True)
class Line:
    """One line to send: its 1-based number, the body, and the body's size in bytes."""

    number: int
    body: str
    size: int


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that was not sent, and why."""

    number: int
    reason: str


@dataclass
class SendReport:
    sent: int = 0
    errors: list[LineError] = field(default_factory=list)


def read_lines(
    stream: Iterable[bytes], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> Iterator[Line | LineError]:
    """Split a byte stream into bodies; lines SQS cannot carry become :class:`LineError`."""
    for number, raw in enumerate(stream, start=1):
        data = raw.removesuffix(b"\n")
        if not data:
            yield LineError(number, "empty line: SQS does not accept an empty body")
            continue
        if len(data) > max_bytes:
            yield LineError(number, f"{len(data)} bytes, over the queue's limit of {max_bytes}")
            continue
        try:
            body = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield LineError(number, f"not UTF-8 ({exc.reason} at byte {exc.start})")
            continue
        yield Line(number, body, len(data))


def batches(
    lines: Iterable[Line],
    max_entries: int = MAX_BATCH_ENTRIES,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Iterator[list[Line]]:
    """Group lines into SendMessageBatch calls: at most *max_entries* and *max_bytes* each."""
    batch: list[Line] = []
    size = 0
    for line in lines:
        if batch and (len(batch) == max_entries or size + line.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += line.size
    if batch:
        yield batch


async def message_size_limit(client: SqsClient, queue_url: str) -> int:
    """The queue's ``MaximumMessageSize``.

    A queue that does not report one is an emulator's (AWS always does):
    SQS's limit before 2025 then. One whose attributes cannot be read (no
    ``sqs:GetQueueAttributes``) gets the largest SQS allows, and SQS judges.
    """
    try:
        attributes = await client.get_queue_attributes(queue_url, ["MaximumMessageSize"])
    except SqsRequestError as exc:
        log.info("queue size limit unknown (%s); SQS will judge each body", exc)
        return LARGEST_MESSAGE_BYTES
    try:
        return int(attributes["MaximumMessageSize"])
    except (KeyError, ValueError):
        return DEFAULT_MAX_MESSAGE_BYTES


async def send_lines(client: SqsClient, queue_url: str, batch: list[Line]) -> list[LineError]:
    """Send one batch; return the lines SQS refused.

    If SQS rejects the whole request because of one entry's content, each line
    is sent alone so that only the offending ones are reported.
    """
    entries = [{"Id": str(i), "MessageBody": line.body} for i, line in enumerate(batch)]
    try:
        answer = await client.send_message_batch(queue_url, entries)
    except SqsRequestError as exc:
        if len(batch) > 1:
            alone = await asyncio.gather(*(send_lines(client, queue_url, [ln]) for ln in batch))
            return [error for errors in alone for error in errors]
        return [LineError(batch[0].number, f"{exc.code}: {exc}")]
    return [
        LineError(batch[int(f["Id"])].number, f"{f.get('Code')}: {f.get('Message')}")
        for f in answer.get("Failed") or []
    ]


async def send_stream(
    client: SqsClient,
    queue_url: str,
    stream: Iterable[bytes],
    concurrency: int,
    max_bytes: int | None = None,
) -> SendReport:
    """Send every line of *stream*, at most *concurrency* batches at a time.

    *max_bytes* defaults to the queue's own limit.
    """
    if max_bytes is None:
        max_bytes = await message_size_limit(client, queue_url)
    report = SendReport()
    slots = asyncio.Semaphore(concurrency)

    def accepted() -> Iterator[Line]:
        for item in read_lines(stream, max_bytes):
            if isinstance(item, LineError):
                report.errors.append(item)
            else:
                yield item

    async def send(batch: list[Line]) -> None:
        try:
            errors = await send_lines(client, queue_url, batch)
        finally:
            slots.release()
        report.sent += len(batch) - len(errors)
        report.errors.extend(errors)

    tasks = []
    for batch in batches(accepted(), max_bytes=max_bytes):
        await slots.acquire()
        tasks.append(asyncio.ensure_future(send(batch)))
    await asyncio.gather(*tasks)
    report.errors.sort(key=lambda error: error.number)
    return report


def send_to_queue(settings: Settings, stream: Iterable[bytes], concurrency: int) -> SendReport:
    """:func:`send_stream` to the settings' queue, for synchronous callers."""

    async def run() -> SendReport:
        async with SqsClient.from_settings(settings, connections=concurrency) as client:
            return await send_stream(client, settings.sqs_queue_url, stream, concurrency)

    return asyncio.run(run())
