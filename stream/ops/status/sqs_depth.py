"""SQS: the queue's depth, and its dead-letter queue's, as the bridge's queue sees them."""

from __future__ import annotations

import asyncio

from bridge.sqs.client import SqsClient
from stream.common.redrive import parse_redrive_policy
from stream.common.settings import Settings
from stream.ops.status.figures import DeadLetters, Problem, QueueDepth
from stream.ops.status.reasons import describe_error, failure_verb

SQS_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "RedrivePolicy",
)


async def _dead_letters(
    client: SqsClient, policy: tuple[str, str | None, int | None]
) -> DeadLetters:
    name, account, max_receive_count = policy
    try:
        url = await client.get_queue_url(name, account)
        attributes = await client.get_queue_attributes(url, ["ApproximateNumberOfMessages"])
    except Exception as exc:  # shown next to the main queue's figures
        return DeadLetters(name, max_receive_count, problem=describe_error(exc))
    return DeadLetters(name, max_receive_count, int(attributes["ApproximateNumberOfMessages"]))


async def queue_depths(settings: Settings, timeout: float) -> tuple[QueueDepth | Problem, ...]:
    """Depth of each configured queue and of its dead-letter queue, asked at once."""
    urls = settings.sqs_queue_urls
    if not urls:
        return (Problem("not configured (set SQS_QUEUE_URL)"),)
    return tuple(await asyncio.gather(*(queue_depth(settings, url, timeout) for url in urls)))


async def queue_depth(settings: Settings, url: str, timeout: float) -> QueueDepth | Problem:
    """Depth of the queue at *url* and of its dead-letter queue."""
    try:
        client = SqsClient.from_settings(
            settings, queue_url=url, connections=2, read_timeout=timeout, retries=0
        )
    except Exception as exc:
        return Problem(describe_error(exc), url, failure_verb(exc))
    async with client:
        try:
            attributes = await client.get_queue_attributes(url, list(SQS_ATTRIBUTES))
        except Exception as exc:
            return Problem(describe_error(exc), url, failure_verb(exc))
        policy = parse_redrive_policy(attributes.get("RedrivePolicy"))
        return QueueDepth(
            url=url,
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
            dead_letters=await _dead_letters(client, policy) if policy else None,
        )
