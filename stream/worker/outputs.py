"""The output topics ``logins.masked`` and ``logins.rejected``, published
at least once (``MASKSTREAM_EXACTLY_ONCE=false``; by default
stream.worker.transactions publishes them exactly once).

Records go through the aiokafka producer inside Faust's, one batch per
partition (stream.worker.producing), so Faust's flush before each offset
commit covers them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer

from stream.worker.producing import Deliveries, KeyedRecord, send_many
from stream.worker.transactions import Floor, PartitionShare


class KafkaOutputs:
    """Sends keyed records to the two output topics, partitioned by key;
    Faust commits the raw offsets afterwards."""

    def __init__(
        self, producer: Callable[[], AIOKafkaProducer], masked_topic: str, rejected_topic: str
    ) -> None:
        self.producer = producer  # looked up per batch, as Faust may replace it
        self.masked_topic = masked_topic
        self.rejected_topic = rejected_topic

    async def send_masked(self, records: Sequence[KeyedRecord]) -> Deliveries:
        return await send_many(self.producer(), self.masked_topic, records)

    async def send_rejected(self, records: Sequence[KeyedRecord]) -> Deliveries:
        return await send_many(self.producer(), self.rejected_topic, records)

    async def floors(self, partitions: set[int]) -> dict[int, Floor | None]:
        """Every record may be published (none is known to be already)."""
        return dict.fromkeys(partitions, Floor(0, 0, tracked=False))

    async def publish(self, shares: Sequence[PartitionShare]) -> Deliveries:
        deliveries = await self.send_masked([r for share in shares for r in share.masked])
        return deliveries + await self.send_rejected(
            [r for share in shares for r in share.rejected]
        )
