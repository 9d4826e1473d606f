"""The local stack as a whole: Kafka, ElasticMQ and PostgreSQL as plain processes.

`up` is idempotent: services already answering are left alone, ports recorded
by an earlier `up` are reused so clients keep working across restarts, and a
default port held by something else is replaced by a free one. A port taken
between that choice and the server binding it (another stack starting at the
same moment) gets the server started again on another port (see
:mod:`restarts`). A failed `up` stops what it started. `down` stops only the
processes this stack directory started.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stream.common import settings as settings_module
from stream.common.listeners import BIND_ATTEMPTS
from stream.common.ports import choose_port, fresh_port, is_port_free
from stream.devstack import kafka, prerequisites
from stream.devstack.elasticmq import ElasticMQ, QueryOnlyElasticMQ
from stream.devstack.envfile import write_env_file
from stream.devstack.kafka import Kafka
from stream.devstack.postgres import Postgres, Postgres10
from stream.devstack.prometheus import Prometheus
from stream.devstack.restarts import give_up_message, ports_to_repick, services_to_restart
from stream.devstack.service import Service, Startup

DEFAULT_PORTS = {
    "elasticmq": 9324,
    "postgres": 5432,
    "elasticmq_query": 9325,
    "postgres10": 5433,
    "prometheus": 9090,
}
KEYRING_FILE_NAME = "keyring.json"


class Stack:
    """Start, stop and describe the services that live under one stack directory."""

    def __init__(
        self,
        stack_dir: Path,
        external_database_url: str | None = None,
        exercise: bool | None = None,
        brokers: int | None = None,
    ) -> None:
        """*exercise* adds the exercise's servers (default: as the last ``up`` left it)."""
        self.dir = stack_dir.resolve()
        self.state_file = self.dir / "state.json"
        self.env_file = self.dir / "env"
        state = self._read_state()
        self.ports: dict[str, int] = state.get("ports", {})
        self.external_database_url = external_database_url or state.get("external_database_url")
        #: Kafka nodes: as asked, else as recorded by the last `up`, else one.
        self.brokers: int = brokers or state.get("kafka_brokers", 1)
        self.exercise = bool(state.get("exercise", False)) if exercise is None else exercise
        # Prometheus runs only once asked for (`up --prometheus`), then until `down`.
        self.prometheus: bool = state.get("prometheus", False)

    @classmethod
    def from_settings(cls, settings: settings_module.Settings | None = None) -> Stack:
        """The stack in ``MASKSTREAM_STACK_DIR`` (default ``.stack``)."""
        settings = settings or settings_module.load()
        return cls(settings.stack_dir)

    # -- state -------------------------------------------------------------------

    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _write_state(self) -> None:
        state = {
            "ports": self.ports,
            "external_database_url": self.external_database_url,
            "kafka_brokers": self.brokers,
            "exercise": self.exercise,
            "prometheus": self.prometheus,
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    def kafka_nodes(self) -> list[Kafka]:
        return kafka.cluster(self.dir, self.ports, self.brokers)

    def services(self) -> Iterator[Service]:
        yield from self.kafka_nodes()
        yield ElasticMQ(self.dir, self.ports)
        if not self.external_database_url:
            yield Postgres(self.dir, self.ports)
        if self.exercise:
            # The exercise's own environment, for tests: a query-only SQS and PostgreSQL 10.
            yield QueryOnlyElasticMQ(self.dir, self.ports)
            yield Postgres10(self.dir, self.ports)
        if self.prometheus:
            yield Prometheus(self.dir, self.ports)

    def service(self, name: str) -> Service:
        for service in self.services():
            if service.name == name:
                return service
        raise KeyError(f"no service named {name!r} in this stack")

    # -- lifecycle -----------------------------------------------------------------

    def _check_prerequisites(self) -> None:
        prerequisites.require_java()
        prerequisites.require_maven()
        if not self.external_database_url:
            prerequisites.postgres_bin_dir()
        if self.prometheus:
            prerequisites.require_prometheus()

    def _check_kafka_size(self) -> None:
        """Refuse to start nodes whose storage was formatted for another quorum."""
        for node in self.kafka_nodes():
            formatted = node.formatted_for()
            if formatted is not None and formatted != self.brokers:
                raise RuntimeError(
                    f"this stack's Kafka was made with {formatted} node(s), not "
                    f"{self.brokers}: run `maskstream stack down` and remove "
                    f"{self.dir}/kafka* to make it anew"
                )

    def _assign_ports(self, running: set[str]) -> None:
        """Keep recorded ports that are still ours or still free; pick the rest."""
        taken: set[int] = set()
        owners = {
            **{
                kafka.port_key(node, role): kafka.node_name(node)
                for node in range(1, self.brokers + 1)
                for role in kafka.BASE_PORTS
            },
            "elasticmq_query": "elasticmq-query",
        }
        for key, default in (kafka.port_defaults(self.brokers) | DEFAULT_PORTS).items():
            recorded = self.ports.get(key)
            service = owners.get(key, key)
            if recorded and (service in running or is_port_free(recorded)):
                taken.add(recorded)
                continue
            self.ports[key] = choose_port(default, taken)

    def up(self, prometheus: bool = False) -> dict[str, str]:
        """Start whatever is not running, wait until all answer, write the env file.
        *prometheus* adds Prometheus to the stack (it stays until ``down``)."""
        self.prometheus = self.prometheus or prometheus
        self._check_prerequisites()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._check_kafka_size()
        running = {s.name for s in self.services() if s.is_running()}
        self._assign_ports(running)
        self._write_state()
        # One object per service for the whole `up`: each knows where its log
        # stood when it started and whether it formatted its storage.
        services = list(self.services())
        started: list[Service] = []
        try:
            self._start(services, [s for s in services if s.name not in running], started)
        except BaseException:
            stop_together(started)
            raise
        return self.write_environment()

    def _start(
        self, services: list[Service], to_start: list[Service], started: list[Service]
    ) -> None:
        """Start *to_start* and wait until every one of *services* answers;
        start again, on other ports, those that lost one (and their group)."""
        waiting = services
        groups = {service.name: service.restart_group for service in services}
        for attempt in range(1, BIND_ATTEMPTS + 1):
            lost = set()
            for service in to_start:
                # Recorded before it can fail: its pid file is written as it starts.
                if service not in started:
                    started.append(service)
                if self._launch(service) is Startup.PORT_TAKEN:
                    lost.add(service.name)
            lost |= self._await_startup(waiting, lost, groups)
            if not lost:
                return
            if attempt == BIND_ATTEMPTS:
                first = next(s for s in services if s.name in lost)
                raise RuntimeError(give_up_message(first.name, first.log_file))
            again = services_to_restart(lost, groups)
            to_start = waiting = [s for s in services if s.name in again]
            stop_together(to_start)
            for service in to_start:
                service.prepare_restart()
            self._repick_ports([s for s in services if s.name in lost])
            self._write_state()

    @staticmethod
    def _launch(service: Service) -> Startup:
        try:
            return service.launch()
        except RuntimeError as exc:
            raise RuntimeError(
                f"{service.name} failed to start; see its log: {service.log_file}\n{exc}"
            ) from None

    @staticmethod
    def _await_startup(services: list[Service], lost: set[str], groups: dict[str, str]) -> set[str]:
        """Poll every starting service at once (one node's failure can keep the
        others from ever being ready) until each answers or lost a port;
        return the names of those that lost one (with *lost*, known already)."""
        lost = set(lost)
        now = time.monotonic()
        deadlines = {service.name: now + service.ready_timeout for service in services}
        pending = list(services)
        while pending:
            for service in list(pending):
                if groups[service.name] in {groups[name] for name in lost}:
                    pending.remove(service)  # it restarts with its group anyway
                    continue
                state = service.startup()
                if state is not Startup.STARTING:
                    pending.remove(service)
                    if state is Startup.PORT_TAKEN:
                        lost.add(service.name)
                elif time.monotonic() > deadlines[service.name]:
                    raise TimeoutError(
                        f"{service.name} did not become ready within "
                        f"{service.ready_timeout:.0f} s; see its log: {service.log_file}"
                    )
            if pending:
                time.sleep(0.25)
        return lost

    def _repick_ports(self, services: list[Service]) -> None:
        """New ports for those of *services* that something else now holds."""
        taken = set(self.ports.values())
        for service in services:
            for key in ports_to_repick(service.port_keys(), self.ports, is_port_free):
                self.ports[key] = fresh_port(taken)

    def down(self) -> list[str]:
        """Stop every service of this stack that runs; return the names stopped.
        Prometheus is forgotten: the next ``up`` starts it only if asked again."""
        stopped = [service.name for service in self.services() if service.stop()]
        if self.prometheus and self.state_file.exists():
            self.prometheus = False
            self._write_state()
        return stopped

    def stop_service(self, name: str) -> None:
        self.service(name).stop()

    def start_service(self, name: str) -> None:
        """Start one stopped service on its recorded ports and wait until it answers."""
        service = self.service(name)
        if not service.is_running():
            service.start()
        service.wait_ready()

    def drop_prometheus(self) -> None:
        """Stop Prometheus and leave it out of the stack until asked for again."""
        if self.prometheus:
            self.service("prometheus").stop()
            self.prometheus = False
            self._write_state()
            self.write_environment()

    def status(self) -> dict[str, bool]:
        return {service.name: service.is_running() for service in self.services()}

    # -- environment -----------------------------------------------------------------

    def keyring_file(self) -> Path:
        return self.dir / KEYRING_FILE_NAME

    def write_environment(self) -> dict[str, str]:
        """Write ``env`` (mode 0600) and create a local masking key ring if none exists."""
        from stream.core.keyring import create_keyring_file

        keyring = self.keyring_file()
        if not keyring.exists():
            create_keyring_file(keyring)
        variables: dict[str, str] = {}
        for service in self.services():
            variables.update(service.environment())
        if self.external_database_url:
            variables["DATABASE_URL"] = self.external_database_url
        variables["MASKSTREAM_KEYRING_FILE"] = str(keyring)
        variables["MASKSTREAM_STACK_DIR"] = str(self.dir)
        write_env_file(self.env_file, variables)
        return variables


def stop_together(services: list[Service]) -> None:
    """Stop *services* at once: a Kafka node stopped after its peers waits for
    a controller quorum that has gone (20 s, then SIGKILL); together, they
    shut down while the quorum still answers."""
    with ThreadPoolExecutor(max_workers=max(1, len(services))) as pool:
        list(pool.map(lambda service: service.stop(), services))


def external_database_url_from_environment(stack: Stack) -> str | None:
    """DATABASE_URL from the environment, unless it is this stack's own Postgres."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        return None
    own_port = stack.ports.get("postgres")
    if own_port and f"@127.0.0.1:{own_port}/" in url:
        return None
    return url
