"""Faust's producer and topic creation, made durable for a replicated cluster.

Faust (1) builds its aiokafka producer idempotent only inside transactions
(``processing_guarantee="exactly_once"``); in the default at-least-once mode
a produce retried after a leader change can be written twice, and the
producer has no sequence numbers to keep a partition's records in order
across retries. Every record a worker writes (masked logins, rejections,
the table's changelog) goes through that producer, so here it is always
idempotent with acks=all, as the bridge's is.

It also (2) creates every topic with the replication factor the caller
passes, which for its own topics (the table's changelog, the leader topic)
and ours is ``topic_replication_factor``, 1 by default, with no
``min.insync.replicas``: a changelog on one broker loses the table when that
broker's disk does. Here every topic a worker creates gets the pipeline's
replication (``MASKSTREAM_REPLICATION_FACTOR``, by default min(3, brokers))
and ``min.insync.replicas`` one less; an existing topic is used as it is,
with a warning when it keeps fewer copies. (3) A creation that meets a
broker not ready yet (a cluster starting with the workers) is tried again;
upstream's error stopped the worker at start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver

from stream.common.replication import replication_factor, topic_configs, under_replicated_warning
from stream.common.retry import Backoff
from stream.common.topic_admin import kafka_unavailable

log = logging.getLogger(__name__)

#: What every producer on the pipeline's path keeps, whatever Faust's mode.
DURABLE_PRODUCER = {"acks": "all", "enable_idempotence": True}


class Producer(aiokafka_driver.Producer):
    """Faust's producer, idempotent with acks=all outside transactions too."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), **DURABLE_PRODUCER}


def cluster_replicas(client: Any, topic: str) -> int | None:
    """The fewest replicas of *topic*'s partitions in *client*'s metadata,
    None if the metadata does not list the topic."""
    partitions = client.cluster._partitions.get(topic)  # no public accessor for replicas
    if not partitions:
        return None
    return min(len(p.replicas) for p in partitions.values())


class DurableTransport(aiokafka_driver.Transport):
    """Creates topics replicated as the pipeline's settings say."""

    Producer = Producer
    #: MASKSTREAM_REPLICATION_FACTOR; 0 means min(3, brokers). Set by ``register``.
    replication_setting: int = 0

    async def _really_create_topic(
        self,
        owner: Any,
        client: Any,
        topic: str,
        partitions: int,
        replication: int,
        *,
        config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        backoff, attempt = Backoff(cap=5.0), 0
        while True:
            try:
                await self._create_replicated(owner, client, topic, partitions, config, **kwargs)
                return
            except Exception as exc:
                if not kafka_unavailable(exc) or owner.should_stop:
                    raise
                attempt += 1
                delay = backoff.delay(attempt)
                log.warning("cannot create topic %s yet (%r); again in %.1f s", topic, exc, delay)
                await asyncio.sleep(delay)

    async def _create_replicated(
        self,
        owner: Any,
        client: Any,
        topic: str,
        partitions: int,
        config: Mapping[str, Any] | None,
        **kwargs: Any,
    ) -> None:
        wanted = replication_factor(self.replication_setting, len(client.cluster.brokers()))
        existing = cluster_replicas(client, topic)
        if existing is not None:
            warning = under_replicated_warning(topic, existing, wanted)
            if warning:
                log.warning(warning)
        await super()._really_create_topic(
            owner,
            client,
            topic,
            partitions,
            wanted,
            config={**topic_configs(wanted), **(config or {})},
            **kwargs,
        )
