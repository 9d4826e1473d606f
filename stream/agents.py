"""The pipeline's agents, in the order data flows through them.

1. ``mask_logins``: ``logins.raw`` -> ``logins.masked`` or ``logins.rejected``
2. ``sink_logins``: ``logins.masked`` -> ``user_logins`` rows, ``seen_devices``
3. ``sink_rejections``: ``logins.rejected`` -> ``rejected_logins`` rows

Sinks consume with ``stream.take()``: Faust acknowledges a batch's offsets
only after the loop body returns, and the body returns only once the batch
is committed in PostgreSQL, so a crash replays the batch instead of losing it.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import faust
from aiokafka import AIOKafkaProducer
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from stream import watchdog
from stream.app import (
    app,
    masked_topic,
    metrics,
    raw_topic,
    rejected_topic,
    seen_devices,
    settings,
    stats,
)
from stream.keyring import load_keyring
from stream.masking import Masker
from stream.producing import Deliveries, send_many, until_delivered
from stream.records import MaskedLogin, RawLogin, Rejection, SeenDevice
from stream.rows import device_summaries, login_row, logins_spec, rejection_row, rejections_spec
from stream.seen import store_entries
from stream.sink import PostgresSink, Row
from stream.transform import mask_login, reject

log = logging.getLogger(__name__)

TABLES = (settings.logins_table, settings.rejections_table)
# Counted with the rejections, though no row or rejection can be written for it.
UNDECODABLE_MASKED = "undecodable record on the masked topic"


@app.agent(raw_topic)
async def mask_logins(stream: faust.StreamT[bytes]) -> None:
    masker = Masker(load_keyring(settings))
    async for events in stream.take_events(
        settings.mask_batch_size, within=settings.mask_batch_seconds
    ):
        outcomes = [mask_login(raw_login(event), masker) for event in events]
        # take_events acknowledges the batch when this body returns, so it
        # returns only once Kafka holds every masked record and rejection.
        await until_delivered(partial(publish, outcomes), "a masked batch")
        for outcome in outcomes:
            if isinstance(outcome, MaskedLogin):
                stats.masked += 1
                stats.extra_fields_dropped += outcome.dropped_fields
            else:
                stats.rejections[outcome.reason] += 1


def raw_login(event: faust.EventT) -> RawLogin:
    message = event.message
    return RawLogin.from_kafka(
        body=event.value,
        headers=dict(event.headers or {}),
        key=message.key,
        timestamp_ms=int(message.timestamp * 1000),
        position=f"{message.topic}:{message.partition}:{message.offset}",
    )


async def publish(outcomes: list[MaskedLogin | Rejection]) -> Deliveries:
    """Masked logins to the masked topic keyed by masked device id, a batch per
    partition; rejections (rare) through Faust to the rejected topic."""
    masked = [
        (outcome.masked_device_id.encode(), outcome.dumps())
        for outcome in outcomes
        if isinstance(outcome, MaskedLogin)
    ]
    deliveries = await send_many(kafka_producer(), masked_topic.get_topic_name(), masked)
    rejections = [outcome for outcome in outcomes if isinstance(outcome, Rejection)]
    return deliveries + await send_rejections(rejections)


async def send_rejections(rejections: list[Rejection]) -> Deliveries:
    """Submit *rejections* to the rejected topic; the futures resolve once
    Kafka acknowledges them."""
    return [
        await rejected_topic.send(key=rejection.message_id, value=rejection)
        for rejection in rejections
    ]


def kafka_producer() -> AIOKafkaProducer:
    """The aiokafka producer inside Faust's, which Faust flushes before commits."""
    return app.producer._ensure_producer()  # type: ignore[attr-defined]


@app.agent(masked_topic)
async def sink_logins(stream: faust.StreamT[bytes]) -> None:
    masker = Masker(load_keyring(settings))
    sink = PostgresSink(settings.database_url, logins_spec(settings.logins_table), TABLES)
    try:
        async for events in stream.take_events(
            settings.sink_batch_size, within=settings.sink_batch_seconds
        ):
            batch = decode_masked(events)
            started = time.perf_counter()
            outcome = await sink.write([row for _, row in batch])
            metrics.observe_batch(settings.logins_table, len(batch), time.perf_counter() - started)
            stats.rows_written += outcome.inserted
            stats.rows_already_present += len(batch) - outcome.inserted - len(outcome.refused)
            if outcome.refused:
                refusals = refused_rejections(batch, outcome.refused, masker)
                # The rows' offsets move on when this body returns: the
                # rejections must be in Kafka by then, or they are lost.
                await until_delivered(partial(send_rejections, refusals), "refused rows")
            devices = {login.masked_device_id for login, _ in batch}
            summaries = await sink.retrying(
                partial(device_summaries, table=settings.logins_table, device_ids=devices),
                "reading device summaries",
            )
            store = partial(store_entries, seen_devices, kafka_producer(), summaries)
            await until_delivered(store, "seen_devices entries")
    finally:
        await sink.close()


def refused_rejections(
    batch: list[tuple[MaskedLogin, Row]], refused: list[tuple[int, str]], masker: Masker
) -> list[Rejection]:
    """A rejection for each login whose row the database refused, counted by reason."""
    rejections = []
    for index, reason in refused:
        login = batch[index][0]
        stats.rejections[reason] += 1
        raw = RawLogin(login.message_id, login.sent_at_ms, login.dumps())
        rejections.append(reject(raw, reason, masker))
    return rejections


def decode_masked(events: list[faust.EventT]) -> list[tuple[MaskedLogin, Row]]:
    """The masked logins among *events*, each with its row; anything else on
    the topic is logged with its position (never its content) and counted.

    Nothing may raise here: take_events would acknowledge the batch anyway.
    """
    decoded = []
    for event in events:
        try:
            login = MaskedLogin.loads(event.value)
            decoded.append((login, login_row(login)))
        except (TypeError, ValueError) as exc:
            message = event.message
            log.error(
                "record %s:%s:%s on the masked topic skipped: %s",
                message.topic,
                message.partition,
                message.offset,
                exc,
            )
            stats.rejections[UNDECODABLE_MASKED] += 1
    return decoded


@app.agent(rejected_topic)
async def sink_rejections(stream: faust.StreamT[Rejection]) -> None:
    sink = PostgresSink(settings.database_url, rejections_spec(settings.rejections_table), TABLES)
    try:
        async for batch in stream.take(
            settings.sink_batch_size, within=settings.sink_batch_seconds
        ):
            started = time.perf_counter()
            outcome = await sink.write([rejection_row(r) for r in batch])
            metrics.observe_batch(
                settings.rejections_table, len(batch), time.perf_counter() - started
            )
            for index, reason in outcome.refused:
                # Rejections hold only ids, reasons and tokens; this should not
                # happen, and if it does the message id says which one.
                log.error("rejection of message %s not stored: %s", batch[index].message_id, reason)
    finally:
        await sink.close()


@app.timer(interval=30.0)
async def log_stats() -> None:
    log.info("pipeline: %s", stats.summary())
    watchdog.report_stopped_agents((mask_logins, sink_logins, sink_rejections))
    await watchdog.repair_stalled_partitions(app)


@app.page("/seen-devices/{device}/")
class SeenDeviceView(View):
    """``GET /seen-devices/<masked device id>/``: that device's ``seen_devices`` entry,
    answered by whichever worker owns the device's partition."""

    @app.table_route(table=seen_devices, match_info="device")
    async def get(self, request: Request, device: str) -> Response:
        entry = seen_devices.get(device.encode())
        if entry is None:
            return self.json({"error": "device not seen", "device": device}, status=404)
        fields = SeenDevice.loads(entry).asdict()
        return self.json({"device": device, **fields, "observed_at": time.time()})


@app.page("/metrics")
async def prometheus_metrics(web: faust.web.Web, request: Request) -> Response:
    # aiohttp takes the charset separately; the exposition format is UTF-8 text.
    content_type = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")
    return web.bytes(metrics.exposition(), content_type=content_type)


@app.page("/health")
async def health(web: faust.web.Web, request: Request) -> Response:
    """Liveness: the worker's event loop answers."""
    return web.json({"status": "ok"})


@app.page("/ready")
async def ready(web: faust.web.Web, request: Request) -> Response:
    """Readiness: partitions assigned and tables recovered, not rebalancing."""
    recovered = app.tables.recovery.completed.is_set()
    is_ready = recovered and not app.rebalancing
    return web.json(
        {"ready": is_ready, "rebalancing": app.rebalancing, "recovered": recovered},
        status=200 if is_ready else 503,
    )
