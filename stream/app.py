"""``faust -A stream.app worker``: the worker's entry point, as the design names it.

The one place that reads the environment for a worker and may exit: the
app itself is built by :func:`stream.worker.build.build_worker`, which
neither. Nothing else imports this module.

A worker refuses to start without a masking key: it exits with one line
naming the variables to set, and never processes PII unmasked.
"""

from __future__ import annotations

import sys

import faust

from stream.common import settings as settings_module
from stream.common.kafka_security import KafkaSecurityError
from stream.core.keyring import KeyRingError
from stream.worker.build import build_worker


def _worker_app() -> faust.App:
    try:
        return build_worker(settings_module.load())
    except (KeyRingError, KafkaSecurityError, ValueError) as exc:
        sys.exit(f"maskstream worker: {exc}")


app = _worker_app()

__all__ = ["app"]
