"""SQS: the queue's depth, and its dead-letter queue's, as the bridge's queue sees them."""

from __future__ import annotations

from typing import Any

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


def _dead_letters(client: Any, policy: tuple[str, str | None, int | None]) -> DeadLetters:
    name, account, max_receive_count = policy
    try:
        lookup = {"QueueName": name}
        if account:
            lookup["QueueOwnerAWSAccountId"] = account
        url = client.get_queue_url(**lookup)["QueueUrl"]
        attributes = client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
    except Exception as exc:  # shown next to the main queue's figures
        return DeadLetters(name, max_receive_count, problem=describe_error(exc))
    return DeadLetters(name, max_receive_count, int(attributes["ApproximateNumberOfMessages"]))


def queue_depth(settings: Settings, timeout: float) -> QueueDepth | Problem:
    """Depth of the configured queue and of its dead-letter queue (blocking)."""
    from bridge.sqs import make_client

    url = settings.sqs_queue_url
    if not url:
        return Problem("not configured (set SQS_QUEUE_URL)")
    try:
        client = make_client(settings, max_pool_connections=2, read_timeout=timeout)
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=list(SQS_ATTRIBUTES))[
            "Attributes"
        ]
    except Exception as exc:
        return Problem(describe_error(exc), url, failure_verb(exc))
    policy = parse_redrive_policy(attributes.get("RedrivePolicy"))
    return QueueDepth(
        url=url,
        visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        dead_letters=_dead_letters(client, policy) if policy else None,
    )
