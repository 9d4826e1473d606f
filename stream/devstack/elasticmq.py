"""ElasticMQ, an SQS-compatible server, with the login queue and its dead-letter queue.

Two of them: the current ElasticMQ, which speaks both SQS wire protocols
like AWS, and (for tests, ``--exercise``) ElasticMQ 1.3.9, the last line before
JSON-protocol support, which speaks only the query protocol like the
exercise's own LocalStack image. Both are checked through the project's own
SQS client, protocol detection included.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.sqs.client import SqsClient
from bridge.sqs.endpoint import CredentialSource, Endpoint
from stream.devstack import jvm
from stream.devstack.processes import start_background
from stream.devstack.service import Service

QUEUE_NAME = "login-queue"
DEAD_LETTER_QUEUE_NAME = "login-queue-dlq"
ACCOUNT_ID = "000000000000"
REGION = "us-east-1"
# ElasticMQ accepts any credentials; SigV4 signing needs some.
ACCESS_KEY = "local"
SECRET_KEY = "local"


async def _queue_answers(endpoint: str, name: str) -> bool:
    client = SqsClient(
        Endpoint(endpoint, REGION),
        CredentialSource.static(ACCESS_KEY, SECRET_KEY),
        connect_timeout=2,
        read_timeout=5,
        retries=0,
    )
    async with client:
        try:
            await client.get_queue_url(name)
            return True
        except Exception:
            return False


class ElasticMQ(Service):
    name = "elasticmq"
    heap = "256m"
    #: The pom under ``maven/`` that resolves this server's jars.
    artifact = "elasticmq"

    def __init__(self, stack_dir: Path, ports: dict[str, int], max_receive_count: int = 5) -> None:
        super().__init__(stack_dir, ports)
        self.max_receive_count = max_receive_count

    def port_keys(self) -> list[str]:
        return [self.name.replace("-", "_")]

    @property
    def port(self) -> int:
        return self.ports[self.port_keys()[0]]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def queue_url(self) -> str:
        return f"{self.endpoint}/{ACCOUNT_ID}/{QUEUE_NAME}"

    def _config(self) -> str:
        port = self.port
        return f"""include classpath("application.conf")

node-address {{
  protocol = http
  host = 127.0.0.1
  port = {port}
  context-path = ""
}}
generate-node-address = false

rest-sqs {{
  enabled = true
  bind-port = {port}
  bind-hostname = "127.0.0.1"
  sqs-limits = strict
}}
rest-stats {{
  enabled = false
}}

aws {{
  region = {REGION}
  accountId = {ACCOUNT_ID}
}}

queues {{
  {DEAD_LETTER_QUEUE_NAME} {{
    defaultVisibilityTimeout = 30 seconds
  }}
  {QUEUE_NAME} {{
    defaultVisibilityTimeout = 30 seconds
    receiveMessageWait = 0 seconds
    deadLettersQueue {{
      name = "{DEAD_LETTER_QUEUE_NAME}"
      maxReceiveCount = {self.max_receive_count}
    }}
  }}
}}
"""

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        classpath = jvm.resolve_classpath(self.artifact, self.dir / "classpath.txt")
        config = self.dir / "elasticmq.conf"
        config.write_text(self._config())
        argv = jvm.java_command(
            classpath,
            "org.elasticmq.server.Main",
            [],
            self.heap,
            {"config.file": str(config)},
        )
        start_background(argv, self.log_file, self.pid_file)

    def is_ready(self) -> bool:
        return asyncio.run(_queue_answers(self.endpoint, QUEUE_NAME))

    def environment(self) -> dict[str, str]:
        return {
            "SQS_QUEUE_URL": self.queue_url,
            "AWS_ENDPOINT_URL_SQS": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }


class QueryOnlyElasticMQ(ElasticMQ):
    """ElasticMQ 1.3.9: answers only SQS's query protocol (a JSON request gets
    ``400 MissingAction``), as the exercise's LocalStack image does."""

    name = "elasticmq-query"
    artifact = "elasticmq-query"

    def environment(self) -> dict[str, str]:
        return {
            "STACK_SQS_QUERY_ENDPOINT": self.endpoint,
            "STACK_SQS_QUERY_QUEUE_URL": self.queue_url,
        }
