"""How many copies of each partition the pipeline's topics keep.

Pure rules shared by everything that creates a topic (the bridge, the
workers' Faust transport, the test sandbox), so every topic of a deployment
is replicated alike: by default three copies, or fewer when the cluster has
fewer brokers, and ``min.insync.replicas`` one less, so that with acks=all an
acknowledged record is on two brokers and one broker may fail without
stopping producers.
"""

from __future__ import annotations

# Copies kept when the setting leaves it to the cluster (the usual production choice).
DEFAULT_REPLICATION_FACTOR = 3


def replication_factor(setting: int, brokers: int) -> int:
    """The replication factor for a new topic: *setting* if positive, else
    min(3, *brokers*) (at least 1)."""
    if setting > 0:
        return setting
    return max(1, min(DEFAULT_REPLICATION_FACTOR, brokers))


def min_insync_replicas(replication: int) -> int:
    """One less than *replication*, at least 1: one replica may be down."""
    return max(1, replication - 1)


def topic_configs(replication: int) -> dict[str, str]:
    """Topic configuration entries that go with *replication*."""
    return {"min.insync.replicas": str(min_insync_replicas(replication))}


def under_replicated_warning(topic: str, actual: int, wanted: int) -> str | None:
    """The warning for an existing *topic* kept as it is with fewer copies
    than wanted, or None when it has enough."""
    if actual >= wanted:
        return None
    return (
        f"topic {topic!r} exists with replication factor {actual}, below the "
        f"{wanted} wanted (MASKSTREAM_REPLICATION_FACTOR); it is used as it is: "
        f"reassign its partitions to add replicas"
    )
