"""The RocksDB store of ``seen_devices`` (stream.worker.faust_patches.table_store),
on a real RocksDB in a temporary directory: no Kafka needed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import faust
import pytest
from faust.types import TP

from stream.common import settings as settings_module
from stream.worker.faust_patches import table_store


@pytest.fixture
def table(tmp_path: Path) -> Iterator[faust.Table]:
    table_store.register()
    app = faust.App("store-test", store=table_store.store_url("rocksdb"), datadir=str(tmp_path))
    table = app.Table(
        "seen_devices",
        key_type=bytes,
        value_type=bytes,
        partitions=4,
        options=table_store.table_options("rocksdb"),
    )
    yield table
    table.data._dbs.clear()


def changelog(table: faust.Table, partition: int) -> TP:
    return TP(table.changelog_topic.get_topic_name(), partition)


def test_entries_go_to_the_database_of_their_partition(table: faust.Table) -> None:
    store = table.data
    assert isinstance(store, table_store.PartitionStore)
    table_store.put_entries(table, {2: [(b"a", b"1")], 3: [(b"b", b"2"), (b"c", b"3")]})
    assert store._db_for_partition(2).get(b"a") == b"1"
    assert store._db_for_partition(2).get(b"b") is None
    assert store._db_for_partition(3).get(b"c") == b"3"


def test_lookup_sees_only_partitions_this_worker_is_active_for(
    table: faust.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    table_store.put_entries(table, {0: [(b"a", b"1")], 1: [(b"b", b"2")]})
    actives = {changelog(table, 0)}
    monkeypatch.setattr(table.app.assignor, "assigned_actives", lambda: actives)
    assert table_store.local_entry(table, b"a") == b"1"
    assert table_store.local_entry(table, b"b") is None  # a standby copy may lag


def test_a_revoked_partition_can_be_assigned_back_at_once(table: faust.Table) -> None:
    """Upstream drops a revoked database without closing it: while anything
    still refers to it, reopening the partition fails on RocksDB's lock."""
    store = table.data
    table_store.put_entries(table, {1: [(b"a", b"1")]})
    still_referenced = store._db_for_partition(1)
    store.revoke_partitions(table, {changelog(table, 1)})
    assert store._db_for_partition(1).get(b"a") == b"1"
    assert still_referenced is not store._db_for_partition(1)


def test_persisted_offset_is_kept_only_for_partitions_still_held(table: faust.Table) -> None:
    store = table.data
    table_store.put_entries(table, {1: [(b"a", b"1")]})
    store.persist_offset(1, 41)
    store.persist_offset(2, 7)  # not held: must not open (and lock) it
    assert store.persisted_offset(changelog(table, 1)) == 41
    assert 2 not in store._dbs


def test_an_unopenable_database_is_moved_aside_and_rebuilt(table: faust.Table) -> None:
    store = table.data
    path = Path(store.partition_path(3))
    path.mkdir(parents=True)
    (path / "CURRENT").write_text("MANIFEST-999999\n")  # names a manifest that is not there
    table_store.put_entries(table, {3: [(b"a", b"1")]})
    assert store._db_for_partition(3).get(b"a") == b"1"
    assert [p.name.split(".unusable-")[0] for p in path.parent.glob("*.unusable-*")] == [path.name]


def test_the_store_is_chosen_by_setting() -> None:
    assert settings_module.load({}).table_store == "rocksdb"
    assert settings_module.load({"MASKSTREAM_TABLE_STORE": "Memory"}).table_store == "memory"
    assert table_store.store_url("memory") == "memory://"
    assert table_store.table_options("memory") == {}
    with pytest.raises(ValueError, match="MASKSTREAM_TABLE_STORE must be one of rocksdb, memory"):
        settings_module.load({"MASKSTREAM_TABLE_STORE": "redis"})


def test_state_is_stale_from_another_cluster_or_beyond_the_changelogs_end() -> None:
    here = table_store.Changelog("cluster-a", end_offset=100)
    a, b = table_store.Origin("cluster-a"), table_store.Origin("cluster-b")
    assert table_store.stale_reason(a, 99, here) is None
    assert table_store.stale_reason(None, None, here) is None  # a fresh database
    assert table_store.stale_reason(None, 99, here) is None  # made before clusters were kept
    assert "cluster-b" in (table_store.stale_reason(b, 5, here) or "")
    assert "beyond the changelog's end" in (table_store.stale_reason(a, 100, here) or "")
    empty = table_store.Changelog("cluster-a", end_offset=0)  # recreated: -1 in Faust's words
    assert table_store.stale_reason(None, 5147, empty) is not None
    assert table_store.stale_reason(a, 3, table_store.Changelog("x", None)) is not None


def test_state_from_a_changelog_of_another_partition_count_is_stale() -> None:
    """A changelog recreated with the raw topic's new count and written past
    the database's offset before this worker returns: the count tells."""
    six = table_store.Changelog("cluster-a", end_offset=900, partitions=6)
    of_four = table_store.Origin("cluster-a", partitions=4)
    assert "4 partitions, this one has 6" in (table_store.stale_reason(of_four, 500, six) or "")
    assert table_store.stale_reason(table_store.Origin("cluster-a", 6), 500, six) is None
    assert table_store.stale_reason(table_store.Origin("cluster-a"), 500, six) is None  # unknown
    assert table_store.stale_reason(of_four, 500, table_store.Changelog("cluster-a", 900)) is None


def test_state_from_a_changelog_of_another_name_is_stale() -> None:
    """The database's directory is named after the table, not the changelog:
    state from another changelog of the same count (the unnamed one of earlier
    versions, say) is set aside; an origin that names no topic is judged on
    what it records."""
    now = table_store.Changelog(
        "c", end_offset=900, partitions=6, topic="m-seen_devices-p6-changelog"
    )
    older = table_store.Origin("c", 6, "m-seen_devices-changelog")
    assert "came from changelog m-seen_devices-changelog" in (
        table_store.stale_reason(older, 500, now) or ""
    )
    assert table_store.stale_reason(table_store.Origin.of(now), 500, now) is None
    assert table_store.stale_reason(table_store.Origin("c", 6), 500, now) is None


def test_the_origin_file_reads_what_it_wrote_and_the_older_one_line_form() -> None:
    for origin in (
        table_store.Origin("c-1", 6, "m-seen_devices-p6-changelog"),
        table_store.Origin("c-1", 6),
        table_store.Origin("c-1"),
    ):
        assert table_store.Origin.parse(origin.text()) == origin
    assert table_store.Origin.parse("c-1\n") == table_store.Origin("c-1")
    assert table_store.Origin.parse("") is None


def _held_state(table: faust.Table, partition: int, offset: int) -> table_store.PartitionStore:
    store = table.data
    assert isinstance(store, table_store.PartitionStore)
    table_store.put_entries(table, {partition: [(b"a", b"1")]})
    store.persist_offset(partition, offset)
    return store


def test_a_database_from_another_cluster_is_set_aside_and_rebuilt(
    table: faust.Table, caplog: pytest.LogCaptureFixture
) -> None:
    store = _held_state(table, 1, 41)
    store._check(1, table_store.Changelog("first", end_offset=50))  # adopted: recorded
    assert store.persisted_offset(changelog(table, 1)) == 41
    store._unchecked[1] = table_store.Changelog("second", end_offset=50)
    assert store.persisted_offset(changelog(table, 1)) is None  # recovery reads it all
    assert store._db_for_partition(1).get(b"a") is None
    path = Path(store.partition_path(1))
    assert (path / table_store.ORIGIN_FILE).read_text() == "second\n"
    assert [p.name.split(".stale-")[0] for p in path.parent.glob("*.stale-*")] == [path.name]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "partition 1" in warnings[0] and "first" in warnings[0]


def test_a_database_beyond_a_recreated_changelogs_end_is_rebuilt(table: faust.Table) -> None:
    store = _held_state(table, 2, 5147)
    store._unchecked[2] = table_store.Changelog("same", end_offset=0)
    assert store.persisted_offset(changelog(table, 2)) is None
    assert store._db_for_partition(2).get(b"a") is None


def test_a_database_matching_its_changelog_is_kept(table: faust.Table) -> None:
    store = _held_state(table, 3, 7)
    store._unchecked[3] = table_store.Changelog("same", end_offset=8)
    assert store.persisted_offset(changelog(table, 3)) == 7
    assert store._db_for_partition(3).get(b"a") == b"1"
    assert not list(Path(store.partition_path(3)).parent.glob("*.stale-*"))
