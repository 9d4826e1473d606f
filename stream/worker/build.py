"""Build a worker: the Faust app with its agent, pages, self-check and partition upkeep."""

from __future__ import annotations

import faust

from stream.common.settings import Settings
from stream.worker.agents import register_agent
from stream.worker.app import build_app
from stream.worker.pages import register_pages
from stream.worker.partition_upkeep import register_partition_upkeep


def build_worker(settings: Settings) -> faust.App:
    """The app ``faust -A stream.app worker`` runs, as *settings* describe it
    (raises without a key ring, or with unusable Kafka security settings)."""
    worker = build_app(settings)
    register_pages(worker, register_agent(worker))
    register_partition_upkeep(worker)
    return worker.app
