"""Kafka TLS/SASL settings: parsed once, passed to aiokafka clients and to Faust,
and proven against the local broker's real SASL/PLAIN listener."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import faust
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream.common.kafka_security import KafkaClients, KafkaSecurity, KafkaSecurityError
from stream.common.settings import Settings
from stream.common.settings import load as load_settings
from stream.ops.demo import kafka_listener
from tests.support.sandbox import IsolatedPipeline, RawMessage

LOGIN = json.dumps(
    {
        "user_id": "u-1",
        "app_version": "1.2",
        "device_type": "ios",
        "ip": "10.1.2.3",
        "locale": None,
        "device_id": "111-22-3333",
    }
).encode()


def security(**changes: str) -> KafkaSecurity:
    return KafkaSecurity.from_settings(replace(Settings(), **changes))


def test_plaintext_is_the_default_and_needs_no_credentials() -> None:
    plain = security()
    assert plain.aiokafka_options() == {"security_protocol": "PLAINTEXT"}
    assert plain.faust_credentials() is None


def test_sasl_scram_over_tls_maps_to_aiokafka_and_faust() -> None:
    secure = security(
        kafka_security_protocol="sasl_ssl",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="bridge",
        kafka_sasl_password="s3cret",
    )
    options = secure.aiokafka_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("bridge", "s3cret")
    assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    credentials = secure.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert "s3cret" not in repr(secure)


def test_tls_only_gives_faust_ssl_credentials() -> None:
    assert isinstance(
        security(kafka_security_protocol="SSL").faust_credentials(), faust.SSLCredentials
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kafka_security_protocol": "TLS"}, "KAFKA_SECURITY_PROTOCOL must be one of"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "needs KAFKA_SASL_USERNAME"),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "GSSAPI",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "p",
            },
            "KAFKA_SASL_MECHANISM must be one of",
        ),
        ({"kafka_ssl_certfile": "/c.pem"}, "go together"),
    ],
)
def test_contradictory_settings_are_refused(changes: dict[str, str], message: str) -> None:
    with pytest.raises(KafkaSecurityError, match=message):
        security(**changes)


def tls_files(folder: Path) -> dict[str, Path]:
    """A missing file, a directory and a file that is not PEM, in *folder*."""
    (folder / "not-pem.txt").write_text("not a certificate\n")
    return {"missing": folder / "ca.pem", "directory": folder, "not PEM": folder / "not-pem.txt"}


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "No such file or directory"),
        ("directory", "Is a directory"),
        ("not PEM", "no certificate"),
    ],
)
def test_a_ca_file_that_cannot_be_used_is_named_in_one_line(
    tmp_path: Path, case: str, reason: str
) -> None:
    path = tls_files(tmp_path)[case]
    tls = security(kafka_security_protocol="SSL", kafka_ssl_cafile=str(path))
    with pytest.raises(KafkaSecurityError) as refused:
        tls.ssl_context()
    message = str(refused.value)
    assert message.startswith(f"KAFKA_SSL_CAFILE={path}: ") and reason in message
    assert "\n" not in message


def test_a_client_certificate_that_cannot_be_loaded_names_both_variables(tmp_path: Path) -> None:
    not_pem = tls_files(tmp_path)["not PEM"]
    tls = security(
        kafka_security_protocol="SSL",
        kafka_ssl_certfile=str(not_pem),
        kafka_ssl_keyfile=str(tmp_path / "key.pem"),
    )
    with pytest.raises(KafkaSecurityError, match=r"^KAFKA_SSL_CERTFILE=.*, KAFKA_SSL_KEYFILE="):
        tls.ssl_context()


@pytest.mark.parametrize(
    "entry",
    [("-m", "bridge"), ("-m", "faust", "-A", "stream.app", "worker")],
    ids=["bridge", "worker"],
)
def test_bridge_and_worker_refuse_a_missing_ca_file_in_one_line_before_kafka(
    tmp_path: Path, entry: tuple[str, ...]
) -> None:
    keyring = tmp_path / "keyring.json"
    subprocess.run([sys.executable, "-m", "stream.cli", "keygen", str(keyring)], check=True)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CAFILE": str(tmp_path / "ca.pem"),
        "MASKSTREAM_KEYRING_FILE": str(keyring),
        "MASKSTREAM_DATA_DIR": str(tmp_path / "data"),
        "SQS_QUEUE_URL": "http://127.0.0.1:1/000000000000/q",
    }
    env.pop("MASKSTREAM_KEYRING", None)
    done = subprocess.run(
        [sys.executable, *entry], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        f"KAFKA_SSL_CAFILE={tmp_path / 'ca.pem'}: No such file or directory"
    ), lines


def sasl_env(stack_env: dict[str, str], password: str | None = None) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": stack_env["STACK_KAFKA_SASL_BOOTSTRAP_SERVERS"],
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": stack_env["STACK_KAFKA_SASL_USERNAME"],
        "KAFKA_SASL_PASSWORD": password or stack_env["STACK_KAFKA_SASL_PASSWORD"],
    }


def sasl_security(env: dict[str, str]) -> KafkaSecurity:
    return security(
        kafka_security_protocol=env["KAFKA_SECURITY_PROTOCOL"],
        kafka_sasl_username=env["KAFKA_SASL_USERNAME"],
        kafka_sasl_password=env["KAFKA_SASL_PASSWORD"],
    )


async def produce_one(bootstrap: str, options: dict) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000, **options)
    await producer.start()
    try:
        await producer.send_and_wait(f"sasl-{uuid.uuid4().hex[:6]}", b"x")
    finally:
        await producer.stop()


@pytest.mark.services
def test_aiokafka_client_authenticates_on_the_sasl_listener(stack_env: dict[str, str]) -> None:
    env = sasl_env(stack_env)
    asyncio.run(produce_one(env["KAFKA_BOOTSTRAP_SERVERS"], sasl_security(env).aiokafka_options()))


@pytest.mark.services
def test_wrong_password_is_refused(stack_env: dict[str, str]) -> None:
    env = sasl_env(stack_env, password="not-the-password")
    with pytest.raises(KafkaError):
        asyncio.run(
            produce_one(env["KAFKA_BOOTSTRAP_SERVERS"], sasl_security(env).aiokafka_options())
        )


@pytest.mark.services
def test_worker_runs_the_pipeline_over_sasl(
    pipeline: IsolatedPipeline, stack_env: dict[str, str]
) -> None:
    pipeline.launcher.start_worker("worker", extra_env=sasl_env(stack_env))
    pipeline.produce_raw([RawMessage(str(uuid.uuid4()), LOGIN)])
    pipeline.wait_for_outcomes(1)
    # The worker knew only the SASL listener: the row proves it authenticated.
    assert pipeline.row_count() == 1


def test_one_factory_gives_every_client_the_same_servers_and_security() -> None:
    settings = replace(
        Settings(),
        kafka_bootstrap_servers="broker-1:9093",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="worker",
        kafka_sasl_password="s3cret",
    )
    options = KafkaClients.from_settings(settings).client_kwargs(request_timeout_ms=5000)
    assert options == {
        "bootstrap_servers": "broker-1:9093",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "worker",
        "sasl_plain_password": "s3cret",
        "request_timeout_ms": 5000,
    }


def test_settings_can_be_read_from_a_pipelines_variables() -> None:
    """The sandbox configures its own clients from the variables it gives its workers."""
    settings = load_settings({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_BOOTSTRAP_SERVERS": "b:1"})
    assert (settings.kafka_security_protocol, settings.kafka_bootstrap_servers) == ("SSL", "b:1")
    assert load_settings({}).kafka_security_protocol == "PLAINTEXT"


def test_demo_points_sasl_callers_at_the_stacks_sasl_listener() -> None:
    stack_env = {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "STACK_KAFKA_SASL_BOOTSTRAP_SERVERS": "127.0.0.1:2",
        "STACK_KAFKA_SASL_USERNAME": "maskstream",
        "STACK_KAFKA_SASL_PASSWORD": "pw",
    }
    assert kafka_listener(stack_env, Settings(kafka_security_protocol="PLAINTEXT")) == {}
    assert kafka_listener(stack_env, Settings(kafka_security_protocol="sasl_plaintext")) == {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:2",
        "KAFKA_SASL_USERNAME": "maskstream",
        "KAFKA_SASL_PASSWORD": "pw",
    }
    with pytest.raises(RuntimeError, match="no TLS listener"):
        kafka_listener(stack_env, Settings(kafka_security_protocol="SASL_SSL"))


@pytest.fixture
def sasl_pipeline(stack_env: dict[str, str], tmp_path: Path) -> Iterator[IsolatedPipeline]:
    """A pipeline that knows only the SASL listener: a client built without
    its security settings would speak plaintext to it and fail."""
    with IsolatedPipeline({**stack_env, **sasl_env(stack_env)}, tmp_path) as pipe:
        yield pipe


def cli(pipe: IsolatedPipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env={**os.environ, **pipe.env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.services
def test_sandbox_clients_authenticate_on_the_sasl_listener(
    sasl_pipeline: IsolatedPipeline,
) -> None:
    """Topics (created in __enter__), both producers, the reader and the lag
    consumer of the sandbox all go through the SASL listener."""
    sasl_pipeline.produce_raw([RawMessage(str(uuid.uuid4()), b"{}")])
    sasl_pipeline.produce_plain(sasl_pipeline.raw_topic, [(b"k", b"v")])
    assert sorted(v for _, v in sasl_pipeline.read_topic(sasl_pipeline.raw_topic)) == [b"v", b"{}"]
    assert sum(sasl_pipeline.lag().values()) == 2


@pytest.mark.services
def test_replay_and_status_authenticate_on_the_sasl_listener(
    sasl_pipeline: IsolatedPipeline,
) -> None:
    sasl_pipeline.produce_plain(sasl_pipeline.raw_topic, [(b"k", b"v")])
    replay = cli(sasl_pipeline, "replay", "--from", "earliest")
    assert replay.returncode == 0, replay.stderr
    assert "1 records will be processed again" in replay.stdout
    dry_run = cli(sasl_pipeline, "replay", "--from", "earliest", "--dry-run")
    assert dry_run.returncode == 0, dry_run.stderr
    status = cli(sasl_pipeline, "status")
    kafka_line = next(line for line in status.stdout.splitlines() if line.startswith("kafka:"))
    assert kafka_line == (
        f"kafka: {sasl_pipeline.env['KAFKA_BOOTSTRAP_SERVERS']}, "
        f"consumer group {sasl_pipeline.name}"
    ), status.stdout
    raw_line = next(line for line in status.stdout.splitlines() if sasl_pipeline.raw_topic in line)
    assert "no such topic" not in raw_line, status.stdout


@pytest.mark.services
def test_demo_runs_over_the_sasl_listener(stack_env: dict[str, str]) -> None:
    """Asked for SASL_PLAINTEXT (no address, no user), the demo's bridge and
    workers use the stack's SASL listener: with its plaintext address they
    would not connect, and no message would become a row."""
    env = {
        **os.environ,
        "MASKSTREAM_STACK_DIR": stack_env["MASKSTREAM_STACK_DIR"],
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    }
    for name in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
        env.pop(name, None)
    demo = subprocess.run(
        [sys.executable, "-m", "stream.cli", "demo", "--count", "40", "--workers", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    written = next(line for line in demo.stdout.splitlines() if line.startswith("rows written"))
    assert int(written.split()[-1]) > 0


@pytest.mark.services
def test_replay_into_a_new_table_runs_over_the_sasl_listener(
    sasl_pipeline: IsolatedPipeline,
) -> None:
    """The rebuild's group rewind, end offsets, progress checks and worker all
    authenticate; the row in the new table proves the worker did."""
    sasl_pipeline.produce_raw([RawMessage(str(uuid.uuid4()), LOGIN)])
    rebuild = cli(
        sasl_pipeline, "replay", "--from", "earliest", "--into", "rebuilt", "--timeout", "120"
    )
    assert rebuild.returncode == 0, rebuild.stdout + rebuild.stderr
    assert sasl_pipeline.query("SELECT count(*) FROM rebuilt") == [(1,)]
