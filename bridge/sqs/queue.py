"""The forwarder's SQS adapter: one queue's receive, delete and visibility calls.

It turns the client's answers into the port's types (:mod:`bridge.ports`);
long polls are coroutines on the client's connection pool, so no thread is
involved and a stop simply awaits them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.ports import EntryFailure, MessageAttribute, SqsMessage
from bridge.sqs.client import SqsClient

# System attributes the bridge forwards (the FIFO ones are absent on standard queues).
SYSTEM_ATTRIBUTES = (
    "SentTimestamp",
    "ApproximateReceiveCount",
    "MessageGroupId",
    "MessageDeduplicationId",
)


def attribute_of(name: str, value: Mapping[str, Any]) -> MessageAttribute:
    """One message attribute: Binary as its bytes, String and Number as UTF-8."""
    data_type = str(value.get("DataType", "String"))
    if "BinaryValue" in value:
        raw = value["BinaryValue"]
        data = raw if isinstance(raw, bytes) else str(raw).encode()
    else:
        data = str(value.get("StringValue", "")).encode("utf-8")
    return MessageAttribute(name, data_type, data)


def parse_message(raw: Mapping[str, Any]) -> SqsMessage:
    """Turn one ReceiveMessage entry into an :class:`SqsMessage` (body as UTF-8 bytes)."""
    attributes = raw.get("Attributes") or {}
    sent = attributes.get("SentTimestamp")
    return SqsMessage(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=raw.get("Body", "").encode("utf-8"),
        sent_timestamp_ms=int(sent) if sent else None,
        receive_count=int(attributes.get("ApproximateReceiveCount") or 1),
        attributes=tuple(
            attribute_of(name, value)
            for name, value in sorted((raw.get("MessageAttributes") or {}).items())
        ),
        group_id=attributes.get("MessageGroupId") or None,
        deduplication_id=attributes.get("MessageDeduplicationId") or None,
    )


def batch_failures(response: Mapping[str, Any]) -> list[EntryFailure]:
    """The ``Failed`` entries of a batch response; entry ids are request positions."""
    return [
        EntryFailure(
            index=int(entry["Id"]),
            code=str(entry.get("Code") or "Unknown"),
            message=str(entry.get("Message") or ""),
            sender_fault=bool(entry.get("SenderFault", False)),
        )
        for entry in response.get("Failed") or []
    ]


class SqsQueue:
    """:class:`bridge.ports.QueuePort` for one queue URL over an :class:`SqsClient`."""

    def __init__(self, client: SqsClient, queue_url: str) -> None:
        self.client = client
        self.url = queue_url
        # A FIFO queue's name ends in .fifo (SQS requires it).
        self.fifo = queue_url.rstrip("/").endswith(".fifo")

    async def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[SqsMessage]:
        messages = await self.client.receive_message(
            self.url,
            max_messages,
            wait_seconds,
            visibility_timeout,
            SYSTEM_ATTRIBUTES,
            attempt_id=uuid.uuid4().hex if self.fifo else None,
        )
        return [parse_message(raw) for raw in messages]

    async def delete(self, receipt_handles: Sequence[str]) -> list[EntryFailure]:
        return batch_failures(await self.client.delete_message_batch(self.url, receipt_handles))

    async def change_visibility(
        self, receipt_handles: Sequence[str], timeout: int
    ) -> list[EntryFailure]:
        return batch_failures(
            await self.client.change_message_visibility_batch(self.url, receipt_handles, timeout)
        )

    async def close(self) -> None:
        await self.client.close()
