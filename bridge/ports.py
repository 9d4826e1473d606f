"""The forwarder's ports: what it needs from SQS and from Kafka, and nothing more.

The adapters are :class:`bridge.sqs.SqsQueue` and :class:`bridge.producer.KafkaSink`;
the unit tests drive the forwarder through in-memory fakes of the same shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from bridge.producer import RawRecord
from bridge.sqs import EntryFailure, SqsMessage


class QueuePort(Protocol):
    """What the forwarder needs from SQS (see :class:`bridge.sqs.SqsQueue`)."""

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
