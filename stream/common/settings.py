"""All of maskstream's configuration, read from the environment in one place.

Every process (bridge, Faust worker, CLI) builds its settings here, so an
operator has one list of variables to learn (the README's configuration table
mirrors this module). Command-line flags override these values by passing
keyword arguments to :func:`dataclasses.replace`.

This module imports nothing heavy: the bridge uses it without loading Faust.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

# Where the fields' defaults are read: the process environment as it is at
# that moment, unless load() was given another mapping (a sandboxed
# pipeline's variables).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("maskstream_environ", default=None)


def _getenv(name: str) -> str:
    environ = _ENVIRON.get()
    return (os.environ if environ is None else environ).get(name, "")


def _env(name: str, default: str) -> str:
    value = _getenv(name).strip()
    return value or default


def _env_int(name: str, default: int) -> int:
    raw = _getenv(name).strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _env_float(name: str, default: float) -> float:
    raw = _getenv(name).strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = _getenv(name).strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def _stack_dir() -> Path:
    return Path(_env("MASKSTREAM_STACK_DIR", ".stack"))


TABLE_STORES = ("rocksdb", "memory")


SQS_PROTOCOLS = ("auto", "json", "query")
# Partition length of the tables maskstream creates (stream.postgres.partitions);
# the first is the default.
PARTITION_INTERVALS = ("day", "week", "month", "none")
ENVELOPES = ("auto", "none", "sns", "eventbridge")


def _choice(name: str, choices: tuple[str, ...]) -> str:
    value = _env(name, choices[0]).lower()
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Topics:
    """Kafka topic names and layout shared by the bridge and the workers."""

    raw: str = field(default_factory=lambda: _env("MASKSTREAM_TOPIC_RAW", "logins.raw"))
    masked: str = field(default_factory=lambda: _env("MASKSTREAM_TOPIC_MASKED", "logins.masked"))
    rejected: str = field(
        default_factory=lambda: _env("MASKSTREAM_TOPIC_REJECTED", "logins.rejected")
    )
    partitions: int = field(default_factory=lambda: _env_int("MASKSTREAM_PARTITIONS", 8))
    # Copies of each partition of the topics the pipeline creates (raw, masked,
    # rejected, the table's changelog, Faust's own); 0 means min(3, brokers).
    # min.insync.replicas is one less (see stream.common.replication).
    replication_factor: int = field(
        default_factory=lambda: _env_int("MASKSTREAM_REPLICATION_FACTOR", 0)
    )
    # The raw topic holds PII in clear: keep it only as long as replay needs.
    raw_retention_hours: int = field(
        default_factory=lambda: _env_int("MASKSTREAM_RAW_RETENTION_HOURS", 168)
    )


@dataclass(frozen=True)
class Settings:
    """Connection settings and tuning knobs, defaults first, environment second."""

    kafka_bootstrap_servers: str = field(
        default_factory=lambda: _env("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    # Kafka TLS / SASL (see stream/kafka_security.py); PLAINTEXT by default.
    kafka_security_protocol: str = field(
        default_factory=lambda: _env("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    )
    kafka_sasl_mechanism: str = field(default_factory=lambda: _env("KAFKA_SASL_MECHANISM", "PLAIN"))
    kafka_sasl_username: str = field(default_factory=lambda: _env("KAFKA_SASL_USERNAME", ""))
    kafka_sasl_password: str = field(
        default_factory=lambda: _env("KAFKA_SASL_PASSWORD", ""), repr=False
    )
    # OAUTHBEARER / AWS_MSK_IAM: where tokens come from (stream/common/kafka_oauth.py).
    kafka_sasl_oauth_token_provider: str = field(
        default_factory=lambda: _env("KAFKA_SASL_OAUTH_TOKEN_PROVIDER", "")
    )
    kafka_sasl_oauth_token_lifetime_seconds: float = field(
        default_factory=lambda: _env_float("KAFKA_SASL_OAUTH_TOKEN_LIFETIME_SECONDS", 3600.0)
    )
    kafka_ssl_cafile: str = field(default_factory=lambda: _env("KAFKA_SSL_CAFILE", ""))
    kafka_ssl_certfile: str = field(default_factory=lambda: _env("KAFKA_SSL_CERTFILE", ""))
    kafka_ssl_keyfile: str = field(default_factory=lambda: _env("KAFKA_SSL_KEYFILE", ""))
    database_url: str = field(
        default_factory=lambda: _env(
            "DATABASE_URL", "postgresql://postgres@localhost:5432/postgres"
        )
    )
    # RDS IAM authentication: every new connection takes a fresh 15-minute token
    # as its password, over TLS verified against this CA bundle (stream.postgres.connect).
    database_iam: bool = field(default_factory=lambda: _env_bool("MASKSTREAM_DATABASE_IAM", False))
    database_ca_file: str = field(default_factory=lambda: _env("MASKSTREAM_DATABASE_CA_FILE", ""))
    sqs_queue_url: str = field(default_factory=lambda: _env("SQS_QUEUE_URL", ""))
    # The SQS endpoint and region; botocore resolves the rest of the chain
    # (config files, AWS_ENDPOINT_URL) in bridge.sqs.endpoint.
    sqs_endpoint_url: str = field(default_factory=lambda: _env("AWS_ENDPOINT_URL_SQS", ""))
    aws_region: str = field(default_factory=lambda: _env("AWS_DEFAULT_REGION", "us-east-1"))
    # SQS wire protocol: auto (ask the server once), json or query.
    sqs_protocol: str = field(
        default_factory=lambda: _choice("MASKSTREAM_SQS_PROTOCOL", SQS_PROTOCOLS)
    )
    # Envelopes around a login (SNS notification, EventBridge event): see
    # stream.common.envelopes. The bridge keys by, and the worker reads, the inner login.
    envelope: str = field(default_factory=lambda: _choice("MASKSTREAM_ENVELOPE", ENVELOPES))

    # Masking keys: a key-ring file, or the same JSON document in a variable.
    keyring_file: str = field(default_factory=lambda: _env("MASKSTREAM_KEYRING_FILE", ""))
    keyring_json: str = field(default_factory=lambda: _env("MASKSTREAM_KEYRING", ""))
    # ...or the same document in AWS: `secretsmanager:NAME`, `ssm:NAME` or either's ARN
    # (see stream.common.aws_secrets), re-read every refresh interval and on SIGHUP
    # so that a rotation there reaches running workers; 0 reads it at start only.
    keyring_source: str = field(default_factory=lambda: _env("MASKSTREAM_KEYRING_SOURCE", ""))
    keyring_refresh_seconds: float = field(
        default_factory=lambda: _env_float("MASKSTREAM_KEYRING_REFRESH_SECONDS", 300.0)
    )
    # AWS endpoint for Secrets Manager, SSM and RDS (a test server, a VPC endpoint);
    # empty: botocore's own resolution (AWS_ENDPOINT_URL, config files, the region's).
    aws_endpoint_url: str = field(default_factory=lambda: _env("MASKSTREAM_AWS_ENDPOINT_URL", ""))

    topics: Topics = field(default_factory=Topics)

    # Bridge tuning.
    # The floor of the adaptive poller count (and the long polls open while idle).
    bridge_pollers: int = field(default_factory=lambda: _env_int("MASKSTREAM_BRIDGE_POLLERS", 2))
    # Ceiling of the adaptive poller count: pollers are added while polls come
    # back full (a remote SQS answers in 10-30 ms, so one poll carries ~400 msg/s).
    bridge_max_pollers: int = field(
        default_factory=lambda: _env_int("MASKSTREAM_BRIDGE_MAX_POLLERS", 32)
    )
    # After a part-filled receive a poller waits this long, so that while
    # messages trickle in each call (and its delete) carries more of them.
    bridge_receive_linger_ms: int = field(
        default_factory=lambda: _env_int("MASKSTREAM_BRIDGE_RECEIVE_LINGER_MS", 20)
    )
    bridge_wait_seconds: int = field(
        default_factory=lambda: _env_int("MASKSTREAM_BRIDGE_WAIT_SECONDS", 20)
    )
    bridge_max_in_flight: int = field(
        default_factory=lambda: _env_int("MASKSTREAM_BRIDGE_MAX_IN_FLIGHT", 2000)
    )
    bridge_visibility_timeout: int = field(
        default_factory=lambda: _env_int("MASKSTREAM_BRIDGE_VISIBILITY_TIMEOUT", 60)
    )
    bridge_compression: str = field(
        default_factory=lambda: _env("MASKSTREAM_BRIDGE_COMPRESSION", "none")
    )
    bridge_linger_ms: int = field(
        default_factory=lambda: _env_int("MASKSTREAM_BRIDGE_LINGER_MS", 200)
    )
    # Producer batch size per partition: large batches amortise request overhead.
    bridge_batch_bytes: int = field(
        default_factory=lambda: _env_int("MASKSTREAM_BRIDGE_BATCH_BYTES", 262_144)
    )
    # Bound on a graceful stop: flush, delete what Kafka acknowledged, exit.
    bridge_shutdown_timeout: float = field(
        default_factory=lambda: _env_float("MASKSTREAM_BRIDGE_SHUTDOWN_TIMEOUT", 20.0)
    )
    # The body field whose hash keys raw records, like Kafka Connect's ValueToKey:
    # every login of a device lands in one partition (see stream.common.canonical).
    bridge_key_field: str = field(
        default_factory=lambda: _env("MASKSTREAM_BRIDGE_KEY_FIELD", "device_id")
    )
    # How often the bridge logs its counters.
    bridge_stats_interval: float = field(
        default_factory=lambda: _env_float("MASKSTREAM_BRIDGE_STATS_INTERVAL", 30.0)
    )

    # Where rows go; `replay --into` points a separate group at fresh tables.
    logins_table: str = field(
        default_factory=lambda: _env("MASKSTREAM_LOGINS_TABLE", "user_logins")
    )
    rejections_table: str = field(
        default_factory=lambda: _env("MASKSTREAM_REJECTIONS_TABLE", "rejected_logins")
    )
    devices_table: str = field(
        default_factory=lambda: _env("MASKSTREAM_DEVICES_TABLE", "seen_devices")
    )
    # Tables maskstream creates on PostgreSQL 11+ are range-partitioned by the
    # login's time, one partition per interval; "none" keeps them plain.
    partition_interval: str = field(
        default_factory=lambda: _choice("MASKSTREAM_PARTITION_INTERVAL", PARTITION_INTERVALS)
    )
    # Partitions of logins and rejections wholly older than this many days are
    # dropped by the workers' upkeep; 0 keeps everything.
    retention_days: int = field(default_factory=lambda: _env_int("MASKSTREAM_RETENTION_DAYS", 0))

    # Prometheus /metrics, /health and /ready of the bridge; 0 turns them off.
    bridge_metrics_port: int = field(
        default_factory=lambda: _env_int("MASKSTREAM_BRIDGE_METRICS_PORT", 9108)
    )

    # Worker tuning.
    # The Faust app id is also the consumer group that `replay` rewinds.
    app_id: str = field(default_factory=lambda: _env("MASKSTREAM_APP_ID", "maskstream"))
    # How long the group waits for a silent (killed) worker before moving its
    # partitions to the others: shorter means faster recovery, more false alarms.
    session_timeout_seconds: float = field(
        default_factory=lambda: _env_float("MASKSTREAM_SESSION_TIMEOUT_SECONDS", 30.0)
    )
    standby_replicas: int = field(
        default_factory=lambda: _env_int("MASKSTREAM_STANDBY_REPLICAS", 1)
    )
    # The agent takes up to batch_size raw records (waiting at most
    # batch_seconds to fill a batch) and writes them in one transaction.
    batch_size: int = field(default_factory=lambda: _env_int("MASKSTREAM_BATCH_SIZE", 1000))
    batch_seconds: float = field(
        default_factory=lambda: _env_float("MASKSTREAM_BATCH_SECONDS", 0.25)
    )
    # The output topics for downstream consumers; either can be turned off.
    # Each SQS message at most once on the output topics, exactly once once
    # its row is committed (Kafka transactions; stream/worker/transactions.py).
    exactly_once: bool = field(default_factory=lambda: _env_bool("MASKSTREAM_EXACTLY_ONCE", True))
    # How long a raw partition's transaction takes batches before it commits
    # (0: one a batch): fewer transactions, outputs that much later. On three
    # replicas each transaction costs the brokers tens of requests (issue 36).
    transaction_seconds: float = field(
        default_factory=lambda: _env_float("MASKSTREAM_TRANSACTION_SECONDS", 2.0)
    )
    # A worker's fetch waits for this many bytes of its partitions, or this
    # long: on three replicas every fetch answered costs the brokers about as
    # much as a produce, and answering one per bridge request (fetch.min.bytes
    # 1) made fetches a quarter of their requests. Up to that much latency.
    fetch_min_bytes: int = field(
        default_factory=lambda: _env_int("MASKSTREAM_FETCH_MIN_BYTES", 65_536)
    )
    fetch_wait_ms: int = field(default_factory=lambda: _env_int("MASKSTREAM_FETCH_WAIT_MS", 200))
    publish_masked: bool = field(
        default_factory=lambda: _env_bool("MASKSTREAM_PUBLISH_MASKED", True)
    )
    publish_rejected: bool = field(
        default_factory=lambda: _env_bool("MASKSTREAM_PUBLISH_REJECTED", True)
    )
    # SQS message attributes (by name) a masked login carries on to logins.masked
    # as headers; none by default, since an attribute may hold anything.
    copy_attributes: tuple[str, ...] = field(
        default_factory=lambda: tuple(
            name.strip()
            for name in _env("MASKSTREAM_COPY_ATTRIBUTES", "").split(",")
            if name.strip()
        )
    )
    worker_web_port: int = field(default_factory=lambda: _env_int("MASKSTREAM_WEB_PORT", 6066))
    # Where the worker's pages (/metrics, /health, /ready) listen: loopback by
    # default; 0.0.0.0 in a container that Prometheus scrapes from outside.
    worker_web_host: str = field(default_factory=lambda: _env("MASKSTREAM_WEB_HOST", "127.0.0.1"))
    # The worker's own state (Faust's, the RocksDB databases), one directory
    # per worker. By default under the stack directory, so that two stacks on
    # one machine never share worker state; a production worker sets it to a
    # persistent volume of its own (the image: /var/lib/maskstream/faust-data).
    data_dir: Path = field(
        default_factory=lambda: Path(_env("MASKSTREAM_DATA_DIR", str(_stack_dir() / "faust-data")))
    )
    # Where a worker keeps seen_devices: "rocksdb" (on disk under data_dir; a
    # restart reads only the changelog written since) or "memory" (in RAM,
    # rebuilt from the whole changelog on every start).
    table_store: str = field(
        default_factory=lambda: _choice("MASKSTREAM_TABLE_STORE", TABLE_STORES)
    )

    # Where `maskstream stack` keeps its state, logs and env file.
    stack_dir: Path = field(default_factory=lambda: _stack_dir())
    # Kafka nodes of a new local stack (each broker and controller); 3 shows
    # leader failover. A running stack keeps the count it was made with.
    stack_brokers: int = field(default_factory=lambda: _env_int("MASKSTREAM_STACK_BROKERS", 1))
    # Where the launcher (demo, tests, benchmarks) registers the bridges and
    # workers it starts for the local stack's Prometheus to scrape (file_sd
    # JSON files); set by `maskstream stack up --prometheus`, empty = none.
    scrape_targets_dir: str = field(
        default_factory=lambda: _env("MASKSTREAM_SCRAPE_TARGETS_DIR", "")
    )

    @property
    def sqs_queue_urls(self) -> list[str]:
        """The queues the bridge reads: ``SQS_QUEUE_URL`` is one URL or a comma-separated list."""
        return [url.strip() for url in self.sqs_queue_url.split(",") if url.strip()]


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from the environment as it is now, or from *environ*
    (e.g. the variables a sandboxed pipeline gives its children), so that
    every client of that pipeline is configured exactly as its workers are."""
    if environ is None:
        return Settings()
    with _reading(environ):
        return Settings()


@contextmanager
def _reading(environ: Mapping[str, str]) -> Iterator[None]:
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)
