"""The transport's pure decisions (its behaviour under rebalances is in the fault suite)."""

from __future__ import annotations

import pytest
from faust.types import TP

from stream.worker.faust_patches.transport import must_rewind, next_commit, no_progress, seek_target


@pytest.mark.parametrize(("asked", "sought"), [(None, 0), (-2, 0), (-1, 0), (0, 0), (7, 7)])
def test_a_negative_or_missing_recovery_offset_seeks_from_the_start(
    asked: int | None, sought: int
) -> None:
    assert seek_target(asked) == sought


@pytest.mark.parametrize(
    ("position", "held_back", "rewind"),
    [
        (120, 100, True),  # fetched past the held-back record: seek back to it
        (100, 100, False),  # it is the next record fetched anyway
        (40, 100, False),  # a rebalance seeked back to the committed offset 40
        (None, 100, False),  # being reset to the start or the committed offset
    ],
)
def test_a_held_back_record_rewinds_its_partition_backwards_only(
    position: int | None, held_back: int, rewind: bool
) -> None:
    assert must_rewind(position, held_back) is rewind


def commit_after(acked: list[int], committed: int) -> tuple[int | None, list[int], set[int]]:
    index = set(acked)
    offset = next_commit(acked, index, committed)
    return offset, acked, index


def test_the_commit_covers_the_run_that_starts_at_the_committed_offset() -> None:
    assert commit_after([2, 0, 1, 5, 6], committed=0) == (3, [5, 6], {5, 6})


def test_a_missing_record_at_the_head_holds_the_commit_even_from_offset_0() -> None:
    # Faust's own rule committed 2 here (and over one missing record from any offset).
    assert commit_after([1, 2], committed=0) == (None, [1, 2], {1, 2})
    assert commit_after([31, 32], committed=30) == (None, [31, 32], {31, 32})


def test_offsets_below_the_committed_one_are_dropped_as_already_done() -> None:
    assert commit_after([3, 4, 10, 11], committed=10) == (12, [], set())
    assert commit_after([3, 4], committed=10) == (None, [], set())


RAW_0 = TP("logins.raw", 0)


@pytest.mark.parametrize(
    ("previous", "committed", "highwater", "stalled"),
    [
        ({RAW_0: 40}, 40, 100, True),  # records waiting, no commit since the last check
        ({RAW_0: 40}, 60, 100, False),  # committed since
        ({RAW_0: 100}, 100, 100, False),  # nothing waiting
        ({RAW_0: None}, None, 100, True),  # nothing ever committed, two checks running
        ({}, None, 100, False),  # the first check: no time to progress yet
        ({RAW_0: None}, None, None, False),  # highwater not known yet
    ],
)
def test_a_partition_stalls_only_after_a_whole_check_interval_without_commit(
    previous: dict[TP, int | None], committed: int | None, highwater: int | None, stalled: bool
) -> None:
    assert no_progress(previous, RAW_0, committed, highwater) is stalled


def test_the_worker_producer_is_idempotent_with_acks_all_outside_transactions() -> None:
    """Faust makes its producer idempotent only for exactly_once; a worker's
    (masked, rejected, changelog) is idempotent with acks=all in at_least_once too."""
    import asyncio

    import faust

    from stream.worker.faust_patches import transport

    transport.register()

    async def scenario() -> tuple[object, int | str]:
        app = faust.App(f"idempotence-{id(object())}", broker=f"{transport.SCHEME}://127.0.0.1:1")
        assert not app.in_transaction
        aiokafka_producer = app.producer._new_producer()
        return aiokafka_producer._txn_manager, aiokafka_producer._sender._acks

    txn_manager, acks = asyncio.run(scenario())
    assert txn_manager is not None  # aiokafka keeps sequence numbers only when idempotent
    assert acks == -1


def test_the_worker_consumer_fetches_by_the_fetch_settings() -> None:
    """Faust's consumer answers a fetch as soon as one byte is there; a worker's
    waits for MASKSTREAM_FETCH_MIN_BYTES or MASKSTREAM_FETCH_WAIT_MS."""
    import asyncio

    import faust

    from stream.worker.faust_patches import transport

    transport.register(fetch=transport.FetchSettings(min_bytes=65_536, max_wait_ms=200))

    async def scenario() -> tuple[int, int]:
        app = faust.App(f"fetching-{id(object())}", broker=f"{transport.SCHEME}://127.0.0.1:1")
        thread = app.consumer._new_consumer_thread()
        consumer = thread._create_worker_consumer(app.transport)
        return consumer._fetch_min_bytes, consumer._fetch_max_wait_ms

    try:
        assert asyncio.run(scenario()) == (65_536, 200)
    finally:
        transport.register()


def test_topics_a_worker_creates_take_the_replication_setting() -> None:
    from stream.common.replication import min_insync_replicas, replication_factor

    assert [replication_factor(0, brokers) for brokers in (1, 2, 3, 5)] == [1, 2, 3, 3]
    assert replication_factor(2, 5) == 2
    assert [min_insync_replicas(r) for r in (1, 2, 3, 5)] == [1, 1, 2, 4]
