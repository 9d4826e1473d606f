"""The bridge process: SQS, Kafka, the forwarder and the metrics endpoints wired
together, and run until a signal or idleness stops them.

:mod:`bridge.cli` turns flags and environment into checked
:class:`~stream.common.settings.Settings`; this module builds the adapters
(:class:`bridge.sqs.queue.SqsQueue`, :class:`bridge.producer.KafkaSink`), the
:class:`bridge.forwarder.Forwarder` between them and, if a port is set, the
``/metrics``, ``/health`` and ``/ready`` endpoints, and keeps library logs
free of message bodies and retry noise.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stream.common.settings import Settings

if TYPE_CHECKING:  # serve() imports the parts itself, when it runs
    from bridge.producer import KafkaSink

log = logging.getLogger("bridge")

# Libraries that log request and response payloads, i.e. message bodies, at
# DEBUG: they are capped at INFO even under --verbose so no body reaches a log.
PAYLOAD_LOGGERS = ("botocore", "boto3", "urllib3", "aiohttp", "aiokafka")
# A library message repeated within this many seconds is dropped from the log.
LIBRARY_REPEAT_SECONDS = 30.0


def missing_codec(name: str) -> str | None:
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


def kafka_security_problem(settings: Settings) -> str | None:
    """Why the Kafka security settings cannot be used (contradictory, or a TLS
    file missing, unreadable or not PEM), or None: checked before the bridge
    runs, so a bad path is one line rather than a traceback from the producer."""
    from stream.common.kafka_security import KafkaSecurity, KafkaSecurityError

    try:
        KafkaSecurity.from_settings(settings).ssl_context()
    except KafkaSecurityError as exc:
        return str(exc)
    return None


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


def run(settings: Settings, exit_when_idle: float | None) -> int:
    """Run the bridge in this process until it stops; return the exit status."""
    configure_library_logging()
    return asyncio.run(serve(settings, exit_when_idle))


def sink_started(sink: KafkaSink) -> Callable[[], bool]:
    """Whether *sink*'s Kafka producer has started, asked when the endpoints need it."""
    return lambda: bool(sink.started)


async def serve(settings: Settings, exit_when_idle: float | None) -> int:
    """Assemble SQS, Kafka and a forwarder per queue; run until a signal or idleness stops it.

    Each queue of ``SQS_QUEUE_URL`` (a comma-separated list) gets a forwarder
    of its own: its pollers, in-flight bound, producer and stop sequence, so
    a slow or failing queue never holds another back. The bridge stops when
    every forwarder has; one that stops on an error stops the others.
    """
    from bridge.config import ForwarderConfig
    from bridge.forwarder import Forwarder
    from bridge.metrics import WatchedQueue, queue_name
    from bridge.producer import KafkaSink
    from bridge.sqs.client import SqsClient
    from bridge.sqs.errors import SqsRequestError
    from bridge.sqs.queue import SqsQueue

    config = ForwarderConfig.from_settings(settings, exit_when_idle)
    lanes: list[WatchedQueue] = []
    forwarders: list[Forwarder] = []
    for url in settings.sqs_queue_urls:
        try:
            client = SqsClient.from_settings(
                settings,
                queue_url=url,
                # Every poller's long poll, the deletes, the visibility calls and the depth sample.
                connections=config.poll_ceiling + config.sqs_calls + 1,
                read_timeout=config.receive_wait + 30,
            )
        except SqsRequestError as exc:
            log.error("cannot reach SQS: %s", exc)
            return 2
        queue, sink = SqsQueue(client, url), KafkaSink(settings)
        forwarders.append(Forwarder(queue, sink, config))
        lanes.append(WatchedQueue(queue_name(url), forwarders[-1], queue, sink_started(sink)))
    endpoints = await _start_endpoints(settings.bridge_metrics_port, lanes)

    def stop_all(reason: str) -> None:
        for forwarder in forwarders:
            forwarder.request_stop(reason)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all, sig.name)
    log.info(
        "bridge starting: %s %s -> topic %s on %s (%d pollers, at most %d in flight%s)",
        "queues" if len(lanes) > 1 else "queue",
        ", ".join(settings.sqs_queue_urls),
        settings.topics.raw,
        settings.kafka_bootstrap_servers,
        config.pollers,
        config.max_in_flight,
        " each" if len(lanes) > 1 else "",
    )

    async def run(forwarder: Forwarder) -> bool:
        healthy = await forwarder.run()
        if not healthy:
            stop_all("another queue's forwarder stopped on an error")
        return healthy

    try:
        results = await asyncio.gather(*(run(f) for f in forwarders))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if endpoints is not None:
            await endpoints.stop()
        for lane in lanes:
            await lane.queue.close()
    return 0 if all(results) else 1


async def _start_endpoints(port: int, lanes: list[Any]) -> Any:
    """``/metrics``, ``/health`` and ``/ready`` on *port* (None if 0 or taken)."""
    if not port:
        return None
    from bridge.metrics import BridgeEndpoints

    endpoints = BridgeEndpoints(lanes)
    try:
        await endpoints.start(port)
    except OSError as exc:  # losing metrics must not stop the data
        log.error("metrics disabled: port %d unavailable (%s)", port, exc)
        return None
    return endpoints
