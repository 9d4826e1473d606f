"""SASL/OAUTHBEARER: token providers (pure), AWS's MSK signer, and the whole
pipeline on the local broker's OAUTHBEARER listener with short-lived tokens."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import faust
import pytest

from stream.common import kafka_oauth
from stream.common.kafka_oauth import (
    MskIamTokenProvider,
    Token,
    UnsecuredTokenProvider,
    unsecured_jws,
)
from stream.common.kafka_security import KafkaSecurityError
from tests.support.sandbox import IsolatedPipeline
from tests.test_faults import synthetic_lines
from tests.test_kafka_security import security


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_an_unsecured_token_is_a_jws_without_signature_for_the_principal() -> None:
    header, claims, signature = unsecured_jws("maskstream", 1_000.0, 60).split(".")
    assert json.loads(b64decode(header)) == {"alg": "none"}
    assert json.loads(b64decode(claims)) == {"sub": "maskstream", "iat": 1000, "exp": 1060}
    assert signature == ""


def test_a_token_is_kept_until_shortly_before_it_expires() -> None:
    provider = UnsecuredTokenProvider("p", lifetime=3600)
    first = asyncio.run(provider.token())
    assert asyncio.run(provider.token()) == first
    assert provider.issued == 1
    now = time.time()
    provider._token = Token(first, now + 30, now - 3570)  # within the refresh margin
    asyncio.run(provider.token())
    assert provider.issued == 2


def test_a_short_lived_token_is_renewed_at_half_its_life() -> None:
    provider = UnsecuredTokenProvider("p", lifetime=4)
    asyncio.run(provider.token())
    asyncio.run(provider.token())
    assert provider.issued == 1
    time.sleep(2.1)
    asyncio.run(provider.token())
    assert provider.issued == 2


def test_oauthbearer_maps_to_aiokafka_and_faust_with_one_shared_provider() -> None:
    oauth = security(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="oauthbearer",
        kafka_sasl_oauth_token_provider="unsecured",
        kafka_sasl_username="worker",
    )
    options = oauth.aiokafka_options()
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, UnsecuredTokenProvider) and provider.principal == "worker"
    assert "sasl_plain_password" not in options
    credentials = oauth.faust_credentials()
    assert isinstance(credentials, faust.OAuthCredentials)
    assert credentials.oauth_cb is provider  # every client of the process shares its token


def test_aws_msk_iam_is_oauthbearer_with_awss_signer_for_the_region() -> None:
    msk = security(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="AWS_MSK_IAM",
        aws_region="eu-west-1",
    )
    options = msk.aiokafka_options()
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, MskIamTokenProvider) and provider.region == "eu-west-1"
    assert options["ssl_context"] is not None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kafka_sasl_oauth_token_provider": ""}, "must be aws-msk-iam, unsecured"),
        ({"kafka_sasl_oauth_token_provider": "nonsense"}, "must be aws-msk-iam, unsecured"),
        ({"kafka_sasl_oauth_token_provider": "aws-msk-iam", "aws_region": ""}, "AWS_REGION"),
    ],
)
def test_an_unusable_token_provider_setting_is_refused_in_one_line(
    changes: dict[str, str], message: str
) -> None:
    with pytest.raises(KafkaSecurityError, match=message):
        security(
            kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="OAUTHBEARER", **changes
        )


def test_a_named_provider_is_made_by_its_callable() -> None:
    provider = kafka_oauth.named_provider("tests.test_kafka_oauth:example_provider")
    assert isinstance(provider, UnsecuredTokenProvider)
    with pytest.raises(kafka_oauth.TokenProviderError, match="no such module:callable"):
        kafka_oauth.named_provider("tests.test_kafka_oauth:missing")
    with pytest.raises(kafka_oauth.TokenProviderError, match="not an aiokafka"):
        kafka_oauth.named_provider("stream.common.settings:Settings")


def example_provider() -> UnsecuredTokenProvider:
    return UnsecuredTokenProvider("named", 60)


def test_msk_iam_tokens_are_signed_by_awss_signer_with_botocores_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A test profile's keys (no AWS call: signing is local): the token is
    AWS's presigned kafka-cluster:Connect URL for the region, valid 900 s."""
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[maskstream-test]\naws_access_key_id = AKIDEXAMPLE\n"
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\n"
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_PROFILE", "maskstream-test")
    provider = MskIamTokenProvider("eu-central-1")
    token = asyncio.run(provider.token())
    url = urllib.parse.urlparse(b64decode(token).decode())
    query = dict(urllib.parse.parse_qsl(url.query))
    assert url.hostname == "kafka.eu-central-1.amazonaws.com"
    assert query["Action"] == "kafka-cluster:Connect"
    assert query["X-Amz-Credential"].startswith("AKIDEXAMPLE/")
    assert "/eu-central-1/kafka-cluster/aws4_request" in query["X-Amz-Credential"]
    assert query["X-Amz-Expires"] == "900"
    assert len(query["X-Amz-Signature"]) == 64
    assert provider._token.expires_at > time.time() + 800
    assert "wJalrXUtnFEMI" not in token  # the secret key never travels


# --- on the local broker's OAUTHBEARER listener ----------------------------------

TOKEN_LIFETIME_SECONDS = 8


def oauth_env(stack_env: dict[str, str]) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": stack_env["STACK_KAFKA_SASL_BOOTSTRAP_SERVERS"],
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
        "KAFKA_SASL_OAUTH_TOKEN_PROVIDER": "unsecured",
        "KAFKA_SASL_USERNAME": stack_env["STACK_KAFKA_SASL_USERNAME"],
        "KAFKA_SASL_OAUTH_TOKEN_LIFETIME_SECONDS": str(TOKEN_LIFETIME_SECONDS),
    }


@pytest.fixture
def oauth_pipeline(stack_env: dict[str, str], tmp_path: Path) -> Iterator[IsolatedPipeline]:
    """A pipeline that knows only the SASL listener, authenticating with tokens."""
    with IsolatedPipeline({**stack_env, **oauth_env(stack_env)}, tmp_path) as pipe:
        yield pipe


@pytest.mark.services
def test_the_pipeline_runs_on_oauthbearer_across_token_expiry(
    oauth_pipeline: IsolatedPipeline,
) -> None:
    """The bridge, two workers, replay and status authenticate with tokens of
    8 s; the broker ends each session when its token expires, so messages
    sent over 30 s cross several renewals, and every one becomes a row or a
    rejection exactly once."""
    pipe = oauth_pipeline
    pipe.create_queue()
    pipe.launcher.start_worker("worker-1")
    pipe.launcher.start_worker("worker-2")
    pipe.launcher.start_bridge("bridge")
    sent = valid = 0
    started = time.monotonic()
    for seed in range(4):
        lines, good = synthetic_lines(100, seed=900 + seed)
        sent += pipe.send_to_sqs(lines)
        valid += good
        time.sleep(TOKEN_LIFETIME_SECONDS + 2)
    pipe.wait_for_outcomes(sent)
    assert time.monotonic() - started > 3 * TOKEN_LIFETIME_SECONDS
    rows, distinct = pipe.query("SELECT count(*), count(DISTINCT message_id) FROM user_logins")[0]
    assert rows == distinct == valid
    assert pipe.device_mismatches() == {}
    assert not pipe.launcher.failed()
    replay = cli(pipe, "replay", "--from", "earliest", "--dry-run")
    assert replay.returncode == 0, replay.stderr
    assert f"{sent} records will be processed again" in replay.stdout
    status = cli(pipe, "status")
    assert status.returncode == 0, status.stderr
    assert any(line.startswith("kafka:") for line in status.stdout.splitlines())


def cli(pipe: IsolatedPipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env={**os.environ, **pipe.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
