"""Kafka TLS/SASL settings: parsed once, passed to aiokafka clients and to Faust,
and proven against the local broker's real SASL/PLAIN listener."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace

import faust
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream.common.kafka_security import KafkaSecurity, KafkaSecurityError
from stream.common.settings import Settings
from tests.support.sandbox import IsolatedPipeline, RawMessage


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
    body = {
        "user_id": "u-1",
        "app_version": "1.2",
        "device_type": "ios",
        "ip": "10.1.2.3",
        "locale": None,
        "device_id": "111-22-3333",
    }
    pipeline.launcher.start_worker("worker", extra_env=sasl_env(stack_env))
    pipeline.produce_raw([RawMessage(str(uuid.uuid4()), json.dumps(body).encode())])
    pipeline.wait_for_outcomes(1)
    # The worker knew only the SASL listener: the row proves it authenticated.
    assert pipeline.row_count() == 1
