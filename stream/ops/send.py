"""Send lines as SQS message bodies, byte for byte, in batches of ten.

Each line, without its ``\\n`` terminator, becomes one message body exactly as
written: nothing parses it, so malformed events reach the queue as they would
in production. Lines go out in SendMessageBatch calls of up to ten entries
(and at most the SQS payload limit) from a few threads. A line SQS refuses is
reported by number; the others are still sent.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bridge.sqs import MAX_BATCH_ENTRIES, MAX_MESSAGE_BYTES, send_batch

log = logging.getLogger(__name__)


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


def read_lines(stream: Iterable[bytes]) -> Iterator[Line | LineError]:
    """Split a byte stream into bodies; lines SQS cannot carry become :class:`LineError`."""
    for number, raw in enumerate(stream, start=1):
        data = raw.removesuffix(b"\n")
        if not data:
            yield LineError(number, "empty line: SQS does not accept an empty body")
            continue
        if len(data) > MAX_MESSAGE_BYTES:
            yield LineError(number, f"{len(data)} bytes, over the SQS limit of {MAX_MESSAGE_BYTES}")
            continue
        try:
            body = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield LineError(number, f"not UTF-8 ({exc.reason} at byte {exc.start})")
            continue
        yield Line(number, body, len(data))


def batches(
    lines: Iterable[Line], max_entries: int = MAX_BATCH_ENTRIES, max_bytes: int = MAX_MESSAGE_BYTES
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


def send_lines(client: Any, queue_url: str, batch: list[Line]) -> list[LineError]:
    """Send one batch; return the lines SQS refused.

    If SQS rejects the whole request because of one entry's content, each line
    is sent alone so that only the offending ones are reported.
    """
    from botocore.exceptions import ClientError

    try:
        failures = send_batch(client, queue_url, [line.body for line in batch])
    except ClientError as exc:
        if len(batch) > 1:
            return [error for line in batch for error in send_lines(client, queue_url, [line])]
        error = exc.response.get("Error", {})
        return [LineError(batch[0].number, f"{error.get('Code')}: {error.get('Message')}")]
    return [LineError(batch[f.index].number, f"{f.code}: {f.message}") for f in failures]


def send_stream(client: Any, queue_url: str, stream: Iterable[bytes], threads: int) -> SendReport:
    """Send every line of *stream*, keeping at most two batches per thread in flight."""
    report = SendReport()

    def accepted() -> Iterator[Line]:
        for item in read_lines(stream):
            if isinstance(item, LineError):
                report.errors.append(item)
            else:
                yield item

    def settle(done: Iterable[concurrent.futures.Future[tuple[int, list[LineError]]]]) -> None:
        for future in done:
            count, errors = future.result()
            report.sent += count - len(errors)
            report.errors.extend(errors)

    def send(batch: list[Line]) -> tuple[int, list[LineError]]:
        return len(batch), send_lines(client, queue_url, batch)

    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="send") as pool:
        pending: set[concurrent.futures.Future[tuple[int, list[LineError]]]] = set()
        for batch in batches(accepted()):
            pending.add(pool.submit(send, batch))
            if len(pending) >= 2 * threads:
                done, pending = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED
                )
                settle(done)
        settle(concurrent.futures.as_completed(pending))
    report.errors.sort(key=lambda error: error.number)
    return report
