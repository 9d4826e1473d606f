"""ElasticMQ, an SQS-compatible server, with the login queue and its dead-letter queue."""

from __future__ import annotations

from pathlib import Path

import boto3
from botocore.config import Config

from stream.devstack import jvm
from stream.devstack.processes import start_background
from stream.devstack.service import Service

QUEUE_NAME = "login-queue"
DEAD_LETTER_QUEUE_NAME = "login-queue-dlq"
ACCOUNT_ID = "000000000000"
REGION = "us-east-1"
# ElasticMQ accepts any credentials; boto3 insists on having some.
ACCESS_KEY = "local"
SECRET_KEY = "local"


class ElasticMQ(Service):
    name = "elasticmq"
    heap = "256m"

    def __init__(self, stack_dir: Path, ports: dict[str, int], max_receive_count: int = 5) -> None:
        super().__init__(stack_dir, ports)
        self.max_receive_count = max_receive_count

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['elasticmq']}"

    @property
    def queue_url(self) -> str:
        return f"{self.endpoint}/{ACCOUNT_ID}/{QUEUE_NAME}"

    def _config(self) -> str:
        port = self.ports["elasticmq"]
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
        classpath = jvm.resolve_classpath("elasticmq", self.dir / "classpath.txt")
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

    def client(self):
        return boto3.client(
            "sqs",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
        )

    def is_ready(self) -> bool:
        try:
            self.client().get_queue_url(QueueName=QUEUE_NAME)
            return True
        except Exception:
            return False

    def environment(self) -> dict[str, str]:
        return {
            "SQS_QUEUE_URL": self.queue_url,
            "AWS_ENDPOINT_URL_SQS": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }
