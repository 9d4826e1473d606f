"""What ``maskstream status`` shows, gathered and formatted.

An operator asks one question: is data moving, and if not, where is it stuck?
The answer spans three services, so a snapshot reads each of them at once:

- SQS: messages waiting, in flight (received, not yet deleted by the bridge)
  and in the dead-letter queue named by the queue's ``RedrivePolicy``;
- Kafka: the workers' consumer group lag, per partition, on the pipeline's
  topics (what the workers have not processed yet);
- PostgreSQL: rows, rejections (top reasons), distinct masked devices, and
  the ingest rate.

A service that cannot be asked becomes a :class:`Problem`, shown on its own
line, while the others are still shown: status is most needed when something
is down. Every network call is bounded by a short timeout, and the three
services are asked concurrently, so an unreachable one costs a few seconds at
most. Gathering returns plain data; :func:`render` turns it into text, so
the formatting is tested without any server.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from stream.common.settings import Settings

DEFAULT_TIMEOUT = 3.0
TOP_REASONS = 5
RATE_WINDOW_SECONDS = 60
# Partitions shown on one line of a topic's lag; more wrap onto further lines.
PARTITIONS_PER_LINE = 8
# ANSI: cursor home, clear to end of line, clear to end of screen, clear screen.
HOME, CLEAR_LINE, CLEAR_BELOW, CLEAR_SCREEN = "\x1b[H", "\x1b[K", "\x1b[J", "\x1b[2J"

SQS_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "RedrivePolicy",
)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Problem:
    """A service that could not be asked, or answered with an error.

    ``target`` is where we looked (URL, host:port), or None when nothing is
    configured; ``reason`` is a few words, never a stack trace.
    """

    reason: str
    target: str | None = None
    verb: str = "unreachable"

    def line(self, service: str) -> str:
        if self.target is None:
            return f"{service}: {self.reason}"
        return f"{service}: {self.verb} at {self.target} ({self.reason})"


@dataclass(frozen=True)
class DeadLetters:
    """The dead-letter queue from the source queue's redrive policy."""

    name: str
    max_receive_count: int | None
    depth: int | None = None
    problem: str | None = None


@dataclass(frozen=True)
class QueueDepth:
    url: str
    visible: int
    in_flight: int
    delayed: int
    dead_letters: DeadLetters | None  # None: the queue has no redrive policy


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group has committed nothing here yet
    end: int
    lag: int


@dataclass(frozen=True)
class TopicLag:
    topic: str
    partitions: tuple[PartitionLag, ...] | None  # None: the topic does not exist

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions or ())


@dataclass(frozen=True)
class ConsumerLag:
    servers: str
    group: str
    topics: tuple[TopicLag, ...]


@dataclass(frozen=True)
class DatabaseCounts:
    """Counts from PostgreSQL; None where the table or column does not exist yet."""

    target: str
    rows: int | None
    devices: int | None
    rows_in_window: int | None
    rejections: int | None
    top_reasons: tuple[tuple[str, int], ...] = ()
    tables: tuple[str, str] = ("user_logins", "rejected_logins")


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    monotonic: float
    sqs: QueueDepth | Problem
    kafka: ConsumerLag | Problem
    postgres: DatabaseCounts | Problem

    @property
    def problems(self) -> list[str]:
        """Names of the services shown as problems (the exit status depends on it)."""
        parts = {"sqs": self.sqs, "kafka": self.kafka, "postgres": self.postgres}
        return [name for name, part in parts.items() if isinstance(part, Problem)]


@dataclass(frozen=True)
class Rate:
    per_second: float
    basis: str


# --------------------------------------------------------------------------- errors


def _chain(exc: BaseException) -> Iterable[BaseException]:
    """*exc* and the exceptions it was raised from, innermost last."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def _libpq_reason(message: str) -> str:
    """The useful end of a libpq message: 'connection refused', 'database "x" does not exist'."""
    first = message.strip().splitlines()[0] if message.strip() else message
    if "failed: " in first:
        first = first.rsplit("failed: ", 1)[1]
    first = first.removeprefix("FATAL:").strip()
    return first[:1].lower() + first[1:] if first else "connection failed"


def _socket_error(exc: BaseException) -> OSError | None:
    """The socket-level error behind *exc*, if there is one."""
    for link in _chain(exc):
        if isinstance(link, OSError) and (
            link.errno is not None or isinstance(link, TimeoutError | socket.gaierror)
        ):
            return link
    return None


def describe_error(exc: BaseException) -> str:
    """A few words saying why a call failed, for a status line (never a traceback).

    Socket errors are looked for anywhere in the exception's chain, since
    boto3 and aiokafka wrap them; PostgreSQL's message is cut to its reason.
    """
    socket_error = _socket_error(exc)
    if socket_error is not None:
        return _os_reason(socket_error)
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    if type(exc).__module__.startswith("psycopg"):
        return _libpq_reason(str(exc))
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- SQS


def parse_redrive_policy(raw: str | None) -> tuple[str, str | None, int | None] | None:
    """(dead-letter queue name, owner account, max receive count) from a RedrivePolicy.

    The policy names the queue by ARN (``arn:aws:sqs:REGION:ACCOUNT:NAME``);
    AWS writes maxReceiveCount as a string, ElasticMQ as a number.
    """
    if not raw:
        return None
    try:
        policy = json.loads(raw)
        arn = str(policy["deadLetterTargetArn"])
    except (ValueError, KeyError, TypeError):
        return None
    parts = arn.split(":")
    name = parts[-1]
    account = parts[4] if len(parts) >= 6 and parts[4] else None
    try:
        count: int | None = int(policy.get("maxReceiveCount"))
    except (TypeError, ValueError):
        count = None
    return name, account, count


def _dead_letters(client: Any, policy: tuple[str, str | None, int | None]) -> DeadLetters:
    name, account, max_receive_count = policy
    try:
        lookup = {"QueueName": name}
        if account:
            lookup["QueueOwnerAWSAccountId"] = account
        url = client.get_queue_url(**lookup)["QueueUrl"]
        attributes = client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
    except Exception as exc:  # shown next to the main queue's figures
        return DeadLetters(name, max_receive_count, problem=describe_error(exc))
    return DeadLetters(name, max_receive_count, int(attributes["ApproximateNumberOfMessages"]))


def queue_depth(settings: Settings, timeout: float) -> QueueDepth | Problem:
    """Depth of the configured queue and of its dead-letter queue (blocking)."""
    from bridge.sqs import make_client

    url = settings.sqs_queue_url
    if not url:
        return Problem("not configured (set SQS_QUEUE_URL)")
    try:
        client = make_client(settings, max_pool_connections=2, read_timeout=timeout)
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=list(SQS_ATTRIBUTES))[
            "Attributes"
        ]
    except Exception as exc:
        return Problem(describe_error(exc), url, _verb(exc))
    policy = parse_redrive_policy(attributes.get("RedrivePolicy"))
    return QueueDepth(
        url=url,
        visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        dead_letters=_dead_letters(client, policy) if policy else None,
    )


def _verb(exc: BaseException) -> str:
    """'unreachable' when the network failed, 'error' when the service or client said no."""
    return "unreachable" if _socket_error(exc) is not None else "error"


# --------------------------------------------------------------------------- Kafka


def parse_servers(servers: str) -> list[tuple[str, int]]:
    """``host:port[,host:port...]`` as pairs (port 9092 when omitted)."""
    pairs = []
    for item in servers.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, "9092"
        pairs.append((host.strip("[]"), int(port)))
    return pairs


async def _probe(servers: Sequence[tuple[str, int]], timeout: float) -> OSError | None:
    """None if a TCP connection to any bootstrap server opens, else the first error.

    aiokafka reports an unreachable cluster as 'Unable to bootstrap' without
    the socket's reason; this probe finds the reason (refused, unknown host,
    timed out) in well under the timeout.
    """
    first: OSError | None = None
    for host, port in servers:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except OSError as exc:  # TimeoutError included
            first = first or exc
            continue
        writer.close()
        return None
    return first or OSError(errno.EINVAL, "no bootstrap servers configured")


def partition_lags(
    partitions: Iterable[int],
    committed: dict[int, int],
    beginning: dict[int, int],
    end: dict[int, int],
) -> tuple[PartitionLag, ...]:
    """Lag of each partition: end offset minus the committed offset.

    Where the group has committed nothing (or a negative offset), the workers
    will start from the log start (auto offset reset: earliest), so the lag is
    everything still retained.
    """
    lags = []
    for partition in sorted(partitions):
        offset = committed.get(partition)
        if offset is not None and offset < 0:
            offset = None
        start = offset if offset is not None else beginning.get(partition, 0)
        last = end.get(partition, 0)
        lags.append(PartitionLag(partition, offset, last, max(0, last - start)))
    return tuple(lags)


async def consumer_lag(settings: Settings, timeout: float) -> ConsumerLag | Problem:
    """The workers' group lag on the pipeline's topics (the group is the Faust app id)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaConnectionError

    servers = settings.kafka_bootstrap_servers
    try:
        pairs = parse_servers(servers)
    except ValueError:
        return Problem("not a host:port list", servers, "invalid")
    refused = await _probe(pairs, timeout)
    if refused is not None:
        return Problem(describe_error(refused), servers)
    topics = (settings.topics.raw, settings.topics.masked, settings.topics.rejected)
    timeout_ms = int(timeout * 1000)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=timeout_ms)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, request_timeout_ms=timeout_ms
    )
    try:
        await admin.start()
        await consumer.start()
        # Metadata for all topics: naming missing ones could auto-create them.
        described = {t["topic"]: t for t in await admin.describe_topics()}
        offsets = await admin.list_consumer_group_offsets(settings.app_id)
        tps = [
            TopicPartition(topic, p["partition"])
            for topic in topics
            if topic in described
            for p in described[topic]["partitions"]
        ]
        beginning = await consumer.beginning_offsets(tps) if tps else {}
        end = await consumer.end_offsets(tps) if tps else {}
    except KafkaConnectionError:
        # The TCP probe connected, so something listens there, but not Kafka
        # (or a broker that advertises an address this host cannot reach).
        return Problem("port open, but no Kafka broker answered", servers)
    except Exception as exc:
        return Problem(describe_error(exc), servers, "error")
    finally:
        await consumer.stop()
        await admin.close()
    lags = []
    for topic in topics:
        if topic not in described:
            lags.append(TopicLag(topic, None))
            continue
        mine = [tp for tp in tps if tp.topic == topic]
        lags.append(
            TopicLag(
                topic,
                partition_lags(
                    (tp.partition for tp in mine),
                    {tp.partition: offsets[tp].offset for tp in mine if tp in offsets},
                    {tp.partition: beginning[tp] for tp in mine},
                    {tp.partition: end[tp] for tp in mine},
                ),
            )
        )
    return ConsumerLag(servers, settings.app_id, tuple(lags))


# --------------------------------------------------------------------------- PostgreSQL


def database_target(url: str) -> str:
    """``host:port/dbname`` of a libpq URI, without user or password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:
        return "DATABASE_URL (unparsable)"
    host = info.get("host") or "localhost"
    return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def _existing(conn: Any, names: Sequence[str]) -> set[str]:
    rows = conn.execute(
        "SELECT name FROM unnest(%s::text[]) AS name "
        "WHERE to_regclass(quote_ident(name)) IS NOT NULL",
        (list(names),),
    ).fetchall()
    return {row[0] for row in rows}


def _has_column(conn: Any, table: str, column: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s AND column_name = %s",
        (table, column),
    ).fetchone()
    return row is not None


def _count_logins(conn: Any, table: str) -> tuple[int, int, int | None]:
    from psycopg import sql

    # A table from before the workers' migration has no ingested_at: no rate then.
    window = (
        sql.SQL("count(*) FILTER (WHERE ingested_at >= now() - make_interval(secs => {}))").format(
            sql.Literal(RATE_WINDOW_SECONDS)
        )
        if _has_column(conn, table, "ingested_at")
        else sql.SQL("NULL")
    )
    query = sql.SQL("SELECT count(*), count(DISTINCT masked_device_id), {} FROM {}").format(
        window, sql.Identifier(table)
    )
    rows, devices, recent = conn.execute(query).fetchone()
    return int(rows), int(devices), None if recent is None else int(recent)


def _count_rejections(conn: Any, table: str) -> tuple[int, tuple[tuple[str, int], ...]]:
    from psycopg import sql

    name = sql.Identifier(table)
    total = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()[0]
    top = conn.execute(
        sql.SQL(
            "SELECT reason, count(*) FROM {} GROUP BY reason "
            "ORDER BY count(*) DESC, reason LIMIT %s"
        ).format(name),
        (TOP_REASONS,),
    ).fetchall()
    return int(total), tuple((str(reason), int(count)) for reason, count in top)


def database_counts(settings: Settings, timeout: float) -> DatabaseCounts | Problem:
    """Rows, devices, recent rows and rejections, in one read-only session (blocking).

    The tables are the ones the workers write (MASKSTREAM_LOGINS_TABLE and
    MASKSTREAM_REJECTIONS_TABLE); a table not created yet is reported as such.
    """
    import psycopg

    target = database_target(settings.database_url)
    logins, rejected = settings.logins_table, settings.rejections_table
    milliseconds = int(timeout * 1000)
    try:
        with psycopg.connect(
            settings.database_url,
            connect_timeout=max(2, round(timeout)),  # libpq's minimum is 2 s
            options=f"-c statement_timeout={milliseconds} -c default_transaction_read_only=on",
            autocommit=True,
        ) as conn:
            tables = _existing(conn, (logins, rejected))
            rows = devices = recent = rejections = None
            top: tuple[tuple[str, int], ...] = ()
            if logins in tables:
                rows, devices, recent = _count_logins(conn, logins)
            if rejected in tables:
                rejections, top = _count_rejections(conn, rejected)
    except psycopg.errors.QueryCanceled:
        reason = f"counting took longer than {timeout:g} s; raise --timeout"
        return Problem(reason, target, "error")
    except psycopg.OperationalError as exc:
        return Problem(describe_error(exc), target)
    except psycopg.Error as exc:
        return Problem(describe_error(exc), target, "error")
    return DatabaseCounts(target, rows, devices, recent, rejections, top, (logins, rejected))


# --------------------------------------------------------------------------- snapshot


async def _bounded(call: Any, timeout: float, target: str | None) -> Any:
    """Await *call*; a service that does not answer in time becomes a Problem.

    Each client has its own timeouts, but retries can add up: this caps a
    service at *timeout*, plus a moment for an answer already on its way.
    """
    try:
        return await asyncio.wait_for(call, timeout + 0.5)
    except TimeoutError:
        return Problem(f"no answer within {timeout:g} s", target)


async def gather(settings: Settings, timeout: float = DEFAULT_TIMEOUT) -> Snapshot:
    """Ask SQS, Kafka and PostgreSQL at once; never raises for a service's failure.

    The blocking clients (boto3, psycopg) run in daemon threads so that one
    stuck past its deadline is abandoned rather than holding the process.
    """
    from bridge.sqs import DaemonThreadPool

    loop = asyncio.get_running_loop()
    pool = DaemonThreadPool(2, "status")
    try:
        sqs, kafka, postgres = await asyncio.gather(
            _bounded(
                loop.run_in_executor(pool, queue_depth, settings, timeout),
                timeout,
                settings.sqs_queue_url or None,
            ),
            _bounded(consumer_lag(settings, timeout), timeout, settings.kafka_bootstrap_servers),
            _bounded(
                loop.run_in_executor(pool, database_counts, settings, timeout),
                timeout,
                database_target(settings.database_url),
            ),
        )
    finally:
        pool.shutdown(wait=False)
    return Snapshot(datetime.now(UTC), time.monotonic(), sqs, kafka, postgres)


def collect(settings: Settings, timeout: float = DEFAULT_TIMEOUT) -> Snapshot:
    """:func:`gather` for synchronous callers."""
    return asyncio.run(gather(settings, timeout))


def current_rate(snapshot: Snapshot, previous: Snapshot | None = None) -> Rate | None:
    """Rows per second: between two snapshots if there are two, else over the last minute.

    The one-shot figure counts rows whose ``ingested_at`` is within the window,
    so it needs no earlier reading; in ``--watch`` the row delta between two
    refreshes is exact and follows changes faster.
    """
    if not isinstance(snapshot.postgres, DatabaseCounts):
        return None
    now = snapshot.postgres
    if previous is not None and isinstance(previous.postgres, DatabaseCounts):
        elapsed = snapshot.monotonic - previous.monotonic
        if now.rows is not None and previous.postgres.rows is not None and elapsed > 0:
            delta = now.rows - previous.postgres.rows
            return Rate(delta / elapsed, f"over the last {elapsed:.1f} s")
    if now.rows_in_window is None:
        return None
    return Rate(now.rows_in_window / RATE_WINDOW_SECONDS, f"over the last {RATE_WINDOW_SECONDS} s")


# --------------------------------------------------------------------------- rendering


def _n(value: int) -> str:
    return f"{value:,}"


def render_sqs(part: QueueDepth | Problem) -> list[str]:
    if isinstance(part, Problem):
        return [part.line("sqs")]
    lines = [
        f"sqs: {part.url}",
        f"  messages: {_n(part.visible)} visible, {_n(part.in_flight)} in flight, "
        f"{_n(part.delayed)} delayed",
    ]
    dlq = part.dead_letters
    if dlq is None:
        lines.append("  dead letters: no redrive policy on this queue")
    else:
        after = f", after {dlq.max_receive_count} receives" if dlq.max_receive_count else ""
        if dlq.problem is not None:
            lines.append(f"  dead letters ({dlq.name}{after}): unreadable ({dlq.problem})")
        else:
            lines.append(f"  dead letters ({dlq.name}{after}): {_n(dlq.depth or 0)}")
    return lines


def _partition_cells(partitions: Sequence[PartitionLag]) -> list[str]:
    return [
        f"p{p.partition} {_n(p.lag)}{'' if p.committed is not None else '*'}" for p in partitions
    ]


def render_kafka(part: ConsumerLag | Problem) -> list[str]:
    if isinstance(part, Problem):
        return [part.line("kafka")]
    lines = [f"kafka: {part.servers}, consumer group {part.group}"]
    width = max(len(t.topic) for t in part.topics) if part.topics else 0
    uncommitted = False
    for topic in part.topics:
        if topic.partitions is None:
            lines.append(f"  {topic.topic:<{width}}  no such topic yet")
            continue
        cells = _partition_cells(topic.partitions)
        uncommitted |= any(p.committed is None for p in topic.partitions)
        head = f"  {topic.topic:<{width}}  lag {_n(topic.total):>9}"
        rows = [
            cells[i : i + PARTITIONS_PER_LINE] for i in range(0, len(cells), PARTITIONS_PER_LINE)
        ]
        for index, row in enumerate(rows or [[]]):
            prefix = head if index == 0 else " " * len(head)
            lines.append(f"{prefix}   {'  '.join(row)}".rstrip())
    if uncommitted:
        lines.append("  * nothing committed by the group yet: lag counts from the log start")
    return lines


def _rate_text(rate: Rate | None) -> str:
    if rate is None:
        return "unknown (no ingested_at column yet: a worker adds it on start)"
    return f"{rate.per_second:,.1f} msgs/s ({rate.basis})"


def render_postgres(part: DatabaseCounts | Problem, rate: Rate | None) -> list[str]:
    if isinstance(part, Problem):
        return [part.line("postgres")]
    logins, rejected = part.tables
    lines = [f"postgres: {part.target}"]
    if part.rows is None:
        lines.append(f"  {logins}: not created yet (a worker creates it on start)")
    else:
        lines.append(f"  {logins}: {_n(part.rows)} rows, {_n(part.devices or 0)} seen devices")
        lines.append(f"  rate: {_rate_text(rate)}")
    if part.rejections is None:
        lines.append(f"  {rejected}: not created yet")
        return lines
    lines.append(f"  {rejected}: {_n(part.rejections)} rows")
    if part.top_reasons:
        width = max(len(_n(count)) for _, count in part.top_reasons)
        lines.append(f"  top {len(part.top_reasons)} rejection reasons:")
        lines.extend(f"    {_n(count):>{width}}  {reason}" for reason, count in part.top_reasons)
    return lines


def render(snapshot: Snapshot, rate: Rate | None) -> str:
    """The status screen as text, one section per service."""
    stamp = snapshot.taken_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = [
        [f"maskstream status at {stamp}"],
        render_sqs(snapshot.sqs),
        render_kafka(snapshot.kafka),
        render_postgres(snapshot.postgres, rate),
    ]
    return "\n\n".join("\n".join(section) for section in sections)


def frame(text: str, first: bool) -> str:
    """*text* drawn over the previous screen: home, each line cleared to its end, rest cleared.

    Overwriting in place rather than clearing first keeps the screen from
    flickering between refreshes.
    """
    start = CLEAR_SCREEN + HOME if first else HOME
    body = "".join(f"{line}{CLEAR_LINE}\n" for line in text.splitlines())
    return f"{start}{body}{CLEAR_BELOW}"


def watch(
    take: Callable[[], Snapshot],
    out: IO[str],
    interval: float,
    *,
    sleep: Callable[[float], object] = time.sleep,
    refreshes: int | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> int:
    """Redraw the status every *interval* seconds until Ctrl-C, *stopped()*
    or *refreshes* draws.

    The rate shown is the row delta between consecutive snapshots. Returns 0:
    stopping a watch with Ctrl-C is its normal end.
    """
    previous: Snapshot | None = None
    drawn = 0
    try:
        while (refreshes is None or drawn < refreshes) and not stopped():
            snapshot = take()
            if stopped():
                break
            text = render(snapshot, current_rate(snapshot, previous))
            hint = f"refreshing every {interval:g} s; Ctrl-C to stop"
            out.write(frame(f"{text}\n\n{hint}", first=drawn == 0))
            out.flush()
            previous = snapshot
            drawn += 1
            if refreshes is None or drawn < refreshes:
                sleep(interval)
        if stopped():
            out.write("\n")
    except KeyboardInterrupt:
        out.write("\n")
    return 0
