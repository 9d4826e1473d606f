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

from stream.worker.producing import Deliveries, send_for_raw_partition
from stream.worker.transactions import Floor, PartitionShare


class KafkaOutputs:
    """Sends keyed records to the two output topics, each raw partition's to its
    output partition (stream.worker.producing.output_partition); Faust commits
    the raw offsets afterwards."""

    def __init__(
        self, producer: Callable[[], AIOKafkaProducer], masked_topic: str, rejected_topic: str
    ) -> None:
        self.producer = producer  # looked up per batch, as Faust may replace it
        self.masked_topic = masked_topic
        self.rejected_topic = rejected_topic

    async def floors(self, partitions: set[int]) -> dict[int, Floor | None]:
        """Every record may be published (none is known to be already)."""
        return dict.fromkeys(partitions, Floor(0, 0, tracked=False))

    async def publish(self, shares: Sequence[PartitionShare]) -> Deliveries:
        producer, deliveries = self.producer(), []
        for share in shares:
            for topic, records in (
                (self.masked_topic, share.masked),
                (self.rejected_topic, share.rejected),
            ):
                deliveries += await send_for_raw_partition(
                    producer, topic, share.partition, records
                )
        return deliveries
