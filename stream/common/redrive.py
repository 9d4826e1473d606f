"""An SQS queue's RedrivePolicy: where its dead letters go, read by ``status`` and the bridge."""

from __future__ import annotations

import json


def parse_redrive_policy(raw: str | None) -> tuple[str, str | None, int | None] | None:
    """(dead-letter queue name, owner account, max receive count) from a RedrivePolicy.

    The policy names the queue by ARN (``arn:aws:sqs:REGION:ACCOUNT:NAME``);
    AWS writes maxReceiveCount as a string, ElasticMQ as a number.
    """
    if not raw:
        return None
    try:
        policy = json.loads(raw)
        arn = str(policy["deadLetterTargetArn"])
    except (ValueError, KeyError, TypeError):
        return None
    parts = arn.split(":")
    name = parts[-1]
    account = parts[4] if len(parts) >= 6 and parts[4] else None
    try:
        count: int | None = int(policy.get("maxReceiveCount"))
    except (TypeError, ValueError):
        count = None
    return name, account, count
