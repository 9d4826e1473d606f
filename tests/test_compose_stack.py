"""`docker compose up`, for real: docker-compose.yml run on podman.

podman-compose (PyPI) drives Debian's podman with the project's own
``docker/podman/containers.conf``; the three outside images are the
stand-ins ``docker/standins/build.sh`` makes (PostgreSQL 10.23, a
query-protocol-only SQS filled from ``docker/standins/localstack/sample_data.jsonl``,
Kafka 4.4.0), the project's image is built by ``up --build`` itself. The
commands are the README's, in a copy of the working tree, under a project
name and host ports of the test's own. The tests share one stack and run in
file order: up, what it wrote, status, a killed worker, down and up again.

They need root, podman, buildah and Maven (``.ci/run`` installs them); where
podman is not installed, or not as root, they are skipped, and pytest says why.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from stream.core.validation import InvalidLogin, parse_login
from stream.ops.outcomes import Progress, outcome_counts, wait_for_outcomes
from tests.support.compose import (
    IMAGE_USER,
    REPO_ROOT,
    STANDINS_SCRIPT,
    ComposeProject,
    copy_tracked_files,
    missing_tools,
)

pytestmark = pytest.mark.compose

SAMPLE = REPO_ROOT / "docker" / "standins" / "localstack" / "sample_data.jsonl"
LINES = SAMPLE.read_bytes().splitlines()
WORKERS = 3
# The pipeline's services, named on `up`: no registry serves Prometheus and
# Grafana here, and Grafana has no Debian package to make a stand-in from.
PIPELINE = ("sqs", "kafka", "postgres", "bridge", "worker")
# The tag docker-compose.yml builds (as `make image` does).
PROJECT_IMAGE = "localhost/maskstream:local"
DATA_DIR = "/var/lib/maskstream/faust-data"
# Asks a worker's own web view for devices' entries, from inside its container.
ASK_WORKER = """
import json, sys, urllib.parse, urllib.request
for device in sys.stdin.read().split():
    url = "http://127.0.0.1:6066/seen-devices/" + urllib.parse.quote(device, safe="") + "/"
    with urllib.request.urlopen(url, timeout=10) as answer:
        print(json.dumps(json.load(answer)))
"""

# A ListQueues call in SQS's JSON protocol: prints the answer's status and type.
ASK_SQS_IN_JSON = """
import urllib.error, urllib.request
request = urllib.request.Request("http://127.0.0.1:4566/", data=b"{}", headers={
    "X-Amz-Target": "AmazonSQS.ListQueues", "Content-Type": "application/x-amz-json-1.0"})
try:
    answer = urllib.request.urlopen(request, timeout=10)
except urllib.error.HTTPError as error:
    answer = error
print(answer.status, answer.headers.get("Content-Type"))
"""


def valid(line: bytes) -> bool:
    try:
        parse_login(line)
    except InvalidLogin:
        return False
    return True


VALID = sum(map(valid, LINES))


def raw_pii(lines: list[bytes]) -> set[str]:
    """Every IP and device id in the sample, valid message or not."""
    found = set()
    for line in lines:
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict):
            for name in ("ip", "device_id"):
                value = document.get(name)
                if isinstance(value, str) and len(value) >= 7:
                    found.add(value)
    return found


PII = raw_pii(LINES)


def leaked(text: str) -> set[str]:
    """The sample's raw values that appear in *text* as whole tokens."""
    return PII & set(re.findall(r"[\w.:-]+", text))


class NoChildren:
    """wait_for_outcomes watches a launcher's children; compose's containers
    restart themselves, so a wait ends only by its outcomes or its timeout."""

    def failed(self) -> dict[str, str]:
        return {}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeProject]:
    """The README's commands up to `up`: stand-ins, key ring, up --build --scale worker=3."""
    missing = missing_tools()
    if "podman" in missing:
        pytest.skip("podman is not installed (.ci/run installs it: apt-get install podman)")
    if os.geteuid() != 0:
        pytest.skip("buildah's chroot isolation and podman's settings here need root")
    assert not missing, f"missing {missing}: see .ci/run for the packages"
    built = subprocess.run(
        ["bash", str(STANDINS_SCRIPT)], capture_output=True, text=True, timeout=1800
    )
    assert built.returncode == 0, built.stderr[-4000:]
    print(*re.findall(r"^standins: .*$", built.stderr, re.MULTILINE), sep="\n")

    directory = tmp_path_factory.mktemp("compose")
    copy_tracked_files(directory)
    stack = ComposeProject(directory, name=f"maskstream-test-{uuid.uuid4().hex[:6]}")
    stack.run([str(Path(sys.executable).with_name("maskstream")), "keygen", "secrets/keyring.json"])
    stack.run(["chown", str(IMAGE_USER), "secrets/keyring.json"])
    replaced = stack.image_id(PROJECT_IMAGE)
    try:
        stack.compose(
            "up", "-d", "--build", "--scale", f"worker={WORKERS}", *PIPELINE, timeout=1200
        )
        if replaced and replaced != stack.image_id(PROJECT_IMAGE):
            stack.run(["podman", "rmi", replaced], check=False)  # the build left it nameless
        yield stack
    finally:
        stack.remove()


def progress(stack: ComposeProject) -> Progress:
    try:
        with psycopg.connect(stack.database_url, connect_timeout=5) as conn:
            return outcome_counts(conn)
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return Progress(0, 0)


def wait_for_all(stack: ComposeProject, expected: int) -> Progress:
    try:
        return wait_for_outcomes(lambda: progress(stack), expected, 600, NoChildren(), interval=2)
    except Exception as exc:
        logs = {c: stack.logs(c)[-1500:] for c in stack.containers()}
        raise AssertionError(f"{exc}; last logs: {json.dumps(logs, indent=1)}") from None


def query(stack: ComposeProject, statement: str | sql.Composable) -> list[tuple]:
    with psycopg.connect(stack.database_url) as conn:
        return conn.execute(statement).fetchall()


def device_mismatches(stack: ComposeProject) -> list[tuple]:
    """seen_devices rows that differ from the user_logins rows of their device."""
    return query(
        stack,
        "SELECT l.masked_device_id, d.login_count, l.n FROM"
        " (SELECT masked_device_id, count(*) AS n, min(sent_at) AS first, max(sent_at) AS last"
        "  FROM user_logins GROUP BY 1) l"
        " FULL JOIN seen_devices d USING (masked_device_id)"
        " WHERE d.login_count IS DISTINCT FROM l.n OR d.first_seen IS DISTINCT FROM l.first"
        " OR d.last_seen IS DISTINCT FROM l.last",
    )


def test_up_turns_every_queued_message_into_a_row_or_a_rejection(
    project: ComposeProject,
) -> None:
    done = wait_for_all(project, len(LINES))
    assert done == Progress(VALID, len(LINES) - VALID)
    assert len(project.containers("worker")) == WORKERS
    # The exercise's table, migrated in place on PostgreSQL 10.
    version = query(project, "SHOW server_version")[0][0]
    assert version.startswith("10."), version
    assert device_mismatches(project) == []
    distinct = query(project, "SELECT count(DISTINCT message_id), count(*) FROM user_logins")[0]
    assert distinct == (VALID, VALID)


def test_no_raw_pii_in_postgres_or_any_container_log(project: ComposeProject) -> None:
    tables = [
        name
        for (name,) in query(project, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    ]
    assert {"user_logins", "rejected_logins", "seen_devices"} <= set(tables)
    for table in tables:
        stored = query(project, sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table)))
        assert not leaked("\n".join(row for (row,) in stored)), table
    for container in project.containers():
        assert not leaked(project.logs(container)), container


def test_health_checks_of_every_service_pass(project: ComposeProject) -> None:
    """podman runs health checks through systemd timers, which are absent
    here: run each container's check as the timer would, until it passes
    within the start period and retries its configuration allows."""
    checked = [c for c in project.containers() if project.inspect(c)["Config"].get("Healthcheck")]
    assert {"sqs", "kafka", "postgres", "worker"} <= {c.split("_")[-2] for c in checked}
    for container in checked:
        assert project.becomes_healthy(container), container


def test_the_sqs_stand_in_answers_only_the_query_protocol(project: ComposeProject) -> None:
    """Like the exercise's localstack: a JSON-protocol call gets no JSON answer."""
    (sqs,) = project.containers("sqs")
    asked = project.run(["podman", "exec", "-i", sqs, "python", "-c", ASK_SQS_IN_JSON])
    status, content_type = asked.stdout.split(maxsplit=1)
    assert status != "200" or "json" not in content_type, asked.stdout


def test_status_runs_in_the_compose_network_and_shows_the_counts(
    project: ComposeProject,
) -> None:
    shown = project.compose("--profile", "tools", "run", "--rm", "status", timeout=120).stdout
    assert "messages: 0 visible, 0 in flight" in shown, shown
    assert f"user_logins: {VALID} rows" in shown, shown
    assert f"rejected_logins: {len(LINES) - VALID} rows" in shown, shown


def test_a_killed_worker_restarts_on_its_volume_with_exact_counts(
    project: ComposeProject,
) -> None:
    """SIGKILL to a worker's process (a crash, not a stop): the restart policy
    starts the same container again on the same anonymous volume, and the
    worker answers its partitions' devices from its own RocksDB table with
    the counts in PostgreSQL."""
    worker = project.containers("worker")[0]
    volumes = {name: project.volumes_of(name)[DATA_DIR] for name in project.containers("worker")}
    assert len(set(volumes.values())) == WORKERS, "each replica has a volume of its own"
    before = project.inspect(worker)
    init_pid = before["State"]["Pid"]
    children = Path(f"/proc/{init_pid}/task/{init_pid}/children").read_text().split()
    assert len(children) == 1, children
    os.kill(int(children[0]), 9)

    wait_for_restart(project, worker, before["RestartCount"])
    after = project.inspect(worker)
    assert after["Id"] == before["Id"]
    assert project.volumes_of(worker)[DATA_DIR] == volumes[worker]
    on_volume = project.podman("exec", worker, "ls", "-A", DATA_DIR)
    assert on_volume.split(), "no table data on the volume"

    per_device = dict(
        query(project, "SELECT masked_device_id, count(*) FROM user_logins GROUP BY 1")
    )
    from_table = wait_for_own_partitions(project, worker, list(per_device))
    assert from_table, "the restarted worker answered no device from its own table"
    assert from_table == {device: per_device[device] for device in from_table}


def wait_for_own_partitions(
    project: ComposeProject, worker: str, devices: list[str]
) -> dict[str, int]:
    """Ask *worker* for every device until it answers some from its own table
    (it does once the group has given it partitions again): device -> count."""
    deadline = time.monotonic() + 300
    while True:
        asked = project.run(
            ["podman", "exec", "-i", worker, "python", "-c", ASK_WORKER],
            input_text="\n".join(devices),
        )
        answers = [json.loads(line) for line in asked.stdout.splitlines()]
        from_table = {a["device"]: a["login_count"] for a in answers if a["source"] == "table"}
        if from_table or time.monotonic() > deadline:
            return from_table
        time.sleep(5)


def wait_for_restart(project: ComposeProject, container: str, restarts: int) -> None:
    """Until the container runs again after *restarts* and its health check passes."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = project.inspect(container)
        back = state["RestartCount"] > restarts and state["State"]["Status"] == "running"
        if back and project.healthy(container):
            return
        time.sleep(2)
    raise AssertionError(f"{container} did not come back: {project.logs(container)[-3000:]}")


def test_down_then_up_keeps_the_data_and_writes_each_message_once(
    project: ComposeProject,
) -> None:
    """The bridge and workers stop cleanly (exit 0); `down` keeps Kafka's and
    PostgreSQL's volumes. The SQS image keeps no state: `up` fills login-queue
    again, as the exercise's localstack does, so the same bodies arrive as new
    SQS messages (new message ids). Each of those becomes one row or rejection;
    nothing from the first run is written again."""
    first = set(query(project, "SELECT message_id FROM user_logins"))
    # The pipeline first, while Kafka and PostgreSQL still answer: podman-compose's
    # `down` stops every container at once, and a worker then outlives its grace.
    project.compose("stop", "bridge", "worker", timeout=300)
    pipeline = project.containers("bridge") + project.containers("worker")
    exits = {c: project.inspect(c)["State"]["ExitCode"] for c in pipeline}
    assert exits == dict.fromkeys(pipeline, 0)
    project.compose("down", timeout=300)
    assert project.containers() == []
    project.compose("up", "-d", "--scale", f"worker={WORKERS}", *PIPELINE, timeout=600)

    done = wait_for_all(project, 2 * len(LINES))
    assert done == Progress(2 * VALID, 2 * (len(LINES) - VALID))
    assert first <= set(query(project, "SELECT message_id FROM user_logins"))
    distinct = query(project, "SELECT count(DISTINCT message_id), count(*) FROM user_logins")[0]
    assert distinct == (2 * VALID, 2 * VALID)
    assert device_mismatches(project) == []
