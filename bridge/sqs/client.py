"""An asyncio SQS client that speaks both wire protocols.

Why not boto3: its request pipeline costs about 0.2 ms of CPU per message
(most of the pipeline's cost), it blocks (so every call needs a thread), and
since 1.34.90 it speaks only the JSON protocol, which the exercise's own
LocalStack and other query-only servers cannot parse. This client sends the
few calls maskstream makes, signs them with :mod:`bridge.sqs.signing`, sends
them over its own keep-alive HTTP/1.1 connections (:mod:`bridge.sqs.http`),
and leaves credentials, region and endpoint to botocore (:mod:`bridge.sqs.endpoint`).

Protocol: ``json``, ``query`` or ``auto``. ``auto`` sends one harmless call
(GetQueueAttributes of the queue, else ListQueues) in JSON form; an answer in
the JSON protocol's own terms means json. Anything else a query-only server
may answer (an error status, a 404, an XML body even with 200, a missing or
unknown action) sends the same call in query form, and a proper query answer
means query. The choice is logged once and kept for the client's life.

Errors: throttling, 5xx, resets and timeouts are retried a few times here
with capped, jittered backoff, then raised as :class:`SqsUnavailable` for the
caller's own outage handling; a refused request raises
:class:`SqsRequestError` at once. Bodies and receipt handles never appear in
a log line or an exception text.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.sqs import json_protocol, query_protocol
from bridge.sqs.endpoint import CredentialSource, Endpoint, choose_endpoint, resolve
from bridge.sqs.errors import (
    SqsError,
    SqsRequestError,
    SqsUnavailable,
    is_retryable,
    redact,
)
from bridge.sqs.http import HttpPool, HttpProtocolError, Origin
from bridge.sqs.json_protocol import JsonProtocol
from bridge.sqs.query_protocol import QueryProtocol
from bridge.sqs.signing import sign
from bridge.sqs.wire import HttpAnswer, MalformedAnswer, ServerError, WireProtocol
from stream.common.settings import Settings

log = logging.getLogger("bridge.sqs")

PROTOCOLS = ("auto", "json", "query")
USER_AGENT = "maskstream-sqs/1"
# What the probe of ``auto`` names when the client has no queue.
PROBE_PREFIX = "maskstream-protocol-probe"


class SqsClient:
    """Calls to one SQS endpoint; safe to share between tasks of one event loop."""

    def __init__(
        self,
        endpoint: Endpoint,
        credentials: CredentialSource,
        *,
        protocol: str = "auto",
        probe_queue_url: str = "",
        connections: int = 10,
        read_timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        backoff_base: float = 0.1,
        backoff_cap: float = 2.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(
                f"SQS protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}"
            )
        self.endpoint = endpoint
        self._credentials = credentials
        self._wire: WireProtocol | None = _PROTOCOL_OF.get(protocol)
        self._probe_queue_url = probe_queue_url
        self._connections = connections
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._retries = retries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._rand = rand
        self._pools: dict[Origin, HttpPool] = {}
        self._detecting: asyncio.Lock | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        queue_url: str | None = None,
        connections: int = 10,
        read_timeout: float = 60.0,
        retries: int = 2,
    ) -> SqsClient:
        """A client for *queue_url* (default: the settings' queue) as the settings describe it.

        Raises :class:`SqsRequestError` when no credentials can be found.
        """
        url = settings.sqs_queue_url if queue_url is None else queue_url
        resolved, configured = resolve(
            settings.aws_region or None, settings.sqs_endpoint_url or None
        )
        try:
            credentials = CredentialSource.from_chain()
        except LookupError as exc:
            raise SqsRequestError("credentials", "NoCredentials", str(exc)) from None
        return cls(
            choose_endpoint(resolved, configured, url),
            credentials,
            protocol=settings.sqs_protocol,
            probe_queue_url=url,
            connections=connections,
            read_timeout=read_timeout,
            retries=retries,
        )

    @property
    def protocol(self) -> str | None:
        """``json`` or ``query`` once known; None before ``auto`` has decided."""
        return self._wire.name if self._wire is not None else None

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    async def __aenter__(self) -> SqsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the calls maskstream makes -------------------------------------------------

    async def receive_message(
        self,
        queue_url: str,
        max_messages: int,
        wait_seconds: int,
        visibility_timeout: int | None = None,
        system_attributes: Sequence[str] = ("All",),
        message_attributes: Sequence[str] = ("All",),
        attempt_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Up to *max_messages* messages (``BinaryValue`` attributes decoded to bytes).

        *attempt_id* (FIFO queues) makes a retry after a lost answer return the
        same messages instead of leaving their groups locked until they time out.
        """
        params: dict[str, Any] = {
            "QueueUrl": queue_url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": list(system_attributes),
            "MessageAttributeNames": list(message_attributes),
        }
        if visibility_timeout is not None:
            params["VisibilityTimeout"] = visibility_timeout
        if attempt_id is not None:
            params["ReceiveRequestAttemptId"] = attempt_id
        answer = await self.call("ReceiveMessage", params)
        messages = answer.get("Messages") or []
        for message in messages:
            for value in (message.get("MessageAttributes") or {}).values():
                if "BinaryValue" in value:
                    value["BinaryValue"] = base64.b64decode(value["BinaryValue"])
        return messages

    async def delete_message_batch(
        self, queue_url: str, receipt_handles: Sequence[str]
    ) -> dict[str, Any]:
        entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(receipt_handles)]
        return await self.call(
            "DeleteMessageBatch", {"QueueUrl": queue_url, "Entries": entries}, receipt_handles
        )

    async def change_message_visibility_batch(
        self, queue_url: str, receipt_handles: Sequence[str], timeout: int
    ) -> dict[str, Any]:
        entries = [
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": timeout}
            for i, h in enumerate(receipt_handles)
        ]
        return await self.call(
            "ChangeMessageVisibilityBatch",
            {"QueueUrl": queue_url, "Entries": entries},
            receipt_handles,
        )

    async def send_message_batch(
        self, queue_url: str, entries: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """SendMessageBatch of entries in the JSON shape (``Id``, ``MessageBody``, ...)."""
        bodies = [entry["MessageBody"] for entry in entries]
        return await self.call(
            "SendMessageBatch", {"QueueUrl": queue_url, "Entries": list(entries)}, bodies
        )

    async def get_queue_attributes(
        self, queue_url: str, names: Sequence[str] = ("All",)
    ) -> dict[str, str]:
        answer = await self.call(
            "GetQueueAttributes", {"QueueUrl": queue_url, "AttributeNames": list(names)}
        )
        return answer.get("Attributes") or {}

    async def get_queue_url(self, name: str, owner_account: str | None = None) -> str:
        params = {"QueueName": name}
        if owner_account:
            params["QueueOwnerAWSAccountId"] = owner_account
        return str((await self.call("GetQueueUrl", params))["QueueUrl"])

    async def create_queue(self, name: str, attributes: dict[str, str] | None = None) -> str:
        params: dict[str, Any] = {"QueueName": name}
        if attributes:
            params["Attributes"] = attributes
        return str((await self.call("CreateQueue", params))["QueueUrl"])

    async def delete_queue(self, queue_url: str) -> None:
        await self.call("DeleteQueue", {"QueueUrl": queue_url})

    # -- one call, whatever the protocol ----------------------------------------------

    async def call(
        self, action: str, params: dict[str, Any], secrets: Iterable[str] = ()
    ) -> dict[str, Any]:
        """Send *action*, retrying what is worth retrying; the answer in the JSON shapes.

        *secrets* (receipt handles, bodies) are cut out of any error text.
        """
        wire = self._wire or await self._detect()
        attempt = 0
        while True:
            try:
                answer = wire.decode(action, await self._post(wire, action, params))
                for entry in answer.get("Failed") or ():
                    entry["Message"] = redact(str(entry.get("Message") or ""), secrets)
                return answer
            except ServerError as exc:
                detail = redact(exc.message, secrets)
                if not is_retryable(exc.status, exc.code):
                    raise SqsRequestError(action, exc.code, detail, exc.status) from None
                failure: SqsError = SqsUnavailable(action, exc.code, detail, exc.status)
            except MalformedAnswer as exc:
                raise SqsRequestError(action, "MalformedAnswer", str(exc)) from None
            except SqsUnavailable as exc:
                failure = exc
            if attempt >= self._retries:
                raise failure
            attempt += 1
            await asyncio.sleep(self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with full jitter."""
        return min(self._backoff_cap, self._backoff_base * 2**attempt) * self._rand()

    async def _post(self, wire: WireProtocol, action: str, params: dict[str, Any]) -> HttpAnswer:
        """One HTTP exchange; transport failures become :class:`SqsUnavailable`."""
        request = wire.encode(self.endpoint.url, action, params)
        headers = sign(
            "POST",
            request.url,
            request.headers,
            request.body,
            self._credentials.current(),
            self.endpoint.region,
            datetime.now(UTC),
        )
        headers["User-Agent"] = USER_AGENT
        try:
            response = await self._pool(request.url).post(request.url, headers, request.body)
        except (
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            HttpProtocolError,
        ) as exc:
            # The cause is kept: callers look for the socket error behind it.
            raise SqsUnavailable(action, type(exc).__name__, _transport_detail(exc)) from exc
        return HttpAnswer(
            response.status,
            response.headers.get("content-type", ""),
            response.body,
            response.headers.get("x-amzn-query-error", ""),
        )

    def _pool(self, url: str) -> HttpPool:
        origin = Origin.of(url)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = HttpPool(
                origin, self._connections, self._connect_timeout, self._read_timeout
            )
        return pool

    # -- protocol detection -----------------------------------------------------------

    async def _detect(self) -> WireProtocol:
        """Decide the protocol once (concurrent first calls wait for one probe)."""
        if self._detecting is None:
            self._detecting = asyncio.Lock()
        async with self._detecting:
            if self._wire is None:
                self._wire = await self._probe()
                log.info(
                    "SQS at %s speaks the %s protocol; using it", self.endpoint.url, self._wire.name
                )
        return self._wire

    async def _probe(self) -> WireProtocol:
        if self._probe_queue_url:
            action = "GetQueueAttributes"
            params: dict[str, Any] = {
                "QueueUrl": self._probe_queue_url,
                "AttributeNames": ["QueueArn"],
            }
        else:
            action, params = "ListQueues", {"QueueNamePrefix": PROBE_PREFIX}
        seen: list[str] = []
        unavailable = False
        cause: SqsUnavailable | None = None
        for wire, understood in _DETECTION_ORDER:
            try:
                answer = await self._post(wire, action, params)
            except SqsUnavailable as exc:
                seen.append(f"{wire.name}: {exc.code}")
                unavailable, cause = True, exc
                continue
            if understood(answer, action):
                return wire
            unavailable = unavailable or answer.status >= 500 or answer.status == 429
            seen.append(f"{wire.name}: HTTP {answer.status} {_shape(answer)}")
        summary = "; ".join(seen)
        if unavailable:
            raise SqsUnavailable(
                action, "ProtocolUnknown", f"no usable answer yet ({summary})"
            ) from cause
        raise SqsRequestError(
            action,
            "ProtocolUnknown",
            f"{self.endpoint.url} answers neither SQS protocol ({summary})",
        )


_PROTOCOL_OF: dict[str, WireProtocol] = {"json": JsonProtocol(), "query": QueryProtocol()}
_DETECTION_ORDER: tuple[tuple[WireProtocol, Callable[[HttpAnswer, str], bool]], ...] = (
    (_PROTOCOL_OF["json"], lambda answer, action: json_protocol.understood(answer)),
    (_PROTOCOL_OF["query"], query_protocol.understood),
)


def _shape(answer: HttpAnswer) -> str:
    """What kind of body an answer had, for the log: never the body itself."""
    start = answer.body.lstrip()[:1]
    kind = {b"{": "JSON", b"<": "XML", b"": "empty"}.get(start, "text")
    return f"({kind} body, {len(answer.body)} bytes)"


def _transport_detail(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "..."
