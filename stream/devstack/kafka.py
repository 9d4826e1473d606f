"""Apache Kafka as one KRaft node (broker and controller in one JVM)."""

from __future__ import annotations

import asyncio
import base64
import secrets
import subprocess
import uuid
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


class Kafka(Service):
    name = "kafka"
    heap = "512m"

    #: The one SASL/PLAIN user of the local broker (for trying Kafka security).
    sasl_username = "maskstream"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['kafka']}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['kafka_sasl']}"

    @property
    def sasl_password(self) -> str:
        """A random password made once per stack, kept with the broker's state."""
        path = self.dir / "sasl-password"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(18))
            path.chmod(0o600)
        return path.read_text().strip()

    def _server_properties(self) -> str:
        broker, controller = self.ports["kafka"], self.ports["kafka_controller"]
        sasl = self.ports["kafka_sasl"]
        user, password = self.sasl_username, self.sasl_password
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller}",
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
            # A SASL/PLAIN listener so clients' security settings can be tried here.
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{user}" password="{password}" user_{user}="{password}";'
            ),
            "log.dirs": str(self.dir / "data"),
            "num.partitions": "8",
            # One node: every internal topic (offsets, transactions used by
            # Faust's exactly_once, share groups) must have one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            # SQS bodies reach 256 KiB; leave room for headers and batching.
            "message.max.bytes": str(2 * 1024 * 1024),
            "log.segment.bytes": str(64 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
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
        if not (self.dir / "data" / "meta.properties").exists():
            self._format_storage(classpath, config, props)
        argv = jvm.java_command(classpath, "kafka.Kafka", [str(config)], self.heap, props)
        start_background(argv, self.log_file, self.pid_file)

    def _format_storage(self, classpath: str, config: Path, props: dict[str, str]) -> None:
        # Kafka cluster ids are 16 random bytes in unpadded URL-safe base64.
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        argv = jvm.java_command(
            classpath,
            "kafka.tools.StorageTool",
            ["format", "--standalone", "-t", cluster_id, "-c", str(config)],
            "256m",
            props,
        )
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"formatting Kafka's storage failed: {result.stderr[-2000:]}")

    def is_ready(self) -> bool:
        return asyncio.run(_metadata_answers(self.bootstrap))

    def environment(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            # Not used by default: the same broker behind SASL/PLAIN, for trying
            # KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT against a real listener.
            "STACK_KAFKA_SASL_BOOTSTRAP_SERVERS": self.sasl_bootstrap,
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
