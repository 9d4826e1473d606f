"""Kafka: the workers' consumer group lag, per partition, on the pipeline's topics."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterable, Sequence

from stream.common.settings import Settings
from stream.ops.status.figures import ConsumerLag, PartitionLag, Problem, TopicLag
from stream.ops.status.reasons import describe_error


def parse_servers(servers: str) -> list[tuple[str, int]]:
    """``host:port[,host:port...]`` as pairs (port 9092 when omitted)."""
    pairs = []
    for item in servers.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, "9092"
        pairs.append((host.strip("[]"), int(port)))
    return pairs


async def _probe(servers: Sequence[tuple[str, int]], timeout: float) -> OSError | None:
    """None if a TCP connection to any bootstrap server opens, else the first error.

    aiokafka reports an unreachable cluster as 'Unable to bootstrap' without
    the socket's reason; this probe finds the reason (refused, unknown host,
    timed out) in well under the timeout.
    """
    first: OSError | None = None
    for host, port in servers:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except OSError as exc:  # TimeoutError included
            first = first or exc
            continue
        writer.close()
        return None
    return first or OSError(errno.EINVAL, "no bootstrap servers configured")


def partition_lags(
    partitions: Iterable[int],
    committed: dict[int, int],
    beginning: dict[int, int],
    end: dict[int, int],
) -> tuple[PartitionLag, ...]:
    """Lag of each partition: end offset minus the committed offset.

    Where the group has committed nothing (or a negative offset), the workers
    will start from the log start (auto offset reset: earliest), so the lag is
    everything still retained.
    """
    lags = []
    for partition in sorted(partitions):
        offset = committed.get(partition)
        if offset is not None and offset < 0:
            offset = None
        start = offset if offset is not None else beginning.get(partition, 0)
        last = end.get(partition, 0)
        lags.append(PartitionLag(partition, offset, last, max(0, last - start)))
    return tuple(lags)


async def consumer_lag(settings: Settings, timeout: float) -> ConsumerLag | Problem:
    """The workers' group lag on the pipeline's topics (the group is the Faust app id)."""
    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaConnectionError

    from stream.common.kafka_security import KafkaClients, KafkaSecurityError

    servers = settings.kafka_bootstrap_servers
    try:
        pairs = parse_servers(servers)
    except ValueError:
        return Problem("not a host:port list", servers, "invalid")
    try:
        kafka = KafkaClients.from_settings(settings)
    except KafkaSecurityError as exc:
        return Problem(str(exc), servers, "invalid")
    refused = await _probe(pairs, timeout)
    if refused is not None:
        return Problem(describe_error(refused), servers)
    topics = (settings.topics.raw, settings.topics.masked, settings.topics.rejected)
    timeout_ms = int(timeout * 1000)
    try:
        async with kafka.admin_session(request_timeout_ms=timeout_ms) as admin:
            consumer = kafka.consumer(enable_auto_commit=False, request_timeout_ms=timeout_ms)
            try:
                await consumer.start()
                # Metadata for all topics: naming missing ones could auto-create them.
                described = {t["topic"]: t for t in await admin.describe_topics()}
                offsets = await admin.list_consumer_group_offsets(settings.app_id)
                tps = [
                    TopicPartition(topic, p["partition"])
                    for topic in topics
                    if topic in described
                    for p in described[topic]["partitions"]
                ]
                beginning = await consumer.beginning_offsets(tps) if tps else {}
                end = await consumer.end_offsets(tps) if tps else {}
            finally:
                await consumer.stop()
    except KafkaConnectionError:
        # The TCP probe connected, so something listens there, but not Kafka
        # (or a broker that advertises an address this host cannot reach).
        return Problem("port open, but no Kafka broker answered", servers)
    except Exception as exc:
        return Problem(describe_error(exc), servers, "error")
    lags = []
    for topic in topics:
        if topic not in described:
            lags.append(TopicLag(topic, None))
            continue
        mine = [tp for tp in tps if tp.topic == topic]
        lags.append(
            TopicLag(
                topic,
                partition_lags(
                    (tp.partition for tp in mine),
                    {tp.partition: offsets[tp].offset for tp in mine if tp in offsets},
                    {tp.partition: beginning[tp] for tp in mine},
                    {tp.partition: end[tp] for tp in mine},
                ),
            )
        )
    return ConsumerLag(servers, settings.app_id, tuple(lags))
