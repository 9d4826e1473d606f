"""Faust's aiokafka transport, with one change that makes rebalances lossless.

Faust remembers the last offset it read per partition and, on the next
record, (a) treats any jump as a "gap" of offsets that need no processing and
acknowledges it, and (b) drops records older than that offset as already
read. Records from a fetch that was in flight when a rebalance seeked the
partition back to its committed offset arrive out of order, so (a) acks
records that were never processed and (b) then drops them when they are
fetched again: they are lost. The fault suite shows it (a worker joining and
leaving lost a few dozen of 20,000 messages).

This transport forgets read offsets, so every fetched record is processed
and no gap is ever acknowledged unprocessed. The price is that records seen
twice around a rebalance are processed twice, which this pipeline absorbs
(rows are unique per message id, ``seen_devices`` entries are recomputed).
Our topics hold no transaction markers or compacted holes, the only real
gaps that logic existed for.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka as aiokafka_driver

SCHEME = "maskstream-kafka"


class ForgetfulReadOffsets(dict):
    """A read-offset map whose lookups always say "nothing read yet"."""

    def __getitem__(self, key: Hashable) -> None:
        return None

    def get(self, key: Hashable, default: Any = None) -> Any:
        return default


class Consumer(aiokafka_driver.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = ForgetfulReadOffsets()


class Transport(aiokafka_driver.Transport):
    Consumer = Consumer


def register() -> None:
    """Make ``maskstream-kafka://host:port`` broker URLs use this transport."""
    drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
