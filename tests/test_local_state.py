"""A worker's local state never stops it (real Kafka, PostgreSQL, worker processes).

A worker's RocksDB databases are a cache of the ``seen_devices`` changelog.
When they hold another changelog's state (the stack recreated under a kept
data directory, the changelog topic deleted and recreated), upstream Faust
crashed at start with ``ConsistencyError``; the worker must instead set the
state aside, rebuild it from the changelog, reach Ready, process new
messages and keep ``seen_devices`` exact in PostgreSQL and in its table.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest

from stream.worker.faust_patches.table_store import ORIGIN_FILE
from tests.support.sandbox import IsolatedPipeline, RawMessage

pytestmark = pytest.mark.services


def logins(devices: range, times: int) -> list[RawMessage]:
    return [
        RawMessage(
            str(uuid.uuid4()),
            json.dumps(
                {
                    "user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae",
                    "app_version": "2.3.0",
                    "device_type": "android",
                    "ip": f"10.0.{device}.{n}",
                    "locale": None,
                    "device_id": f"dev-{device}",
                }
            ).encode(),
        )
        for device in devices
        for n in range(times)
    ]


def run(pipeline: IsolatedPipeline, messages: list[RawMessage]) -> None:
    """Start the worker on its data directory, feed it *messages*, wait for them."""
    done = pipeline.outcome_count()
    pipeline.launcher.start_worker("worker")
    pipeline.produce_raw(messages)
    pipeline.wait_for_outcomes(done + len(messages))


def table_entry(pipeline: IsolatedPipeline, device: str, worker: str = "worker") -> dict | None:
    """*worker*'s web view of *device* (None: seen nowhere)."""
    port = pipeline.launcher.web_ports[worker]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/seen-devices/{device}/") as answer:
            return json.load(answer)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def rows_per_device(pipeline: IsolatedPipeline) -> dict[str, int]:
    return dict(pipeline.query("SELECT masked_device_id, count(*) FROM user_logins GROUP BY 1"))


def set_aside_warnings(pipeline: IsolatedPipeline) -> list[str]:
    return [
        line
        for line in pipeline.launcher.log("worker").splitlines()
        if "rebuilding it from the changelog" in line
    ]


def test_state_from_another_cluster_is_rebuilt(pipeline: IsolatedPipeline) -> None:
    """The stack torn down and recreated under a kept data directory: a new
    Kafka cluster (its id differs) with an empty changelog, an empty database."""
    run(pipeline, logins(range(8), 3))
    before = rows_per_device(pipeline)
    pipeline.launcher.stop("worker")
    recorded = list((pipeline.launcher.log_dir / "worker-data").rglob(ORIGIN_FILE))
    assert recorded, "the worker recorded no cluster id in its databases"
    for origin in recorded:  # what a recreated stack's new cluster makes of them
        origin.write_text("the-cluster-torn-down\n")
    pipeline.delete_topics(wait=True)
    pipeline.drop_database()
    pipeline.create_database()
    pipeline.create_topics()

    run(pipeline, logins(range(4, 12), 2))

    rows = rows_per_device(pipeline)
    assert sorted(rows.values()) == [2] * 8  # the old devices' rows went with the stack
    assert pipeline.device_mismatches() == {}
    for device, count in rows.items():
        entry = table_entry(pipeline, device)
        assert entry is not None and (entry["source"], entry["login_count"]) == ("table", count)
    gone = set(before) - set(rows)
    assert len(gone) == 4
    for device in gone:  # the old state's entries (3 logins each) were not kept
        assert table_entry(pipeline, device) is None
    warnings = set_aside_warnings(pipeline)
    assert warnings and all("the-cluster-torn-down" in w for w in warnings)
    assert "ConsistencyError" not in pipeline.launcher.log("worker")


def test_state_beyond_a_recreated_changelog_is_rebuilt(pipeline: IsolatedPipeline) -> None:
    """The changelog topic deleted and recreated, PostgreSQL kept: the local
    offsets lie beyond the new changelog's end (upstream: ConsistencyError)."""
    first = logins(range(8), 3)
    run(pipeline, first)
    pipeline.launcher.stop("worker")
    pipeline.delete_topics([pipeline.changelog_topic()], wait=True)

    run(pipeline, logins(range(4, 12), 2))  # the worker creates the changelog again

    assert pipeline.device_mismatches() == {}
    rows = rows_per_device(pipeline)
    assert sorted(rows.values()) == [2] * 4 + [3] * 4 + [5] * 4
    for device, count in rows.items():
        entry = table_entry(pipeline, device)
        assert entry is not None and entry["login_count"] == count
        # Devices seen again are back in the rebuilt table; the others are
        # answered, exactly, from PostgreSQL until they log in again.
        assert entry["source"] == ("database" if count == 3 else "table")
    warnings = set_aside_warnings(pipeline)
    assert warnings and all("beyond the changelog's end" in w for w in warnings)
    assert "ConsistencyError" not in pipeline.launcher.log("worker")
