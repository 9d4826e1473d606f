"""SQS: the queue's depth, and its dead-letter queue's, as the bridge's queue sees them."""

from __future__ import annotations

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


async def queue_depth(settings: Settings, timeout: float) -> QueueDepth | Problem:
    """Depth of the configured queue and of its dead-letter queue."""
    url = settings.sqs_queue_url
    if not url:
        return Problem("not configured (set SQS_QUEUE_URL)")
    try:
        client = SqsClient.from_settings(settings, connections=2, read_timeout=timeout, retries=0)
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
