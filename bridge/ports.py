"""The forwarder's ports: what it needs from SQS and from Kafka, and the types they carry.

The adapters are :class:`bridge.sqs.queue.SqsQueue` and
:class:`bridge.producer.KafkaSink`; they import this module, never the
reverse. The unit tests drive the forwarder through in-memory fakes of the
same shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# SQS API limits the forwarder plans around.
MAX_BATCH_ENTRIES = 10
MAX_WAIT_SECONDS = 20
MAX_VISIBILITY_TIMEOUT = 43_200
# Entry errors that mean "this receipt handle no longer refers to a message we hold".
EXPIRED_RECEIPT_CODES = frozenset(
    {"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"}
)


@dataclass(frozen=True, slots=True)
class MessageAttribute:
    """One SQS message attribute: String and Number values as UTF-8, Binary as bytes."""

    name: str
    data_type: str
    value: bytes


@dataclass(frozen=True, slots=True)
class SqsMessage:
    """The parts of a received message the bridge forwards; the body stays opaque."""

    message_id: str
    receipt_handle: str
    body: bytes
    sent_timestamp_ms: int | None
    receive_count: int
    attributes: tuple[MessageAttribute, ...] = ()
    # FIFO queues only: the message group and deduplication id.
    group_id: str | None = None
    deduplication_id: str | None = None


@dataclass(frozen=True, slots=True)
class EntryFailure:
    """One failed entry of a batch call; ``index`` is its position in the request."""

    index: int
    code: str
    message: str
    sender_fault: bool

    @property
    def receipt_expired(self) -> bool:
        """The message was already redelivered or deleted: retrying cannot help."""
        return self.code in EXPIRED_RECEIPT_CODES


@dataclass(frozen=True, slots=True)
class RawRecord:
    """What the bridge writes to the raw topic for one SQS message."""

    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None


class QueueRefused(Exception):
    """The queue refused a request in a way no retry can mend (access denied, no such
    queue, a malformed answer): the bridge stops with this one line."""


class QueuePort(Protocol):
    """What the forwarder needs from SQS (see :class:`bridge.sqs.queue.SqsQueue`).

    Calls raise :class:`QueueRefused` for what cannot be mended, and any other
    exception for an outage worth retrying.
    """

    async def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[SqsMessage]: ...

    async def delete(self, receipt_handles: Sequence[str]) -> list[EntryFailure]: ...

    async def change_visibility(
        self, receipt_handles: Sequence[str], timeout: int
    ) -> list[EntryFailure]: ...


class SinkPort(Protocol):
    """What the forwarder needs from Kafka (see :class:`bridge.producer.KafkaSink`).

    ``send`` takes a record and a token; later the listener given to
    ``listen`` gets the tokens of each batch with its outcome (None: acknowledged).
    """

    def listen(self, listener: Callable[[list[Any], BaseException | None], None]) -> None: ...

    async def start(self) -> None: ...

    async def send(self, record: RawRecord, token: Any) -> None: ...

    async def stop(self, timeout: float) -> bool: ...
