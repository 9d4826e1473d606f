"""The container image, built from the real Dockerfile and run for real.

``docker/build-local.sh`` builds the image with buildah on a stand-in for
python:3.11-slim (no Docker engine or registry is needed); containers of it
run with ``buildah run`` on the host's network (tests/support/containers.py).
The tests need root and buildah (``.ci/run`` installs buildah and
debootstrap); where either is missing they are skipped and pytest says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from stream.common.ports import any_free_port
from tests.support.containers import BUILD_SCRIPT, Container, buildah, image_size
from tests.support.sandbox import IsolatedPipeline
from tests.test_compose import HEALTH_PROGRAM

pytestmark = pytest.mark.image

# Its own tag, so a test run never replaces the image `make image` built.
IMAGE = "localhost/maskstream:test"
USER_ID = "10001"
DATA_DIR = "/var/lib/maskstream/faust-data"
KEYRING_IN_CONTAINER = "/run/secrets/maskstream-keyring.json"
# Variables of the local stack that name host paths or the stack's own extras.
HOST_ONLY = ("MASKSTREAM_STACK_DIR", "MASKSTREAM_KEYRING_FILE", "STACK_")
# Names of working-tree files that must never reach an image layer.
FORBIDDEN_NAME = re.compile(r"keyring.*\.json|.*\.key|\.stack.*|\.venv|\.git|secrets")
SITE_PACKAGES = "opt/maskstream/lib/python3.11/site-packages"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image, built by the same script as `make image` (the base is cached)."""
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (apt-get install buildah debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("buildah's chroot isolation needs root")
    log = tmp_path_factory.mktemp("image") / "build.log"
    with log.open("w") as out:
        built = subprocess.run(
            ["bash", str(BUILD_SCRIPT), IMAGE], stdout=out, stderr=subprocess.STDOUT, timeout=1200
        )
    text = log.read_text()
    assert built.returncode == 0, text[-4000:]
    print(*re.findall(r"^build-local: .*$", text, re.MULTILINE), f"image size {image_size(IMAGE)}")
    return IMAGE


@pytest.fixture
def container(image: str) -> Iterator[Callable[..., Container]]:
    """Make containers of the image; each is removed after the test."""
    made: list[Container] = []

    def make(
        env: Mapping[str, str] | None = None, read_only: Mapping[Path, str] | None = None
    ) -> Container:
        name = f"maskstream-test-{uuid.uuid4().hex[:8]}"
        made.append(Container(image, name, dict(env or {}), dict(read_only or {})))
        return made[-1]

    yield make
    for each in made:
        each.remove()


def test_image_prints_the_cli_help_by_default(container: Callable[..., Container]) -> None:
    done = container().run()
    assert done.returncode == 0, done.stderr
    assert "usage: maskstream" in done.stdout
    for command in ("status", "replay", "keygen"):
        assert command in done.stdout


def test_container_runs_as_the_unprivileged_user_who_owns_the_data_volume(
    container: Callable[..., Container],
) -> None:
    box = container()
    assert box.config.user == USER_ID
    assert box.config.entrypoint == ("maskstream-entrypoint",)
    assert DATA_DIR in box.config.volumes
    done = box.run(
        ["sh", "-c", f"id -u; id -g; touch {DATA_DIR}/probe && stat -c %u:%g {DATA_DIR}"],
        entrypoint=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [USER_ID, USER_ID, f"{USER_ID}:{USER_ID}"]


def test_image_holds_no_key_ring_stack_state_or_build_context(
    container: Callable[..., Container], stack_env: dict[str, str]
) -> None:
    """Nothing of the working tree but the package: no key ring (by name or
    by its secret), no `.stack`, no tests, venv, git history or sources dir."""
    keyring = json.loads(Path(stack_env["MASKSTREAM_KEYRING_FILE"]).read_text())
    secrets = [key["secret"].encode() for key in keyring["keys"].values()]
    box = container()
    root = Path(buildah("mount", box.name))
    try:
        suspicious, holding_secret = [], []
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            for name in dirs + files:
                if FORBIDDEN_NAME.fullmatch(name):
                    suspicious.append(str((here / name).relative_to(root)))
            for name in files:
                path = here / name
                if path.is_file() and not path.is_symlink() and path.stat().st_size < 64 << 20:
                    content = path.read_bytes()
                    if any(secret in content for secret in secrets):
                        holding_secret.append(str(path.relative_to(root)))
        assert not holding_secret
        # Debian's key rings are not ours.
        ours = [p for p in suspicious if not re.match(r"(usr/share|etc/apt)/", p)]
        assert not ours
        installed = {p.name for p in (root / SITE_PACKAGES).iterdir()}
        assert {"stream", "bridge"} <= installed
        assert not installed & {"tests", "bench", "docker"}
        assert not (root / "src").exists()
    finally:
        buildah("umount", box.name)


def login_lines(ips: list[str], devices: int) -> list[bytes]:
    """One valid login per IP, spread over *devices* device ids."""
    return [
        json.dumps(
            {
                "user_id": str(uuid.uuid4()),
                "app_version": "2.3.0",
                "device_type": "android",
                "ip": ip,
                "locale": "RU",
                "device_id": f"593-47-{n % devices:04d}",
            }
        ).encode()
        for n, ip in enumerate(ips)
    ]


def container_env(pipeline: IsolatedPipeline, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The pipeline's variables as a container gets them, and the key ring as
    an operator gives it to one: a copy readable by the image's user alone
    (mount it read-only at KEYRING_IN_CONTAINER)."""
    keyring = tmp_path / "keyring.json"
    shutil.copyfile(pipeline.env["MASKSTREAM_KEYRING_FILE"], keyring)
    os.chown(keyring, int(USER_ID), int(USER_ID))
    keyring.chmod(0o400)
    env = {name: value for name, value in pipeline.env.items() if not name.startswith(HOST_ONLY)}
    env["MASKSTREAM_KEYRING_FILE"] = KEYRING_IN_CONTAINER
    return env, keyring


def wait_for_empty_queue(pipeline: IsolatedPipeline, timeout: float = 30.0) -> int:
    """The bridge deletes a message once Kafka has it, in batches: soon after
    its row lands. The queue's depth once it is 0 or *timeout* has passed."""
    deadline = time.monotonic() + timeout
    while (depth := pipeline.queue_depth()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return depth


def worker_argv(worker: Container, port: int) -> list[str]:
    return worker.argv(["worker", "--web-port", str(port)])


@pytest.mark.services
def test_bridge_and_worker_containers_turn_sqs_messages_into_masked_rows(
    container: Callable[..., Container], pipeline: IsolatedPipeline, tmp_path: Path
) -> None:
    """The image's `bridge` and `worker` roles against the local stack: every
    message becomes a row or a rejection, the queue empties, raw values stay
    out of Postgres and the logs, and both stop cleanly on SIGTERM."""
    pipeline.create_queue()
    env, keyring = container_env(pipeline, tmp_path)
    ips = [f"198.51.100.{n}" for n in range(40)]
    lines = [*login_lines(ips, devices=7), b"not json", b'{"foo": "oops_wrong_message_format"}']
    assert pipeline.send_to_sqs(lines) == len(lines)

    worker = container(env=env, read_only={keyring: KEYRING_IN_CONTAINER})
    ports = {"worker": any_free_port(), "bridge": any_free_port()}
    bridge = container(env=env | {"MASKSTREAM_BRIDGE_METRICS_PORT": str(ports["bridge"])})
    launcher = pipeline.launcher
    worker_run = launcher.start("worker", worker_argv(worker, ports["worker"]))
    bridge_run = launcher.start("bridge", bridge.argv(["bridge"]))

    pipeline.wait_for_outcomes(len(lines), timeout=180)
    # docker-compose.yml's health checks: the image's own program, in a
    # container of its own on the same (host) network.
    for role, port in ports.items():
        url = f"http://127.0.0.1:{port}/health"
        checked = container().run([HEALTH_PROGRAM, url], entrypoint=False)
        assert checked.returncode == 0, f"{role}: {checked.stdout}{checked.stderr}"
    assert pipeline.row_count() == len(ips)
    reasons = [r for (r,) in pipeline.query("SELECT reason FROM rejected_logins")]
    assert len(reasons) == 2 and any(r.startswith("not JSON") for r in reasons), reasons
    assert pipeline.device_mismatches() == {}
    stored = " ".join(str(row) for row in pipeline.query("SELECT * FROM user_logins"))
    assert not [ip for ip in ips if ip in stored]
    assert "593-47-" not in stored
    assert wait_for_empty_queue(pipeline) == 0

    assert Container.stop(bridge_run) == 0, launcher.log("bridge")[-3000:]
    assert Container.stop(worker_run) == 0, launcher.log("worker")[-3000:]
    logs = launcher.log("bridge") + launcher.log("worker")
    assert not [ip for ip in ips if ip in logs]
    assert "593-47-" not in logs


@pytest.mark.services
def test_worker_container_restarted_on_its_volume_keeps_exact_device_counts(
    container: Callable[..., Container], pipeline: IsolatedPipeline, tmp_path: Path
) -> None:
    """`seen_devices` lives in RocksDB on the image's data volume: a worker
    started again on the same volume after a SIGTERM answers every device's
    count from its own table, continuing from the first run's counts."""
    pipeline.create_queue()
    env, keyring = container_env(pipeline, tmp_path)
    worker = container(env=env, read_only={keyring: KEYRING_IN_CONTAINER})
    bridge = container(env=env | {"MASKSTREAM_BRIDGE_METRICS_PORT": str(any_free_port())})
    launcher = pipeline.launcher
    launcher.start("bridge", bridge.argv(["bridge"]))

    first = login_lines([f"203.0.113.{n}" for n in range(30)], devices=5)
    assert pipeline.send_to_sqs(first) == len(first)
    first_run = launcher.start("worker", worker_argv(worker, any_free_port()))
    pipeline.wait_for_outcomes(len(first), timeout=180)
    assert Container.stop(first_run) == 0, launcher.log("worker")[-3000:]
    on_volume = worker.run(["ls", "-A", DATA_DIR], entrypoint=False)
    assert on_volume.returncode == 0 and on_volume.stdout.strip(), "no table data on the volume"

    second = login_lines([f"203.0.113.{n}" for n in range(100, 120)], devices=5)
    assert pipeline.send_to_sqs(second) == len(second)
    port = any_free_port()
    launcher.start("worker-again", worker_argv(worker, port))
    pipeline.wait_for_outcomes(len(first) + len(second), timeout=180)

    per_device = dict(
        pipeline.query("SELECT masked_device_id, count(*) FROM user_logins GROUP BY 1")
    )
    assert len(per_device) == 5 and sum(per_device.values()) == len(first) + len(second)
    for device, rows in per_device.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/seen-devices/{device}/") as answer:
            entry = json.load(answer)
        assert (entry["source"], entry["login_count"]) == ("table", rows), entry
    assert pipeline.device_mismatches() == {}
    assert pipeline.changelog_mismatches() == {}
