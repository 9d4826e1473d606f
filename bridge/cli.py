"""Command-line options of the bridge, shared by ``python -m bridge`` and ``maskstream bridge``.

Every option is a :class:`stream.common.settings.Settings` field that a flag can
override; one table drives the parser, the help text and the override, so a
new knob is added in exactly one place. :func:`run` checks the result and
hands it to :mod:`bridge.app`, which assembles and runs the bridge. This
module imports nothing heavy: the SQS client and aiokafka load only when the bridge
actually runs.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bridge import app
from stream.common import settings as settings_module
from stream.common.errors import CommandError
from stream.common.settings import Settings

DESCRIPTION = (
    "Forward SQS messages to the raw Kafka topic unchanged, deleting each from SQS "
    "only after Kafka acknowledged it. Stops cleanly on SIGTERM or SIGINT."
)

COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True)
class Option:
    """One command-line flag overriding one settings field (``topics.raw`` for nested)."""

    flag: str
    field: str
    env: str
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        return self.field.replace(".", "__")


SQS_OPTIONS = (
    Option(
        "--queue-url",
        "sqs_queue_url",
        "SQS_QUEUE_URL",
        "URL of the SQS queue (the bridge takes several, separated by commas)",
    ),
    Option(
        "--sqs-endpoint-url",
        "sqs_endpoint_url",
        "AWS_ENDPOINT_URL_SQS",
        "SQS endpoint of a local server such as ElasticMQ; empty means AWS",
    ),
    Option("--region", "aws_region", "AWS_DEFAULT_REGION", "AWS region of the queue"),
    Option(
        "--sqs-protocol",
        "sqs_protocol",
        "MASKSTREAM_SQS_PROTOCOL",
        "SQS wire protocol: auto asks the server once (json, else query)",
        choices=("auto", "json", "query"),
    ),
)

KAFKA_OPTIONS = (
    Option(
        "--bootstrap-servers",
        "kafka_bootstrap_servers",
        "KAFKA_BOOTSTRAP_SERVERS",
        "Kafka bootstrap servers, host:port[,host:port...]",
    ),
    Option("--topic", "topics.raw", "MASKSTREAM_TOPIC_RAW", "raw topic the bodies go to"),
    Option(
        "--partitions",
        "topics.partitions",
        "MASKSTREAM_PARTITIONS",
        "partitions of the raw topic if the bridge creates it",
        int,
    ),
    Option(
        "--retention-hours",
        "topics.raw_retention_hours",
        "MASKSTREAM_RAW_RETENTION_HOURS",
        "retention of the raw topic (it holds PII in clear) if the bridge creates it",
        int,
    ),
)

TUNING_OPTIONS = (
    Option(
        "--pollers",
        "bridge_pollers",
        "MASKSTREAM_BRIDGE_POLLERS",
        "concurrent ReceiveMessage long polls at start and at the least",
        int,
    ),
    Option(
        "--max-pollers",
        "bridge_max_pollers",
        "MASKSTREAM_BRIDGE_MAX_POLLERS",
        "most concurrent long polls: pollers are added while polls come back full",
        int,
    ),
    Option(
        "--receive-linger-ms",
        "bridge_receive_linger_ms",
        "MASKSTREAM_BRIDGE_RECEIVE_LINGER_MS",
        "after a part-filled receive, wait up to this long so the next one carries more",
        int,
    ),
    Option(
        "--wait-seconds",
        "bridge_wait_seconds",
        "MASKSTREAM_BRIDGE_WAIT_SECONDS",
        "long-poll wait of each receive, 0-20 (at most half of --shutdown-timeout)",
        int,
    ),
    Option(
        "--max-in-flight",
        "bridge_max_in_flight",
        "MASKSTREAM_BRIDGE_MAX_IN_FLIGHT",
        "most messages received but not yet deleted; pollers wait at the bound",
        int,
    ),
    Option(
        "--visibility-timeout",
        "bridge_visibility_timeout",
        "MASKSTREAM_BRIDGE_VISIBILITY_TIMEOUT",
        "seconds a received message stays hidden; extended while Kafka is slow",
        int,
    ),
    Option(
        "--compression",
        "bridge_compression",
        "MASKSTREAM_BRIDGE_COMPRESSION",
        "Kafka compression codec",
        str,
        COMPRESSIONS,
    ),
    Option(
        "--linger-ms",
        "bridge_linger_ms",
        "MASKSTREAM_BRIDGE_LINGER_MS",
        "how long the producer waits to fill a batch",
        int,
    ),
    Option(
        "--batch-bytes",
        "bridge_batch_bytes",
        "MASKSTREAM_BRIDGE_BATCH_BYTES",
        "producer batch size per partition, bytes",
        int,
    ),
    Option(
        "--shutdown-timeout",
        "bridge_shutdown_timeout",
        "MASKSTREAM_BRIDGE_SHUTDOWN_TIMEOUT",
        "seconds a stop may take: await open polls, flush, delete, release the rest",
        float,
    ),
    Option(
        "--stats-interval",
        "bridge_stats_interval",
        "MASKSTREAM_BRIDGE_STATS_INTERVAL",
        "seconds between counter lines in the log",
        float,
    ),
    Option(
        "--metrics-port",
        "bridge_metrics_port",
        "MASKSTREAM_BRIDGE_METRICS_PORT",
        "port of /metrics, /health and /ready (0: none)",
        int,
    ),
)

BRIDGE_OPTIONS = SQS_OPTIONS + KAFKA_OPTIONS + TUNING_OPTIONS


def _field(settings: Settings, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _current_settings() -> Settings | None:
    """The settings from the environment, for help texts; None if the environment is bad."""
    try:
        return settings_module.load()
    except ValueError:
        return None


def _metavar(option: Option) -> str:
    if option.choices:
        return "{" + ",".join(option.choices) + "}"
    return option.flag.removeprefix("--").upper().replace("-", "_")


def add_options(
    parser: argparse.ArgumentParser, options: Sequence[Option], title: str | None = None
) -> None:
    """Add *options* to *parser*; each help names its variable and its current value."""
    current = _current_settings()
    group = parser.add_argument_group(title) if title else parser
    for option in options:
        now = f", now {_field(current, option.field)!r}" if current else ""
        group.add_argument(
            option.flag,
            dest=option.dest,
            type=option.type,
            choices=option.choices,
            default=None,
            metavar=_metavar(option),
            help=f"{option.help} (env {option.env}{now})",
        )


def add_bridge_arguments(parser: argparse.ArgumentParser) -> None:
    """Every bridge option, grouped as ``--help`` shows them."""
    add_options(parser, SQS_OPTIONS, "SQS")
    add_options(parser, KAFKA_OPTIONS, "Kafka")
    add_options(parser, TUNING_OPTIONS, "tuning")
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="exit 0 once the queue has returned nothing for SECONDS, every message "
        "received is forwarded and deleted, and no poll is open (default: run until "
        "SIGTERM or SIGINT)",
    )


def apply_overrides(
    settings: Settings, args: argparse.Namespace, options: Sequence[Option]
) -> Settings:
    """*settings* with every flag given on the command line replacing its field."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for option in options:
        value = getattr(args, option.dest, None)
        if value is None:
            continue
        parent, _, name = option.field.rpartition(".")
        if parent:
            nested.setdefault(parent, {})[name] = value
        else:
            top[name] = value
    for parent, values in nested.items():
        top[parent] = dataclasses.replace(getattr(settings, parent), **values)
    return dataclasses.replace(settings, **top)


def problems(settings: Settings, exit_when_idle: float | None) -> list[str]:
    """Everything wrong with a bridge configuration, as messages naming the fix."""
    checks = [
        (bool(settings.sqs_queue_urls), "no queue: set SQS_QUEUE_URL or pass --queue-url"),
        (settings.bridge_pollers >= 1, "--pollers must be at least 1"),
        (
            settings.bridge_max_pollers >= settings.bridge_pollers,
            "--max-pollers must be at least --pollers",
        ),
        (0 <= settings.bridge_wait_seconds <= 20, "--wait-seconds must be between 0 and 20"),
        (settings.bridge_max_in_flight >= 1, "--max-in-flight must be at least 1"),
        (
            2 <= settings.bridge_visibility_timeout <= 43_200,
            "--visibility-timeout must be between 2 and 43200 seconds",
        ),
        (
            settings.bridge_compression in COMPRESSIONS,
            f"--compression must be one of {COMPRESSIONS}",
        ),
        (settings.bridge_linger_ms >= 0, "--linger-ms must not be negative"),
        (settings.bridge_receive_linger_ms >= 0, "--receive-linger-ms must not be negative"),
        (settings.bridge_batch_bytes >= 1024, "--batch-bytes must be at least 1024"),
        (settings.bridge_shutdown_timeout > 0, "--shutdown-timeout must be positive"),
        (settings.bridge_stats_interval > 0, "--stats-interval must be positive"),
        (settings.topics.partitions >= 1, "--partitions must be at least 1"),
        (settings.topics.raw_retention_hours >= 1, "--retention-hours must be at least 1"),
        (exit_when_idle is None or exit_when_idle > 0, "--exit-when-idle must be positive"),
    ]
    return [message for ok, message in checks if not ok]


def run(args: argparse.Namespace) -> int:
    """Run the bridge with the settings from the environment and *args*; return the exit status."""
    try:
        environment = settings_module.load()
    except ValueError as exc:  # a malformed variable: one line, not a traceback
        raise CommandError(str(exc)) from None
    settings = apply_overrides(environment, args, BRIDGE_OPTIONS)
    errors = problems(settings, args.exit_when_idle)
    for found in (
        app.missing_codec(settings.bridge_compression),
        app.kafka_security_problem(settings),
    ):
        if found:
            errors.append(found)
    if errors:
        raise CommandError("; ".join(errors))
    return app.run(settings, args.exit_when_idle)
