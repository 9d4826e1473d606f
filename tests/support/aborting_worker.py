"""``faust -A tests.support.aborting_worker worker``: the worker of
``stream.app`` whose first output transaction on each raw partition fails
to commit (as when its transaction coordinator goes away), after taking
every batch of ``MASKSTREAM_TRANSACTION_SECONDS``. A fault hook only tests
reach: nothing in ``stream`` imports it.
"""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from stream.worker import transactions

failed: set[int] = set()
commit = transactions.PartitionPublisher.commit


async def commit_failing_once(
    self: transactions.PartitionPublisher,
    raw: TopicPartition,
    group_id: str,
    topics: tuple[str, str],
) -> None:
    if self.opened_at is not None and raw.partition not in failed:
        failed.add(raw.partition)
        raise KafkaConnectionError("injected: the transaction coordinator went away")
    await commit(self, raw, group_id, topics)


transactions.PartitionPublisher.commit = commit_failing_once  # type: ignore[method-assign]

from stream.app import app  # noqa: E402  (after the hook is in place)

__all__ = ["app"]
