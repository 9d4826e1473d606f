"""Command-line options of the bridge, shared by ``python -m bridge`` and ``maskstream bridge``.

Every option is a :class:`stream.common.settings.Settings` field that a flag can
override; one table drives the parser, the help text and the override, so a
new knob is added in exactly one place. This module imports nothing heavy:
boto3 and aiokafka load only when the bridge actually runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stream.common import settings as settings_module
from stream.common.errors import CommandError
from stream.common.settings import Settings

log = logging.getLogger("bridge")

DESCRIPTION = (
    "Forward SQS messages to the raw Kafka topic unchanged, deleting each from SQS "
    "only after Kafka acknowledged it. Stops cleanly on SIGTERM or SIGINT."
)

COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
# Libraries that log request and response payloads, i.e. message bodies, at
# DEBUG: they are capped at INFO even under --verbose so no body reaches a log.
PAYLOAD_LOGGERS = ("botocore", "boto3", "urllib3", "aiokafka")
# A library message repeated within this many seconds is dropped from the log.
LIBRARY_REPEAT_SECONDS = 30.0


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
    Option("--queue-url", "sqs_queue_url", "SQS_QUEUE_URL", "URL of the SQS queue"),
    Option(
        "--sqs-endpoint-url",
        "sqs_endpoint_url",
        "AWS_ENDPOINT_URL_SQS",
        "SQS endpoint of a local server such as ElasticMQ; empty means AWS",
    ),
    Option("--region", "aws_region", "AWS_DEFAULT_REGION", "AWS region of the queue"),
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
        (bool(settings.sqs_queue_url), "no queue: set SQS_QUEUE_URL or pass --queue-url"),
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


def _check_codec(name: str) -> str | None:
    """Name the missing library if the compression codec cannot be used."""
    from aiokafka import codec

    available = {
        "gzip": codec.has_gzip,
        "snappy": codec.has_snappy,
        "lz4": codec.has_lz4,
        "zstd": codec.has_zstd,
    }
    check = available.get(name)
    if check is None or check():
        return None
    return f"compression {name!r} needs its Python library; install it or use --compression none"


class RepeatThrottle(logging.Filter):
    """Pass each distinct message of a library at most once per *interval* seconds.

    While Kafka is down aiokafka logs every reconnect attempt, ten times a
    second; the bridge's own outage lines say what matters, and the first
    occurrence of each library message is kept for the details.
    """

    def __init__(
        self, prefix: str, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._prefix = prefix
        self._interval = interval
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefix):
            return True
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            record.msg = f"{record.getMessage()} [{suppressed} similar lines suppressed]"
            record.args = None
        return True


def configure_library_logging() -> None:
    """Keep message bodies out of library debug logs, and library retry noise down."""
    for name in PAYLOAD_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)
    throttle = RepeatThrottle("aiokafka", interval=LIBRARY_REPEAT_SECONDS)
    for handler in logging.getLogger().handlers:
        handler.addFilter(throttle)


def run(args: argparse.Namespace) -> int:
    """Run the bridge with the settings from the environment and *args*; return the exit status."""
    settings = apply_overrides(settings_module.load(), args, BRIDGE_OPTIONS)
    errors = problems(settings, args.exit_when_idle)
    codec_error = _check_codec(settings.bridge_compression)
    if codec_error:
        errors.append(codec_error)
    if errors:
        raise CommandError("; ".join(errors))
    configure_library_logging()
    return asyncio.run(serve(settings, args.exit_when_idle))


async def serve(settings: Settings, exit_when_idle: float | None) -> int:
    """Assemble SQS, Kafka and the forwarder; run until a signal or idleness stops it."""
    from bridge.forwarder import Forwarder, ForwarderConfig
    from bridge.producer import KafkaSink
    from bridge.sqs import SqsQueue

    config = ForwarderConfig.from_settings(settings, exit_when_idle)
    queue = SqsQueue.from_settings(
        settings, pollers=config.poll_ceiling, controllers=config.sqs_calls
    )
    sink = KafkaSink(settings)
    forwarder = Forwarder(queue, sink, config)
    endpoints = None
    if settings.bridge_metrics_port:
        from bridge.metrics import BridgeCollector, BridgeEndpoints
        from bridge.sqs import make_client

        endpoints = BridgeEndpoints(
            BridgeCollector(forwarder.counters, lambda: forwarder.in_flight),
            # Ready once a producer has started, i.e. Kafka answered.
            lambda: getattr(sink, "_producer", None) is not None,
            make_client(settings, max_pool_connections=1),
            settings.sqs_queue_url,
        )
        try:
            await endpoints.start(settings.bridge_metrics_port)
        except OSError as exc:  # losing metrics must not stop the data
            log.error(
                "metrics disabled: port %d unavailable (%s)", settings.bridge_metrics_port, exc
            )
            endpoints = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, forwarder.request_stop, sig.name)
    log.info(
        "bridge starting: queue %s -> topic %s on %s (%d pollers, at most %d in flight)",
        settings.sqs_queue_url,
        settings.topics.raw,
        settings.kafka_bootstrap_servers,
        config.pollers,
        config.max_in_flight,
    )
    try:
        healthy = await forwarder.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if endpoints is not None:
            await endpoints.stop()
        queue.close()
    return 0 if healthy else 1
