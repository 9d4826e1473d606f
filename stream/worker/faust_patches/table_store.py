"""The ``seen_devices`` store: Faust's RocksDB store made fit for our writes.

Everything here reaches into faust-streaming 0.15.3's ``faust.stores.rocksdb``
(pinned in pyproject.toml), so it lives with the other patches.

**Partition of a write.** Faust's RocksDB ``Store`` keeps one database per
changelog partition and picks it, on ``table.data[key] = value``, from the
*current event*'s partition. The agent writes a whole batch after its
PostgreSQL transaction, and each entry belongs to the raw partition of its
device, not to whatever event happens to be current. :func:`put_entries`
therefore writes each partition's entries into that partition's database
(one RocksDB ``WriteBatch`` each), and :func:`local_entry` reads a key from
the databases of the partitions this worker is active for, as the web view
runs outside any event.

**Persisted offsets.** Faust records, in each partition's database, the last
changelog offset the database holds, and recovery reads the changelog only
from there. Faust writes it when its own ``table[key] = value`` send
completes; ours go through aiokafka batches, so :func:`note_delivered`
records the base offset of each delivered changelog batch. That can only
under-state what the database holds (the entries are put before they are
sent), so a restart at worst reads a few entries twice, which is harmless:
entries are absolute values.

**What faust-streaming gets wrong, and :class:`PartitionStore` fixes:**

- a revoked partition's database is dropped from the store but never closed
  (``db.close()`` is commented out upstream), and on ``stop()`` none is. Its
  lock is released only when the garbage collector gets to it, so a
  partition assigned back to the same worker in the next rebalance waited on
  its own lock (upstream retries 30 s, then crashes the worker). Each is
  closed here, so the lock goes with it.
- a database that cannot be opened for any reason but a lock (e.g. left
  corrupt by a crash or a full disk) stopped the worker. The local store is
  only a copy of the changelog, so here it is moved aside (kept, for a
  post-mortem) and a fresh one is rebuilt from the changelog.
- a database whose state belongs to another changelog stopped the worker
  for good (``ConsistencyError: The persisted offset ... is higher than the
  last offset in that topic``), or worse, went on from an offset that means
  nothing in this changelog: a data directory kept while the stack was
  recreated, a changelog topic deleted and recreated, Kafka restored from a
  backup, a worker moved to another cluster. Each database records the
  Kafka cluster id it was built from and the changelog's partition count
  (:data:`ORIGIN_FILE`, inside the database's directory so it moves with
  it); when a partition is assigned, a database from another cluster or
  another count, or whose persisted offset lies at or beyond the
  changelog's end, is moved aside in the same way and rebuilt
  (:func:`stale_reason`). aiokafka 0.14 does not read Kafka's topic ids, so
  a changelog recreated by hand with the same count *and* written past the
  persisted offset before this worker comes back is not recognised; see
  docs/design.md.

A store left by ``kill -9`` needs nothing of us: RocksDB replays its
write-ahead log on open and the kernel released the lock with the process;
whatever the database holds past its persisted offset is read again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.stores import STORES, rocksdb
from faust.types import TP

from stream.worker.faust_patches.internals import kafka_cluster_id, partition_count

log = logging.getLogger(__name__)

#: ``store=`` URL scheme of :class:`PartitionStore`.
SCHEME = "maskstream-rocksdb"

# RocksDB's defaults (Faust's) are sized for a server with one big table: a
# 2 GiB block cache and three 64 MiB memtables *per partition database*.
# A worker holds up to one database per partition (its actives and
# standbys); these bound each to about 8 MiB of memtables plus 8 MiB of
# block cache, whatever the number of devices. The working set of
# seen_devices is the devices active right now, and each write is one put.
ROCKSDB_OPTIONS: Mapping[str, int] = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 8 * 1024 * 1024,
}


#: The file, inside a partition's database directory, naming the Kafka
#: cluster whose changelog the database was built from (first line), then the
#: changelog's partition count (``partitions N``) and topic (``topic NAME``),
#: where known.
ORIGIN_FILE = "MASKSTREAM-CLUSTER-ID"


@dataclass(frozen=True)
class Changelog:
    """What the cluster says of one changelog partition, at assignment."""

    cluster_id: str
    end_offset: int | None  # the offset the next record will get
    partitions: int | None = None  # the changelog topic's partition count
    topic: str | None = None


@dataclass(frozen=True)
class Origin:
    """What a database records of the changelog it was built from."""

    cluster_id: str
    partitions: int | None = None
    topic: str | None = None

    @classmethod
    def of(cls, changelog: Changelog) -> Origin:
        return cls(changelog.cluster_id, changelog.partitions, changelog.topic)

    @classmethod
    def parse(cls, text: str) -> Origin | None:
        lines = text.splitlines()
        if not lines or not lines[0].strip():
            return None
        fields = dict(line.partition(" ")[::2] for line in lines[1:])
        partitions = fields.get("partitions", "")
        return cls(
            lines[0].strip(),
            int(partitions) if partitions.isdigit() else None,
            fields.get("topic") or None,
        )

    def text(self) -> str:
        lines = [self.cluster_id]
        if self.partitions is not None:
            lines.append(f"partitions {self.partitions}")
        if self.topic is not None:
            lines.append(f"topic {self.topic}")
        return "\n".join(lines) + "\n"


def stale_reason(recorded: Origin | None, persisted: int | None, now: Changelog) -> str | None:
    """Why a database built from the changelog *recorded* up to changelog
    offset *persisted* cannot go on from the changelog as it is *now*, or None.

    A database with no recorded cluster (made before clusters were recorded,
    or a crash between its creation and the recording) is judged on its
    offset alone; one with no recorded partition count or topic, on what it
    records. A changelog of another partition count or name is another
    changelog: the worker moves to the changelog of ``logins.raw``'s count
    when that count changes (stream.worker.table_partitions).
    """
    if recorded is not None and recorded.cluster_id != now.cluster_id:
        return f"its state came from Kafka cluster {recorded.cluster_id}, this is {now.cluster_id}"
    if (
        recorded is not None
        and recorded.partitions is not None
        and now.partitions is not None
        and recorded.partitions != now.partitions
    ):
        return (
            f"its state came from a changelog of {recorded.partitions} partitions, this one "
            f"has {now.partitions}: the raw topic's partition count changed"
        )
    if recorded is not None and recorded.topic and now.topic and recorded.topic != now.topic:
        return f"its state came from changelog {recorded.topic}, this one is {now.topic}"
    if persisted is not None and now.end_offset is not None and persisted >= now.end_offset:
        return (
            f"its persisted changelog offset {persisted} is beyond the changelog's end "
            f"({now.end_offset}): the changelog topic was recreated or restored"
        )
    return None


class PartitionStore(rocksdb.Store):
    """Faust's RocksDB store whose databases are closed when let go of, and
    rebuilt from the changelog when they cannot be opened or hold another
    changelog's state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Changelog partitions assigned and not yet checked: partition -> the
        # changelog as it was at assignment. Recovery reads each partition's
        # persisted offset (for actives and standbys alike) right after the
        # assignment; that read checks the database first.
        self._unchecked: dict[int, Changelog] = {}

    async def assign_partitions(
        self, table: faust.types.CollectionT, tps: set[TP], generation_id: int = 0
    ) -> None:
        changelogs = {tp for tp in tps if tp.topic in table.changelog_topic.topics}
        if changelogs:
            self._unchecked.update(await self._describe(changelogs))
        await super().assign_partitions(table, tps, generation_id)

    async def _describe(self, tps: Set[TP]) -> dict[int, Changelog]:
        """Each of *tps*' cluster id and end offset; none if Kafka cannot say
        now (then Faust's own check of offsets against the end still applies)."""
        try:
            cluster = await kafka_cluster_id(self.app)
            ends = await self.app.consumer.highwaters(*tps)
        except Exception as exc:  # the check is a safeguard, never a reason to stop
            log.warning("seen_devices: cannot describe the changelog (%s); not checking", exc)
            return {}
        if cluster is None:
            return {}
        return {
            tp.partition: Changelog(
                cluster, ends.get(tp), partition_count(self.app, tp.topic), tp.topic
            )
            for tp in tps
        }

    def persisted_offset(self, tp: TP) -> int | None:
        now = self._unchecked.pop(tp.partition, None)
        if now is not None:
            self._check(tp.partition, now)
        return super().persisted_offset(tp)

    def _check(self, partition: int, now: Changelog) -> None:
        """Rebuild *partition*'s database if it holds another changelog's state;
        then record the cluster it is built from."""
        db = self._db_for_partition(partition)
        origin = Path(self.partition_path(partition)) / ORIGIN_FILE
        recorded = Origin.parse(origin.read_text()) if origin.exists() else None
        offset = db.get(self.offset_key)
        reason = stale_reason(recorded, None if offset is None else int(offset), now)
        if reason is not None:
            self._close(partition)
            self._set_aside(partition, reason, "stale")
            self._db_for_partition(partition)
        if recorded != Origin.of(now) or reason is not None:
            origin.write_text(Origin.of(now).text())

    def revoke_partitions(self, table: faust.types.CollectionT, tps: set[TP]) -> None:
        for tp in tps:
            if tp.topic in table.changelog_topic.topics:
                self._close(tp.partition)

    async def stop(self) -> None:
        for partition in list(self._dbs):
            self._close(partition)

    def _close(self, partition: int) -> None:
        db = self._dbs.pop(partition, None)
        if db is not None:
            log.info("closing seen_devices partition %d", partition)
            db.close()

    def _open_for_partition(self, partition: int) -> Any:
        try:
            return super()._open_for_partition(partition)
        except rocksdb.ERRORS_ROCKS_IO_ERROR as exc:
            if "lock" in repr(exc).lower():
                raise  # another owner: upstream waits for it
            self._set_aside(partition, f"cannot open it ({exc})", "unusable")
            return super()._open_for_partition(partition)

    def _set_aside(self, partition: int, reason: str, label: str) -> None:
        """Move *partition*'s (closed) database aside, kept for a post-mortem,
        with one warning: a fresh one is then rebuilt from the changelog."""
        path = Path(self.partition_path(partition))
        aside = path.with_name(f"{path.name}.{label}-{int(time.time())}")
        log.warning(
            "seen_devices partition %d: %s; moved %s to %s, rebuilding it from the changelog",
            partition,
            reason,
            path,
            aside,
        )
        path.rename(aside)

    def put_many(self, partition: int, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Write *items* into *partition*'s database in one batch."""
        batch = rocksdb.WriteBatch(raw_mode=True)
        for key, value in items:
            batch.put(key, value)
        self._db_for_partition(partition).write(batch)

    def persist_offset(self, partition: int, offset: int) -> None:
        """Record *offset* in *partition*'s database, unless it was revoked
        meanwhile (reopening it would hold a partition another worker owns)."""
        if partition in self._dbs:
            self._dbs[partition].put(self.offset_key, str(offset).encode())

    def get_active(self, key: bytes) -> bytes | None:
        """*key*'s value in a partition this worker is active for, if any."""
        for db in self._dbs_for_actives():
            value = db.get(key)
            if value is not None:
                return value
        return None


def register() -> None:
    """Make ``maskstream-rocksdb://`` a store URL Faust knows."""
    STORES.aliases[SCHEME] = f"{__name__}:PartitionStore"


def store_url(kind: str) -> str:
    """The ``store=`` URL of the store named by ``MASKSTREAM_TABLE_STORE``."""
    return {"rocksdb": f"{SCHEME}://", "memory": "memory://"}[kind]


def table_options(kind: str) -> dict[str, Any]:
    """Store options for a table (a fresh dict: Faust's store pops keys from it)."""
    return dict(ROCKSDB_OPTIONS) if kind == "rocksdb" else {}


def put_entries(table: faust.types.TableT, groups: Mapping[int, list[tuple[bytes, bytes]]]) -> None:
    """Put each partition's entries in *table*'s local store, at that partition."""
    store = table.data
    if isinstance(store, PartitionStore):
        for partition, items in groups.items():
            store.put_many(partition, items)
    else:  # the memory store keeps one dict for every partition
        for items in groups.values():
            for key, value in items:
                store[key] = value


def local_entry(table: faust.types.TableT, key: bytes) -> bytes | None:
    """*key*'s entry if this worker holds it as the partition's active owner."""
    store = table.data
    if isinstance(store, PartitionStore):
        return store.get_active(key)
    return store.get(key)


def note_delivered(table: faust.types.TableT, deliveries: Iterable[asyncio.Future[Any]]) -> None:
    """Record in *table*'s store the changelog offset of each batch once Kafka
    holds it, so that recovery after a restart starts there (the memory
    store has no offsets: it always reads the whole changelog)."""
    store = table.data
    if not isinstance(store, PartitionStore):
        return

    def persist(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            metadata = future.result()
            store.persist_offset(metadata.partition, metadata.offset)

    for future in deliveries:
        future.add_done_callback(persist)
