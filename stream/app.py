"""``faust -A stream.app worker``: the worker's entry point, as the design names it.

The one place that reads the environment for a worker and may exit: the
app itself is built by :func:`stream.worker.build.build_worker`, which
neither. Nothing else imports this module.

A setting the worker cannot run with ends it here, before it reaches Kafka,
with one line on stderr and exit status 2 (as the CLI's own refusals):
no masking key (it never processes PII unmasked), unusable Kafka security
settings, a malformed value, or a data directory it cannot create or write.
"""

from __future__ import annotations

import sys

import faust

from stream.common import settings as settings_module
from stream.common.kafka_security import KafkaSecurityError
from stream.core.keyring import KeyRingError
from stream.worker import data_dir
from stream.worker.build import build_worker

# The exit status of a refused setting, as stream.common.errors.CommandError's.
REFUSED = 2


def _worker_app() -> faust.App:
    try:
        settings = settings_module.load()
        worker = build_worker(settings)
        # Once every other setting is known good (a refused start leaves no
        # directory behind), and before Faust, which creates it only once
        # running and without its parents.
        data_dir.prepare(settings.data_dir)
        return worker
    except (KeyRingError, KafkaSecurityError, data_dir.DataDirError, ValueError) as exc:
        print(f"maskstream worker: {exc}", file=sys.stderr)
        sys.exit(REFUSED)


app = _worker_app()

__all__ = ["app"]
