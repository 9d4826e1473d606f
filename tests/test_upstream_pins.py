"""Faust upgrades fail fast: the pinned versions, and the upstream source each patch leans on.

``stream/worker/faust_patches/`` (and the lean monitor) override methods of
faust-streaming, mode and aiokafka, and reach into their private members.
An upgrade that changes one of them would otherwise show up only as a
failure deep in the fault suite, or not at all. This test checks that the
installed versions equal the pins in pyproject.toml and that the source of
every upstream function or method a patch replaces, overrides or relies on
still hashes as it did when the patch was written; a failure names the
patch to revisit. After revisiting it, update the hash here.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from stream.worker import monitor
from stream.worker.app import WorkerFaustApp
from stream.worker.faust_patches import durability, table_store, transport, worker_process

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

PINS = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}

TRANSPORT = "stream/worker/faust_patches/transport.py"
TABLE_STORE = "stream/worker/faust_patches/table_store.py"
INTERNALS = "stream/worker/faust_patches/internals.py"
BATCHES = "stream/worker/faust_patches/batches.py"
APP = "stream/worker/app.py"

# The classes whose methods override upstream ones: every override must be pinned below.
PATCH_CLASSES = (
    transport.Consumer,
    transport.ConsumerThread,
    transport.RawBytesTopic,
    table_store.PartitionStore,
    durability.Producer,
    durability.DurableTransport,
    worker_process.Worker,
    monitor.LeanMonitor,
    WorkerFaustApp,
)

# Upstream method overridden -> (sha256 of its source, first 16 hex digits; the override).
OVERRIDDEN = {
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer": (
        "c2701bfc3e6f6cad",
        f"{TRANSPORT} ConsumerThread._create_worker_consumer",
    ),
    "faust.transport.drivers.aiokafka:Consumer._new_consumer_thread": (
        "0870ec53dea75083",
        f"{TRANSPORT} Consumer._new_consumer_thread",
    ),
    "faust.transport.consumer:ThreadDelegateConsumer.__init__": (
        "7072ae80eac1ff62",
        f"{TRANSPORT} Consumer.__init__",
    ),
    "faust.transport.consumer:Consumer._drain_messages": (
        "44a2500309e83c63",
        f"{TRANSPORT} Consumer._drain_messages",
    ),
    "faust.transport.consumer:ThreadDelegateConsumer.seek_to_committed": (
        "f1d483b861b0328b",
        f"{TRANSPORT} Consumer.seek_to_committed",
    ),
    "faust.transport.consumer:Consumer.on_partitions_revoked": (
        "d04b7ae72c6fc206",
        f"{TRANSPORT} Consumer.on_partitions_revoked",
    ),
    "faust.transport.consumer:ThreadDelegateConsumer._commit": (
        "a20eec84e4b2ed50",
        f"{TRANSPORT} Consumer._commit (bookkeeping only while transactions commit offsets)",
    ),
    "faust.transport.consumer:Consumer._new_offset": (
        "1d2c7ea89a7ad4f1",
        f"{TRANSPORT} Consumer._new_offset",
    ),
    "faust.transport.consumer:ThreadDelegateConsumer.seek_wait": (
        "e9db5bbc4ceb2543",
        f"{TRANSPORT} Consumer.seek_wait",
    ),
    "faust.topics:Topic._compile_decode": (
        "6474178f8c211c05",
        f"{TRANSPORT} RawBytesTopic._compile_decode",
    ),
    "faust.stores.rocksdb:Store.__init__": ("c7c0fa2989e8ab4a", f"{TABLE_STORE} PartitionStore"),
    "faust.stores.rocksdb:Store.assign_partitions": (
        "34dc27ace6dd9160",
        f"{TABLE_STORE} PartitionStore.assign_partitions",
    ),
    "faust.stores.rocksdb:Store.persisted_offset": (
        "6f2e502fb86043a1",
        f"{TABLE_STORE} PartitionStore.persisted_offset",
    ),
    "faust.stores.rocksdb:Store.revoke_partitions": (
        "3f85447a24fc34ff",
        f"{TABLE_STORE} PartitionStore.revoke_partitions",
    ),
    "faust.stores.rocksdb:Store.stop": ("2e98db0eb7c7582b", f"{TABLE_STORE} PartitionStore.stop"),
    "faust.stores.rocksdb:Store._open_for_partition": (
        "1dc4e0113d67379d",
        f"{TABLE_STORE} PartitionStore._open_for_partition",
    ),
    "faust.transport.drivers.aiokafka:Transport._really_create_topic": (
        "698806ec237ce0d7",
        "stream/worker/faust_patches/durability.py DurableTransport._really_create_topic",
    ),
    "faust.transport.drivers.aiokafka:Producer._settings_extra": (
        "a4c7bc41b6382223",
        "stream/worker/faust_patches/durability.py Producer._settings_extra",
    ),
    "mode.worker:Worker.execute_from_commandline": (
        "212e98f635d7a69b",
        "stream/worker/faust_patches/worker_process.py Worker.execute_from_commandline",
    ),
    "faust.app.base:App.__init__": ("698e2bf236c67369", f"{APP} WorkerFaustApp.__init__"),
    "faust.app.base:App.on_first_start": (
        "ec655d9c223403cc",
        f"{APP} WorkerFaustApp.on_first_start (runs before_start first)",
    ),
    "faust.app.base:App._on_agent_error": (
        "bdd12f286de64429",
        f"{APP} WorkerFaustApp._on_agent_error (a crashed agent stops the worker)",
    ),
    "mode.worker:Worker._cry": (
        "635733b9ee29cd07",
        "stream/worker/faust_patches/worker_process.py Worker._cry",
    ),
    **{
        f"faust.sensors.monitor:Monitor.{name}": (
            digest,
            f"stream/worker/monitor.py LeanMonitor.{name}",
        )
        for name, digest in {
            "on_message_in": "b2a9a9045b2f456c",
            "on_stream_event_in": "df6d2e5f6397ce44",
            "on_stream_event_out": "2d2277a6dbda754c",
            "on_message_out": "7c4054247cde96c3",
        }.items()
    },
}

# Upstream code the patches rely on without overriding it -> (hash; the patch and why).
RELIED_ON = {
    "aiokafka.consumer.consumer:AIOKafkaConsumer.start": (
        "2f1ba70443327538",
        f"{TRANSPORT} ConsumerThread._create_worker_consumer (the fetcher takes its settings here)",
    ),
    "faust.transport.consumer:Consumer.__init__": (
        "302410d59e6972d1",
        f"{TRANSPORT} Consumer._drain_messages (the _acked, _gap, _n_acked bookkeeping)",
    ),
    "faust.transport.consumer:Consumer.getmany": (
        "4b168d84882a70d6",
        f"{TRANSPORT} Consumer._drain_messages (iterates fetched batches itself)",
    ),
    "faust.transport.consumer:Consumer._wait_next_records": (
        "6218e1969a636b3f",
        f"{TRANSPORT} Consumer._drain_messages",
    ),
    "faust.transport.consumer:Consumer._to_message": (
        "6a0ee0c2072f534c",
        f"{TRANSPORT} Consumer._drain_messages",
    ),
    "faust.transport.conductor:Conductor._compile_message_handler": (
        "9fbc0538097aa4ec",
        f"{TRANSPORT} Consumer._handlers (its lookup, once a fetch)",
    ),
    "faust.transport.conductor:Conductor._update_indices": (
        "619b3247b96ac7d5",
        f"{TRANSPORT} Consumer._handlers (the lock it takes while rebuilding)",
    ),
    "faust.transport.consumer:Consumer._is_changelog_tp": (
        "88867d75cfe9aecf",
        f"{TRANSPORT} Consumer._may_deliver",
    ),
    "faust.transport.consumer:Consumer.ack": (
        "5fcf41cf45153475",
        f"{TRANSPORT} ForgetfulReadOffsets (no gap acknowledged unprocessed),"
        " Consumer.ack_many (its bookkeeping, inlined)",
    ),
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._ensure_consumer": (
        "ff4a4c693b7ec63f",
        f"{TRANSPORT} Consumer._rewind",
    ),
    "mode.threads:QueueServiceThread.call_thread": (
        "479edda75b54734b",
        f"{TRANSPORT} Consumer._rewind",
    ),
    "aiokafka.consumer.subscription_state:Assignment.state_value": (
        "183fea82ef48f3e6",
        f"{TRANSPORT} fetch_position",
    ),
    "faust.streams:Stream._py_aiter": (
        "3a48ee257a65435b",
        f"{BATCHES} take_batches (the per-record tracking and skipping it reproduces)",
    ),
    "faust.topics:Topic.__aiter__": (
        "838623ae001ec5d1",
        f"{BATCHES} take_batches (iterating the topic subscribes to it)",
    ),
    "faust.types.tuples:Message.ack": (
        "4751b72c4ed84153",
        f"{TRANSPORT} Consumer.ack_many (its reference count, inlined)",
    ),
    "faust.transport.consumer:Consumer.wait_empty": (
        "e4662fe24f094819",
        f"{BATCHES} take_batches (a rebalance waits for the tracked records)",
    ),
    "mode.utils.queues:FlowControlQueue.get": (
        "c14157e5ee641643",
        f"{BATCHES} take_batches (a get ends the queue's back pressure)",
    ),
    "mode.utils.queues:ThrowableQueue.get_nowait": ("d42b1be9219a0e6e", f"{BATCHES} take_batches"),
    "mode.utils.queues:ThrowableQueue.empty": ("737285dcae32c653", f"{BATCHES} take_batches"),
    "faust.transport.drivers.aiokafka:Producer._ensure_producer": (
        "5592a4bbdf251325",
        f"{INTERNALS} aiokafka_producer",
    ),
    "faust.tables.manager:TableManager.on_rebalance": (
        "2d2c23a07bf54328",
        f"{TABLE_STORE} PartitionStore (stores assigned before recovery reads offsets)",
    ),
    "faust.tables.recovery:Recovery._add": (
        "1584a197b11bf835",
        f"{TABLE_STORE} PartitionStore.persisted_offset (read once per assigned partition)",
    ),
    "faust.stores.rocksdb:Store._db_for_partition": (
        "cb7e67d5f9efc4bc",
        f"{TABLE_STORE} PartitionStore",
    ),
    "faust.stores.rocksdb:Store._dbs_for_actives": (
        "28ffca271cde5b06",
        f"{TABLE_STORE} PartitionStore.get_active",
    ),
    "faust.stores.rocksdb:Store.partition_path": (
        "0cc4eae7dc33fcf1",
        f"{TABLE_STORE} PartitionStore._set_aside, ._check",
    ),
}


def upstream(name: str) -> object:
    """The object named ``module:Class.attribute`` (as defined, not inherited)."""
    module, qualname = name.split(":")
    found: object = importlib.import_module(module)
    for part in qualname.split("."):
        found = vars(found)[part] if isinstance(found, type) else getattr(found, part)
    return found


def source_hash(obj: object) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]  # type: ignore[arg-type]


def overridden_upstream() -> set[str]:
    """Every upstream method a patch class overrides, as ``module:Class.name``."""
    names = set()
    for cls in PATCH_CLASSES:
        for name, value in vars(cls).items():
            if not callable(value) or isinstance(value, type):
                continue
            if name.startswith("__") and name != "__init__":
                continue
            owner = next((base for base in cls.__mro__[1:] if name in vars(base)), None)
            if owner is not None and owner.__module__.split(".")[0] in (
                "faust",
                "mode",
                "aiokafka",
            ):
                names.add(f"{owner.__module__}:{owner.__qualname__}.{name}")
    return names


@pytest.mark.parametrize("distribution", sorted(PINS))
def test_installed_versions_are_the_pinned_ones(distribution: str) -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pinned = [d for d in dependencies if d.split("==")[0].split("[")[0] == distribution]
    assert pinned and pinned[0].endswith(f"=={PINS[distribution]}"), (
        f"pyproject.toml pins {pinned} but the patches were checked against "
        f"{distribution}=={PINS[distribution]}"
    )
    assert version(distribution) == PINS[distribution], (
        f"{distribution} {version(distribution)} is installed, the patches were written for "
        f"{PINS[distribution]}: revisit every patch listed in {__name__}"
    )


def test_every_override_is_pinned() -> None:
    unpinned = overridden_upstream() - set(OVERRIDDEN)
    assert not unpinned, f"overrides of upstream code with no pinned source hash: {unpinned}"
    gone = set(OVERRIDDEN) - overridden_upstream()
    assert not gone, f"pinned overrides no patch makes any more (remove them): {gone}"


@pytest.mark.parametrize("name", sorted({**OVERRIDDEN, **RELIED_ON}))
def test_upstream_source_is_unchanged(name: str) -> None:
    pinned, patch = {**OVERRIDDEN, **RELIED_ON}[name]
    try:
        found = source_hash(upstream(name))
    except (KeyError, AttributeError, ImportError):
        pytest.fail(f"{name} is gone upstream: revisit {patch}")
    assert found == pinned, (
        f"{name} changed upstream (source hash {found}, pinned {pinned}): revisit {patch}, "
        "then pin the new hash"
    )
