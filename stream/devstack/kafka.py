"""Apache Kafka in KRaft mode: one node, or a cluster of several on loopback,
each node broker and controller in one JVM with its own ports and data directory."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from stream.devstack import jvm
from stream.devstack.processes import start_background
from stream.devstack.service import Service


def log4j2_config(levels: dict[str, str]) -> str:
    """A Log4j 2 configuration printing to stdout: WARN and above, and each
    logger named in *levels* at its level (the broker's, and Kafka Connect's
    in the benchmark, differ only in these)."""
    loggers = "".join(
        f'    <Logger name="{name}" level="{level}"/>\n' for name, level in levels.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Configuration status="WARN">\n'
        "  <Appenders>\n"
        '    <Console name="out" target="SYSTEM_OUT">\n'
        '      <PatternLayout pattern="[%d] %p %m (%c)%n"/>\n'
        "    </Console>\n"
        "  </Appenders>\n"
        "  <Loggers>\n"
        f"{loggers}"
        '    <Root level="WARN"><AppenderRef ref="out"/></Root>\n'
        "  </Loggers>\n"
        "</Configuration>\n"
    )


LOG4J2_CONFIG = log4j2_config(
    {
        "kafka": "INFO",
        "org.apache.kafka": "INFO",
        "state.change.logger": "WARN",
        "kafka.request.logger": "WARN",
    }
)


# Ports of node 1 (the single node of the default stack); node n adds 10 * (n - 1).
BASE_PORTS = {"": 9092, "controller": 9093, "sasl": 9094}
NODE_PORT_STRIDE = 10


def port_key(node_id: int, role: str = "") -> str:
    """The stack's name for a port of node *node_id*: ``kafka``,
    ``kafka_controller``, ``kafka_sasl`` for node 1, ``kafka2``... for the others."""
    base = "kafka" if node_id == 1 else f"kafka{node_id}"
    return f"{base}_{role}" if role else base


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """16 random bytes in unpadded URL-safe base64, as Kafka's own ids; like
    Kafka's ``Uuid.randomUuid``, never one starting with "-", which command
    lines would take for an option (a fresh clone's CI failed on one)."""
    while True:
        candidate = base64.urlsafe_b64encode(random_bytes()).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            return candidate


def node_name(node_id: int) -> str:
    """The service name: ``kafka`` for node 1 (as in a one-node stack), ``kafka-2``..."""
    return "kafka" if node_id == 1 else f"kafka-{node_id}"


def port_defaults(brokers: int) -> dict[str, int]:
    """Default ports of a cluster of *brokers* nodes, by port key."""
    return {
        port_key(node, role): port + NODE_PORT_STRIDE * (node - 1)
        for node in range(1, brokers + 1)
        for role, port in BASE_PORTS.items()
    }


def cluster(stack_dir: Path, ports: dict[str, int], brokers: int) -> list[Kafka]:
    """The *brokers* nodes of the stack's Kafka cluster."""
    return [Kafka(stack_dir, ports, node_id=n, brokers=brokers) for n in range(1, brokers + 1)]


class Kafka(Service):
    """One KRaft node, broker and controller in one JVM; node 1 of *brokers*
    is the whole cluster by default, and with three nodes leaders move when one fails."""

    name = "kafka"
    heap = "512m"

    #: The one SASL/PLAIN user of the local broker (for trying Kafka security).
    sasl_username = "maskstream"

    def __init__(
        self, stack_dir: Path, ports: dict[str, int], node_id: int = 1, brokers: int = 1
    ) -> None:
        self.name = node_name(node_id)
        self.node_id = node_id
        self.brokers = brokers
        self.stack_dir = stack_dir.resolve()
        #: Whether this object formatted the storage (so it holds no data yet).
        self.formatted_here = False
        super().__init__(stack_dir, ports)

    def port_keys(self) -> list[str]:
        return [port_key(self.node_id, role) for role in BASE_PORTS]

    @property
    def restart_group(self) -> str:
        # Every node's config names every node's controller port.
        return "kafka"

    @property
    def marker(self) -> str:
        # With the trailing slash: node 1's directory (.../kafka) is a prefix
        # of node 2's (.../kafka-2), whose command line must not pass for it.
        return f"{self.dir}/"

    def _port(self, role: str = "", node_id: int | None = None) -> int:
        return self.ports[port_key(node_id or self.node_id, role)]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self._port()}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self._port('sasl')}"

    def _all(self, role: str) -> str:
        return ",".join(
            f"127.0.0.1:{self._port(role, node)}" for node in range(1, self.brokers + 1)
        )

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def sasl_password(self) -> str:
        """A random password made once per stack, kept with node 1's state
        (every node of a cluster accepts the same one)."""
        path = self.stack_dir / node_name(1) / "sasl-password"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(18))
            path.chmod(0o600)
        return path.read_text().strip()

    def _quorum(self) -> dict[str, str]:
        """How the node finds the controllers: itself alone, or every node."""
        if self.brokers == 1:
            return {"controller.quorum.bootstrap.servers": f"127.0.0.1:{self._port('controller')}"}
        voters = ",".join(
            f"{node}@127.0.0.1:{self._port('controller', node)}"
            for node in range(1, self.brokers + 1)
        )
        return {"controller.quorum.voters": voters}

    def _replication(self) -> dict[str, str]:
        """Internal topics (offsets, transactions used by Faust's exactly_once,
        share groups) and auto-created ones: as many copies as nodes, up to 3,
        and one fewer in sync for a write; unclean election stays off."""
        copies = min(3, self.brokers)
        in_sync = str(max(1, copies - 1))
        return {
            "offsets.topic.replication.factor": str(copies),
            "transaction.state.log.replication.factor": str(copies),
            "transaction.state.log.min.isr": in_sync,
            "share.coordinator.state.topic.replication.factor": str(copies),
            "share.coordinator.state.topic.min.isr": in_sync,
            "default.replication.factor": str(copies),
            "min.insync.replicas": in_sync,
            "unclean.leader.election.enable": "false",
        }

    def _server_properties(self) -> str:
        broker, controller, sasl = self._port(), self._port("controller"), self._port("sasl")
        user, password = self.sasl_username, self.sasl_password
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            **self._quorum(),
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller},"
                f"SASL_PLAINTEXT://127.0.0.1:{sasl}"
            ),
            "advertised.listeners": (
                f"PLAINTEXT://127.0.0.1:{broker},SASL_PLAINTEXT://127.0.0.1:{sasl}"
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": (
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
            ),
            # A SASL listener so clients' security settings can be tried here:
            # PLAIN, and OAUTHBEARER with Kafka's unsecured tokens (its default
            # validator), each session bounded by its token's lifetime (KIP-368),
            # so a client whose token expires must come back with a fresh one.
            "sasl.enabled.mechanisms": "PLAIN,OAUTHBEARER",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{user}" password="{password}" user_{user}="{password}";'
            ),
            "listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config": (
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
                f'unsecuredLoginStringClaim_sub="{user}";'
            ),
            "listener.name.sasl_plaintext.oauthbearer.connections.max.reauth.ms": "3600000",
            "log.dirs": str(self.data_dir),
            "num.partitions": "8",
            **self._replication(),
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            # SQS bodies reach 256 KiB; leave room for headers and batching.
            "message.max.bytes": str(2 * 1024 * 1024),
            "log.segment.bytes": str(64 * 1024 * 1024),
            "num.network.threads": "2",
            # Two cores shared by every node: small pools, one replica fetcher.
            "num.io.threads": "4" if self.brokers == 1 else "2",
            "num.replica.fetchers": "1",
            "background.threads": "2" if self.brokers > 1 else "10",
            "log.cleaner.threads": "1",
        }
        return "\n".join(f"{key}={value}" for key, value in settings.items()) + "\n"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        classpath = jvm.resolve_classpath("kafka", self.dir / "classpath.txt")
        config = self.dir / "server.properties"
        config.write_text(self._server_properties())
        log4j = self.dir / "log4j2.xml"
        log4j.write_text(LOG4J2_CONFIG)
        props = {"log4j2.configurationFile": str(log4j), "kafka.logs.dir": str(self.dir)}
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage(classpath, config, props)
        argv = jvm.java_command(classpath, "kafka.Kafka", [str(config)], self.heap, props)
        start_background(argv, self.log_file, self.pid_file)

    def _format_storage(self, classpath: str, config: Path, props: dict[str, str]) -> None:
        # One node forms its quorum alone; a cluster's voters are in its config.
        quorum = ["--standalone"] if self.brokers == 1 else []
        argv = jvm.java_command(
            classpath,
            "kafka.tools.StorageTool",
            # "--cluster-id=<id>": an id may start with "-" (one in 64 before
            # new_cluster_id), which argparse would take for an option.
            ["format", *quorum, f"--cluster-id={self.cluster_id()}", "-c", str(config)],
            "256m",
            props,
        )
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"formatting Kafka's storage failed: {result.stderr[-2000:]}")
        self.formatted_here = True

    def prepare_restart(self) -> None:
        """Storage formatted moments ago for a port that was then taken is
        formatted again: a one-node quorum records its controller's address
        there, which must be the new one. Storage holding data is kept."""
        if self.formatted_here:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.formatted_here = False

    def cluster_id(self) -> str:
        """The id every node of the stack's cluster is formatted with, made once."""
        path = self.stack_dir / "kafka-cluster-id"
        if not path.exists():
            path.write_text(new_cluster_id())
        return path.read_text().strip()

    def formatted_for(self) -> int | None:
        """How many voters this node's storage was formatted for (None if unformatted):
        a one-node storage cannot join a three-node quorum, nor the reverse."""
        state = self.dir / "server.properties"
        if not (self.data_dir / "meta.properties").exists() or not state.exists():
            return None
        for line in state.read_text().splitlines():
            if line.startswith("controller.quorum.voters="):
                return line.count("@")
        return 1

    def quorum_leader(self) -> int | None:
        """The node id of the active controller as this node last knew it
        (its KRaft ``quorum-state`` file), None if it knows none."""
        state = self.data_dir / "__cluster_metadata-0" / "quorum-state"
        try:
            leader = json.loads(state.read_text()).get("leaderId", -1)
        except (OSError, ValueError):
            return None
        return leader if leader >= 0 else None

    def is_ready(self) -> bool:
        return asyncio.run(_metadata_answers(self.bootstrap))

    def environment(self) -> dict[str, str]:
        return {
            # Every node: a client reaches the cluster while any one of them answers.
            "KAFKA_BOOTSTRAP_SERVERS": self._all(""),
            # Not used by default: the same brokers behind SASL/PLAIN, for trying
            # KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT against a real listener.
            "STACK_KAFKA_SASL_BOOTSTRAP_SERVERS": self._all("sasl"),
            "STACK_KAFKA_SASL_USERNAME": self.sasl_username,
            "STACK_KAFKA_SASL_PASSWORD": self.sasl_password,
        }


async def _metadata_answers(bootstrap: str) -> bool:
    """True once the broker serves metadata (the port opens earlier than that)."""
    import logging

    from stream.common.kafka_security import KafkaClients

    # A broker still starting refuses connections; aiokafka logs each refusal
    # as an error, which is noise while we are only asking "ready yet?".
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        async with KafkaClients(bootstrap).admin_session(request_timeout_ms=3000) as admin:
            await admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        aiokafka_log.setLevel(level)
