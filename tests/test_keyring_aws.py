"""The key ring from AWS Secrets Manager and SSM, against moto's server in-process.

Read at start, rotated there and picked up by a running LiveKeyRing without a
restart, and the one-line errors for a missing secret, a denied read and
malformed content, none of which may quote a value.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from stream.common.aws_secrets import (
    SecretRef,
    SecretSourceError,
    client_error_line,
    parse_secret_ref,
)
from stream.common.settings import Settings
from stream.core.keyring import KeyRing, KeyRingError, dump_keyring, new_keyring, rotate
from stream.core.masking import Masker
from stream.worker.keyring_source import LiveKeyRing, load_configured_keyring
from tests.support.sandbox import IsolatedPipeline, RawMessage
from tests.test_validation import body as login_body

moto_server = pytest.importorskip("moto.server")

REGION = "eu-west-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials of a test profile: nothing here may reach real AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def client(endpoint: str, service: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


def settings_for(endpoint: str, source: str) -> Settings:
    return Settings(
        keyring_source=source,
        keyring_file="",
        keyring_json="",
        aws_endpoint_url=endpoint,
        aws_region=REGION,
    )


def secret_values(text: str) -> list[str]:
    """The base64 secrets in a key ring document: what must never appear in an error."""
    return [key["secret"] for key in json.loads(text)["keys"].values()]


def assert_no_value(message: str, document: str) -> None:
    assert "\n" not in message
    for value in secret_values(document):
        assert value not in message


def test_reads_the_ring_from_secrets_manager(endpoint: str) -> None:
    ring = new_keyring()
    sm = client(endpoint, "secretsmanager")
    arn = sm.create_secret(Name="maskstream/keyring-a", SecretString=dump_keyring(ring))["ARN"]

    assert (
        load_configured_keyring(settings_for(endpoint, "secretsmanager:maskstream/keyring-a"))
        == ring
    )
    # An ARN alone names the service, and its region wins over the configured one.
    other_region = Settings(
        keyring_source=arn,
        keyring_file="",
        keyring_json="",
        aws_endpoint_url=endpoint,
        aws_region="us-east-2",
    )
    assert load_configured_keyring(other_region) == ring


def test_reads_the_ring_from_an_ssm_securestring(endpoint: str) -> None:
    ring = new_keyring("hmac")
    ssm = client(endpoint, "ssm")
    ssm.put_parameter(Name="/maskstream/keyring", Value=dump_keyring(ring), Type="SecureString")
    arn = ssm.get_parameter(Name="/maskstream/keyring")["Parameter"]["ARN"]

    assert load_configured_keyring(settings_for(endpoint, "ssm:/maskstream/keyring")) == ring
    assert load_configured_keyring(settings_for(endpoint, arn)) == ring


def test_refuses_a_plain_string_parameter(endpoint: str) -> None:
    document = dump_keyring(new_keyring())
    client(endpoint, "ssm").put_parameter(Name="/plain/keyring", Value=document, Type="String")
    with pytest.raises(KeyRingError, match="SecureString") as caught:
        load_configured_keyring(settings_for(endpoint, "ssm:/plain/keyring"))
    assert_no_value(str(caught.value), document)


def test_a_rotation_reaches_a_running_keyring(endpoint: str) -> None:
    ring = new_keyring()
    sm = client(endpoint, "secretsmanager")
    sm.create_secret(Name="maskstream/rotating", SecretString=dump_keyring(ring))
    live = LiveKeyRing.from_settings(settings_for(endpoint, "secretsmanager:maskstream/rotating"))
    before = live.masker
    old_token = before.mask("ip", "192.0.2.1")

    assert live.refresh() is False  # unchanged: the same masker stays
    assert live.masker is before

    rotated = rotate(ring)
    sm.put_secret_value(SecretId="maskstream/rotating", SecretString=dump_keyring(rotated))
    assert live.refresh() is True

    after = live.masker
    assert after is not before and after.active_key_id == rotated.active_id
    # New tokens use the newest key, deterministically; old ones still open.
    new_token = after.mask("ip", "192.0.2.1")
    assert new_token != old_token and new_token == Masker(rotated).mask("ip", "192.0.2.1")
    assert after.unmask(old_token) == ("ip", "192.0.2.1")


def test_a_failed_refresh_keeps_the_ring(endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    ring = new_keyring()
    sm = client(endpoint, "secretsmanager")
    sm.create_secret(Name="maskstream/broken-later", SecretString=dump_keyring(ring))
    live = LiveKeyRing.from_settings(
        settings_for(endpoint, "secretsmanager:maskstream/broken-later")
    )
    masker = live.masker

    broken = dump_keyring(rotate(ring)).replace('"format"', '"fromat"')
    sm.put_secret_value(SecretId="maskstream/broken-later", SecretString=broken)
    assert live.refresh() is False
    assert live.masker is masker
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "not refreshed" in warnings[0]
    assert_no_value(warnings[0], broken)


def test_missing_secret_is_one_line(endpoint: str) -> None:
    with pytest.raises(KeyRingError) as caught:
        load_configured_keyring(settings_for(endpoint, "secretsmanager:maskstream/nowhere"))
    message = str(caught.value)
    assert message == (
        "MASKSTREAM_KEYRING_SOURCE: secretsmanager:maskstream/nowhere does not exist "
        "(or is not visible to these credentials) (ResourceNotFoundException)"
    )
    with pytest.raises(KeyRingError, match=r"ssm:/nowhere does not exist .*ParameterNotFound"):
        load_configured_keyring(settings_for(endpoint, "ssm:/nowhere"))


def test_malformed_content_names_the_source_not_the_value(endpoint: str) -> None:
    document = dump_keyring(new_keyring())
    truncated = document[: len(document) // 2]
    client(endpoint, "secretsmanager").create_secret(Name="maskstream/cut", SecretString=truncated)
    with pytest.raises(KeyRingError) as caught:
        load_configured_keyring(settings_for(endpoint, "secretsmanager:maskstream/cut"))
    assert str(caught.value) == "secretsmanager:maskstream/cut: not a JSON key ring document"
    assert_no_value(str(caught.value), document)


def set_moto_auth(endpoint: str, free_actions: str) -> None:
    """Moto enforces IAM once this many more actions have run ("inf": never)."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=free_actions.encode(),
        method="POST",
        # Not a form: moto reads the raw body, which werkzeug empties for forms.
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


@pytest.fixture
def user_without_permissions(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A secret, and credentials of an IAM user with no policy, with IAM enforced."""
    document = dump_keyring(new_keyring())
    client(endpoint, "secretsmanager").create_secret(
        Name="maskstream/guarded", SecretString=document
    )
    iam = client(endpoint, "iam")
    iam.create_user(UserName="no-rights")
    key = iam.create_access_key(UserName="no-rights")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    set_moto_auth(endpoint, "0")
    try:
        yield document
    finally:
        set_moto_auth(endpoint, "inf")


def test_denied_read_is_one_line(endpoint: str, user_without_permissions: str) -> None:
    with pytest.raises(KeyRingError) as caught:
        load_configured_keyring(settings_for(endpoint, "secretsmanager:maskstream/guarded"))
    message = str(caught.value)
    # Moto refuses with a bare 403 where AWS says AccessDeniedException: both are a denial.
    assert message.startswith(
        "MASKSTREAM_KEYRING_SOURCE: access to secretsmanager:maskstream/guarded denied ("
    )
    assert message.endswith(
        "): the role needs secretsmanager:GetSecretValue (and kms:Decrypt on its KMS key)"
    )
    assert_no_value(message, user_without_permissions)


# --------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("secretsmanager:prod/keyring", SecretRef("secretsmanager", "prod/keyring")),
        ("ssm:/prod/keyring", SecretRef("ssm", "/prod/keyring")),
        (
            "arn:aws:secretsmanager:eu-central-1:123456789012:secret:prod/keyring-AbCdEf",
            SecretRef(
                "secretsmanager",
                "arn:aws:secretsmanager:eu-central-1:123456789012:secret:prod/keyring-AbCdEf",
                "eu-central-1",
            ),
        ),
        (
            "ssm:arn:aws:ssm:us-west-2:123456789012:parameter/prod/keyring",
            SecretRef(
                "ssm", "arn:aws:ssm:us-west-2:123456789012:parameter/prod/keyring", "us-west-2"
            ),
        ),
    ],
)
def test_parses_references(text: str, expected: SecretRef) -> None:
    assert parse_secret_ref(text) == expected


@pytest.mark.parametrize(
    "text", ["prod/keyring", "s3:bucket/key", "ssm:", "arn:aws:s3:::bucket/keyring"]
)
def test_refuses_what_is_not_a_reference(text: str) -> None:
    with pytest.raises(SecretSourceError):
        parse_secret_ref(text)


def test_kms_denial_names_the_permissions() -> None:
    refusal = ClientError(
        {"Error": {"Code": "AccessDeniedException", "Message": "User: arn:... value=hunter2"}},
        "GetParameter",
    )
    line = client_error_line(SecretRef("ssm", "/prod/keyring"), refusal)
    assert line == (
        "access to ssm:/prod/keyring denied (AccessDeniedException): "
        "the role needs ssm:GetParameter (and kms:Decrypt on its KMS key)"
    )
    assert "hunter2" not in line  # AWS's message is never quoted


def test_source_and_file_together_are_refused() -> None:
    settings = Settings(keyring_source="ssm:/k", keyring_file="/k.json", keyring_json="")
    with pytest.raises(KeyRingError, match="unset all but one"):
        load_configured_keyring(settings)


def test_a_worker_refused_its_key_ring_exits_2_with_one_line(endpoint: str, tmp_path: Path) -> None:
    """The worker's start path (stream.app) turns the AWS error into one line and status 2."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MASKSTREAM_", "AWS_"))
    }
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        MASKSTREAM_AWS_ENDPOINT_URL=endpoint,
        MASKSTREAM_KEYRING_SOURCE="secretsmanager:maskstream/absent",
        MASKSTREAM_DATA_DIR=str(tmp_path / "data"),
    )
    done = subprocess.run(
        [sys.executable, "-c", "import stream.app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "maskstream worker: MASKSTREAM_KEYRING_SOURCE: secretsmanager:maskstream/absent "
        "does not exist (or is not visible to these credentials) (ResourceNotFoundException)"
    ]


class Rings:
    """A key ring source that rotates when told, counting reads."""

    def __init__(self) -> None:
        self.ring = new_keyring()
        self.reads = 0

    def read(self) -> KeyRing:
        self.reads += 1
        return self.ring


def test_sighup_refreshes_at_once() -> None:
    rings = Rings()
    live = LiveKeyRing(rings.read)

    async def hang_up() -> None:
        loop = asyncio.get_running_loop()
        live.refresh_on_sighup(loop)
        try:
            rings.ring = rotate(rings.ring)
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(100):
                if live.active_key_id == rings.ring.active_id:
                    return
                await asyncio.sleep(0.02)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)

    asyncio.run(hang_up())
    assert live.active_key_id == rings.ring.active_id
    assert rings.reads == 2


def test_refreshes_on_its_interval_and_never_with_zero() -> None:
    rings = Rings()
    live = LiveKeyRing(rings.read)

    async def run_for(seconds: float, interval: float) -> None:
        task = asyncio.create_task(live.refresh_every(interval))
        await asyncio.sleep(seconds)
        task.cancel()

    asyncio.run(run_for(0.3, 0))
    assert rings.reads == 1  # at start only
    rings.ring = rotate(rings.ring)
    asyncio.run(run_for(0.3, 0.05))
    assert rings.reads >= 3 and live.active_key_id == rings.ring.active_id


@pytest.mark.services
def test_a_running_worker_masks_with_the_rotated_key_after_sighup(
    endpoint: str, pipeline: IsolatedPipeline
) -> None:
    """The whole path: a worker reads its ring from Secrets Manager, the secret is
    rotated there, SIGHUP, and the next logins carry the new key id (no restart)."""
    first = new_keyring()
    name = f"maskstream/{pipeline.name}"
    client(endpoint, "secretsmanager").create_secret(Name=name, SecretString=dump_keyring(first))
    pipeline.launcher.start_worker(
        "worker",
        extra_env={
            "MASKSTREAM_KEYRING_FILE": "",
            "MASKSTREAM_KEYRING_SOURCE": f"secretsmanager:{name}",
            "MASKSTREAM_KEYRING_REFRESH_SECONDS": "0",  # only SIGHUP re-reads it here
            "MASKSTREAM_AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        },
    )

    def logins(label: str) -> list[RawMessage]:
        return [RawMessage(f"{label}-{n}", login_body(device_id=f"dev-{n}")) for n in range(3)]

    pipeline.produce_raw(logins("before"))
    pipeline.wait_for_outcomes(3)

    second = rotate(first)
    client(endpoint, "secretsmanager").put_secret_value(
        SecretId=name, SecretString=dump_keyring(second)
    )
    pipeline.launcher.signal_workers(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while f"active key {second.active_id}" not in pipeline.launcher.log("worker"):
        assert time.monotonic() < deadline, "the worker did not refresh its key ring"
        time.sleep(0.2)

    pipeline.produce_raw(logins("after"))
    pipeline.wait_for_outcomes(6)
    rows = pipeline.query("SELECT message_id, masked_ip FROM user_logins")
    key_ids = {(message_id.split("-")[0], token.split(":")[1]) for message_id, token in rows}
    assert len(rows) == 6
    assert key_ids == {("before", first.active_id), ("after", second.active_id)}
