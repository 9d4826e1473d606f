"""The output topics ``logins.masked`` and ``logins.rejected``, for downstream consumers.

Records go through the aiokafka producer inside Faust's, one batch per
partition (stream.worker.producing), so Faust's flush before each offset
commit covers them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer

from stream.worker.producing import Deliveries, KeyedRecord, send_many


class KafkaOutputs:
    """Sends keyed records to the two output topics, partitioned by key."""

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
