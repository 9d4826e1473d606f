"""Log output: readable lines by default, one JSON object per line on request.

``MASKSTREAM_LOG_FORMAT=json`` switches the CLI, the bridge and the workers
to JSON lines for log shippers. Only the record's own message is written:
callers never put message bodies or PII in log messages, and this module adds
nothing from the record's arguments beyond the formatted message.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and error type)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def wants_json() -> bool:
    return os.environ.get("MASKSTREAM_LOG_FORMAT", "text").strip().lower() == "json"


def configure(level: int = logging.INFO) -> None:
    """Set up the root logger of a CLI process in the configured format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if wants_json() else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def faust_logging_config() -> dict[str, Any] | None:
    """A ``logging.config.dictConfig`` for Faust workers, or None for Faust's own."""
    if not wants_json():
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["stderr"], "level": "INFO"},
    }
