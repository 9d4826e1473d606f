"""Ports taken between choosing and binding, on the real servers: a stack's
service or a launched worker or bridge that loses its port comes up on
another one, and two stacks started at the same moment both come up."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from stream.common.listeners import listens_on
from stream.common.ports import any_free_port
from stream.devstack import kafka, manager
from stream.devstack.envfile import read_env_file
from stream.devstack.manager import Stack
from stream.devstack.processes import read_pid
from stream.ops.launcher import Launcher
from tests.support.sandbox import IsolatedPipeline

pytestmark = pytest.mark.services

# The ports of a one-node stack that a client finds in its env file, by variable.
ENV_PORTS = {
    "kafka": ("KAFKA_BOOTSTRAP_SERVERS", lambda url: url.rsplit(":", 1)[1]),
    "elasticmq": ("AWS_ENDPOINT_URL_SQS", lambda url: url.rsplit(":", 1)[1]),
    "postgres": ("DATABASE_URL", lambda url: url.split("@127.0.0.1:")[1].split("/")[0]),
}


def env_port(variables: dict[str, str], key: str) -> int:
    name, extract = ENV_PORTS[key]
    return int(extract(variables[name]))


def occupy(port: int) -> socket.socket:
    """Listen on *port* as another process would that took it first."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def assert_serves_on_its_own_ports(stack: Stack) -> None:
    for service in stack.services():
        pid = read_pid(service.pid_file)
        ports = [stack.ports[key] for key in service.port_keys()]
        assert pid is not None and listens_on(pid, ports), (service.name, ports)


def take_down(stack_dir: Path) -> list[str]:
    """``down``, then remove the PostgreSQL data that a stack under a private
    temporary directory keeps in /var/lib/maskstream (see postgres.py)."""
    stopped = Stack(stack_dir).down()
    for link in stack_dir.glob("postgres*"):
        if link.is_symlink():
            shutil.rmtree(link.resolve(), ignore_errors=True)
    return stopped


def used_ports(stack: Stack) -> set[int]:
    return {stack.ports[key] for service in stack.services() for key in service.port_keys()}


@pytest.fixture
def own_database_env() -> Iterator[None]:
    """No DATABASE_URL: a stack made here runs its own PostgreSQL."""
    saved = os.environ.pop("DATABASE_URL", None)
    yield
    if saved is not None:
        os.environ["DATABASE_URL"] = saved


def test_services_whose_ports_are_taken_after_choosing_come_up_on_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_database_env: None
) -> None:
    """Kafka (broker and controller port: its storage is formatted for the
    lost controller address), ElasticMQ and PostgreSQL each lose their port
    between `up` choosing it and the server binding it."""
    stack = Stack(tmp_path / "stack")
    taken: dict[str, int] = {}
    assign = Stack._assign_ports
    with ExitStack() as thieves:

        def assign_then_take(self: Stack, running: set[str]) -> None:
            assign(self, running)
            for key in ("kafka", "kafka_controller", "elasticmq", "postgres"):
                taken[key] = self.ports[key]
                thieves.enter_context(occupy(taken[key]))

        monkeypatch.setattr(Stack, "_assign_ports", assign_then_take)
        try:
            stack.up()
            assert all(stack.ports[key] != port for key, port in taken.items()), taken
            assert_serves_on_its_own_ports(stack)
            variables = read_env_file(stack.env_file)
            for key in ENV_PORTS:
                assert env_port(variables, key) == stack.ports[key] != taken[key]
            # Each lost its port, and said so in its log, before coming up.
            for name in ("kafka", "elasticmq", "postgres"):
                log = stack.service(name).log_file.read_text(errors="replace")
                assert "address already in use" in log.lower(), name
        finally:
            take_down(stack.dir)


@pytest.mark.faults
def test_a_cluster_node_that_lost_its_controller_port_restarts_the_cluster_on_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """The issue's case: the third of three Kafka nodes cannot bind. Every
    node's config names its controller port, so the whole cluster starts again
    with the new one, before any client is told where it is."""
    stack = Stack(tmp_path / "stack", external_database_url=database_url, brokers=3)
    key = kafka.port_key(3, "controller")
    assign = Stack._assign_ports
    with ExitStack() as thieves:

        def assign_then_take(self: Stack, running: set[str]) -> None:
            assign(self, running)
            thieves.enter_context(occupy(self.ports[key]))
            taken.append(self.ports[key])

        taken: list[int] = []
        monkeypatch.setattr(Stack, "_assign_ports", assign_then_take)
        try:
            stack.up()
            assert stack.ports[key] != taken[0]
            assert_serves_on_its_own_ports(stack)
            voter = f"3@127.0.0.1:{stack.ports[key]}"
            for node in stack.kafka_nodes():
                assert voter in (node.dir / "server.properties").read_text(), node.name
            servers = read_env_file(stack.env_file)["KAFKA_BOOTSTRAP_SERVERS"]
            assert servers == ",".join(node.bootstrap for node in stack.kafka_nodes())
        finally:
            take_down(stack.dir)


def test_a_failed_up_names_the_service_and_its_log_and_leaves_nothing_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_database_env: None
) -> None:
    """PostgreSQL's port is taken at every attempt: `up` gives up after the
    last one, in one line naming it and its log, and stops Kafka and ElasticMQ,
    which it had started and which were answering."""
    stack = Stack(tmp_path / "stack")
    assign = Stack._assign_ports
    with ExitStack() as thieves:

        def assign_then_take(self: Stack, running: set[str]) -> None:
            assign(self, running)
            thieves.enter_context(occupy(self.ports["postgres"]))

        monkeypatch.setattr(Stack, "_assign_ports", assign_then_take)
        # Every new port handed out is the one someone holds.
        monkeypatch.setattr(manager, "fresh_port", lambda taken: stack.ports["postgres"])
        with pytest.raises(RuntimeError) as failure:
            stack.up()
    message = str(failure.value)
    assert message.startswith("postgres could not bind its ports in 5 attempts"), message
    log = Path(message.rpartition("; see its log: ")[2])
    assert log.resolve() == stack.service("postgres").log_file.resolve(), message
    assert "\n" not in message
    assert not any(stack.status().values()), stack.status()
    assert take_down(stack.dir) == []


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(any_free_port())
    return sorted(ports)


def test_two_stacks_started_at_once_wanting_the_same_ports_both_come_up(
    tmp_path: Path,
) -> None:
    """As two engineers' `stack up` at the same moment: both record the same
    free ports (as both would pick the same defaults), so every server of one
    loses its port to the other's, which `up` must survive."""
    keys = ["kafka", "kafka_controller", "kafka_sasl", "elasticmq", "postgres"]
    wanted = dict(zip(keys, free_ports(len(keys)), strict=True))
    dirs = [tmp_path / "one", tmp_path / "two"]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    for stack_dir in dirs:
        stack_dir.mkdir()
        (stack_dir / "state.json").write_text(json.dumps({"ports": wanted}))
    try:
        ups = [
            subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "stack", "up"],
                env={**env, "MASKSTREAM_STACK_DIR": str(stack_dir)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for stack_dir in dirs
        ]
        for up in ups:
            _, errors = up.communicate(timeout=400)
            assert up.returncode == 0, errors
        stacks = [Stack(stack_dir) for stack_dir in dirs]
        for stack in stacks:
            assert_serves_on_its_own_ports(stack)
            variables = read_env_file(stack.env_file)
            assert all(env_port(variables, key) == stack.ports[key] for key in ENV_PORTS)
        assert not used_ports(stacks[0]) & used_ports(stacks[1])
    finally:
        downs = [take_down(stack_dir) for stack_dir in dirs]
    assert all(downs)
    for stack in (Stack(stack_dir) for stack_dir in dirs):
        assert not any(stack.status().values())


def test_a_worker_and_a_bridge_whose_port_is_taken_at_start_run_on_another(
    pipeline: IsolatedPipeline, tmp_path: Path
) -> None:
    """The launcher hands each child a port someone takes before the child
    binds it; the child is started again on a free one, and the scrape
    target registered for Prometheus names that one."""
    pipeline.create_queue()
    targets = tmp_path / "targets"
    targets.mkdir()
    launcher = Launcher(
        {**pipeline.env, "MASKSTREAM_SCRAPE_TARGETS_DIR": str(targets)}, tmp_path / "children"
    )
    with ExitStack() as thieves:
        stolen: list[int] = []

        def lose_the_first_port() -> int:
            port = any_free_port()
            if launcher.pick_port is lose_the_first_port:  # once per child
                launcher.pick_port = any_free_port
                stolen.append(port)
                thieves.enter_context(occupy(port))
            return port

        try:
            children = {}
            for name, start in (
                ("worker", launcher.start_worker),
                ("bridge", launcher.start_bridge),
            ):
                launcher.pick_port = lose_the_first_port
                children[name] = start(name)
            for name, child in children.items():
                port = launcher.web_ports[name]
                assert port not in stolen
                assert child.poll() is None, launcher.log(name)[-3000:]
                assert listens_on(child.pid, [port]), launcher.log(name)[-3000:]
                assert "address already in use" in launcher.log(name).lower()
            registered = [json.loads(path.read_text()) for path in targets.iterdir()]
            assert sorted(entry[0]["targets"][0] for entry in registered) == sorted(
                f"127.0.0.1:{launcher.web_ports[name]}" for name in children
            )
        finally:
            launcher.stop_all()
