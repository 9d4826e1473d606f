"""Blocking helpers over the project's SQS client, for tests on either ElasticMQ.

The current ElasticMQ speaks both SQS protocols and the exercise-style one
(1.3.9) only the query protocol, so boto3 (JSON only) cannot set up or inspect
the latter's queues; these helpers can, on both.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from bridge.sqs.client import SqsClient
from bridge.sqs.endpoint import CredentialSource, Endpoint

T = TypeVar("T")


@dataclass(frozen=True)
class SqsServer:
    """One of the stack's SQS servers: its endpoint and the protocol to speak to it."""

    endpoint: str
    protocol: str

    def _run(self, call: Callable[[SqsClient], Awaitable[T]]) -> T:
        async def go() -> T:
            client = SqsClient(
                Endpoint(self.endpoint, "us-east-1"),
                CredentialSource.static("local", "local"),
                protocol=self.protocol,
            )
            async with client:
                return await call(client)

        return asyncio.run(go())

    def create_queue(
        self, prefix: str, attributes: dict[str, str] | None = None, suffix: str = ""
    ) -> str:
        """A queue named *prefix*, a random part and *suffix* (``.fifo`` for a FIFO queue)."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}{suffix}"
        return self._run(lambda c: c.create_queue(name, attributes))

    def delete_queue(self, url: str) -> None:
        self._run(lambda c: c.delete_queue(url))

    def attributes(self, url: str, names: Sequence[str] = ("All",)) -> dict[str, str]:
        return self._run(lambda c: c.get_queue_attributes(url, names))

    def depth(self, url: str) -> int:
        """Messages still in the queue, visible or held by a consumer."""
        names = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
        return sum(int(v) for v in self.attributes(url, names).values())

    def send(self, url: str, bodies: Sequence[str], **entry: Any) -> list[str]:
        """Send *bodies* ten at a time (extra entry fields added to each); return message ids."""

        async def go(client: SqsClient) -> list[str]:
            ids: list[str] = []
            for start in range(0, len(bodies), 10):
                entries = [
                    {"Id": str(i), "MessageBody": body, **entry}
                    for i, body in enumerate(bodies[start : start + 10])
                ]
                answer = await client.send_message_batch(url, entries)
                assert not answer.get("Failed"), answer["Failed"]
                ordered = sorted(answer["Successful"], key=lambda ok: int(ok["Id"]))
                ids += [ok["MessageId"] for ok in ordered]
            return ids

        return self._run(go)

    def drain(self, url: str) -> list[dict[str, Any]]:
        """Receive and delete everything in the queue; return the messages."""

        async def go(client: SqsClient) -> list[dict[str, Any]]:
            drained: list[dict[str, Any]] = []
            while messages := await client.receive_message(url, 10, 1):
                drained += messages
                await client.delete_message_batch(url, [m["ReceiptHandle"] for m in messages])
            return drained

        return self._run(go)

    @contextmanager
    def queue(self, prefix: str, attributes: dict[str, str] | None = None) -> Iterator[str]:
        url = self.create_queue(prefix, attributes)
        try:
            yield url
        finally:
            self.delete_queue(url)


def stack_servers(stack_env: dict[str, str]) -> dict[str, SqsServer]:
    """The stack's SQS servers by the protocol they speak (``json`` answers both)."""
    return {
        "json": SqsServer(stack_env["AWS_ENDPOINT_URL_SQS"], "json"),
        "query": SqsServer(stack_env["STACK_SQS_QUERY_ENDPOINT"], "query"),
    }
