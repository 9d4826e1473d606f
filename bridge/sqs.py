"""SQS access for the bridge and for ``maskstream send``.

boto3 blocks, so every call runs in a worker thread and the event loop only
awaits it. The threads are daemon threads: a long poll (up to 20 s) that is
still waiting when the bridge shuts down must not hold the process open. Any
message such an abandoned poll receives stays invisible for the visibility
timeout and then returns to the queue by itself.

Message bodies are carried as bytes and never logged.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, TypeVar

from stream.common.settings import Settings

T = TypeVar("T")

# SQS API limits.
MAX_BATCH_ENTRIES = 10
MAX_WAIT_SECONDS = 20
MAX_VISIBILITY_TIMEOUT = 43_200
# Largest body (and largest batch payload) SQS accepts, in UTF-8 bytes. AWS
# raised it to 1 MiB in 2025; ElasticMQ and many deployments still have 256 KiB.
MAX_MESSAGE_BYTES = 262_144

RECEIVE_ATTRIBUTES = ("SentTimestamp", "ApproximateReceiveCount")
# Entry errors that mean "this receipt handle no longer refers to a message we hold".
EXPIRED_RECEIPT_CODES = frozenset(
    {"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"}
)


@dataclass(frozen=True, slots=True)
class SqsMessage:
    """The parts of a received message the bridge forwards; the body stays opaque."""

    message_id: str
    receipt_handle: str
    body: bytes
    sent_timestamp_ms: int | None
    receive_count: int


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


def parse_message(raw: Mapping[str, Any]) -> SqsMessage:
    """Turn one ReceiveMessage entry into an :class:`SqsMessage` (body as UTF-8 bytes)."""
    attributes = raw.get("Attributes") or {}
    sent = attributes.get("SentTimestamp")
    return SqsMessage(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=raw.get("Body", "").encode("utf-8"),
        sent_timestamp_ms=int(sent) if sent is not None else None,
        receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
    )


def batch_failures(response: Mapping[str, Any]) -> list[EntryFailure]:
    """The ``Failed`` entries of a batch response; entry ids are request positions."""
    return [
        EntryFailure(
            index=int(entry["Id"]),
            code=entry.get("Code", "Unknown"),
            message=entry.get("Message", ""),
            sender_fault=bool(entry.get("SenderFault", False)),
        )
        for entry in response.get("Failed", [])
    ]


def make_client(
    settings: Settings, *, max_pool_connections: int = 10, read_timeout: float = 60.0
) -> Any:
    """An SQS client sized for *max_pool_connections* concurrent calls.

    botocore retries only twice: outages are handled by the caller's own
    capped backoff, which can log them and keep going forever. The read
    timeout must exceed the long-poll wait.

    Two settings save CPU on every call, and the bridge is bound by CPU (the
    GIL) rather than by SQS: a fixed User-Agent, which botocore would
    otherwise rebuild from a dozen components per request (about a tenth of
    a call's cost), and no client-side parameter validation, since every
    request is built by this package and SQS validates it anyway.
    """
    import boto3
    import botocore
    from botocore.config import Config

    config = Config(
        max_pool_connections=max_pool_connections,
        connect_timeout=5,
        read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": 2},
        user_agent=f"maskstream Boto3/{boto3.__version__} Botocore/{botocore.__version__}",
        parameter_validation=False,
    )
    session = boto3.session.Session()
    return session.client(
        "sqs",
        region_name=settings.aws_region or None,
        endpoint_url=settings.sqs_endpoint_url or None,
        config=config,
    )


def send_batch(client: Any, queue_url: str, bodies: Sequence[str]) -> list[EntryFailure]:
    """SendMessageBatch of up to ten bodies, returning the entries that failed."""
    entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
    return batch_failures(client.send_message_batch(QueueUrl=queue_url, Entries=entries))


class DaemonThreadPool(Executor):
    """A fixed pool of daemon worker threads.

    ``ThreadPoolExecutor`` joins its threads at interpreter exit, so a pending
    20-second long poll would delay every shutdown; daemon threads do not.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


class SqsQueue:
    """Asynchronous access to one queue; each call runs in a worker thread.

    Receives get a pool of their own so that long polls can never starve the
    deletes and visibility changes that keep the pipeline moving.
    """

    def __init__(self, client: Any, queue_url: str, *, pollers: int, controllers: int) -> None:
        self._client = client
        self._url = queue_url
        self._receive_pool = DaemonThreadPool(pollers, "sqs-receive")
        self._control_pool = DaemonThreadPool(controllers, "sqs-control")

    @classmethod
    def from_settings(cls, settings: Settings, *, pollers: int, controllers: int) -> SqsQueue:
        client = make_client(
            settings,
            max_pool_connections=pollers + controllers,
            read_timeout=settings.bridge_wait_seconds + 30,
        )
        return cls(client, settings.sqs_queue_url, pollers=pollers, controllers=controllers)

    async def _run(self, pool: Executor, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, call, *args)

    # Each call runs whole in a worker thread, building the request and parsing
    # the answer there too, so the event loop only hands work out and back.

    def _receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[SqsMessage]:
        response = self._client.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            MessageSystemAttributeNames=list(RECEIVE_ATTRIBUTES),
        )
        return [parse_message(raw) for raw in response.get("Messages", [])]

    def _delete(self, receipt_handles: Sequence[str]) -> list[EntryFailure]:
        entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(receipt_handles)]
        return batch_failures(
            self._client.delete_message_batch(QueueUrl=self._url, Entries=entries)
        )

    def _change_visibility(
        self, receipt_handles: Sequence[str], timeout: int
    ) -> list[EntryFailure]:
        entries = [
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": timeout}
            for i, h in enumerate(receipt_handles)
        ]
        return batch_failures(
            self._client.change_message_visibility_batch(QueueUrl=self._url, Entries=entries)
        )

    async def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[SqsMessage]:
        return await self._run(
            self._receive_pool, self._receive, max_messages, wait_seconds, visibility_timeout
        )

    async def delete(self, receipt_handles: Sequence[str]) -> list[EntryFailure]:
        return await self._run(self._control_pool, self._delete, receipt_handles)

    async def change_visibility(
        self, receipt_handles: Sequence[str], timeout: int
    ) -> list[EntryFailure]:
        return await self._run(
            self._control_pool, self._change_visibility, receipt_handles, timeout
        )

    def close(self) -> None:
        """Stop the worker threads without waiting for a pending long poll."""
        self._receive_pool.shutdown(wait=False)
        self._control_pool.shutdown(wait=False)
