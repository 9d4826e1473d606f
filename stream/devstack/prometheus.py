"""Prometheus (Debian's package) scraping the bridges and workers launched on the stack.

Optional: started only by ``maskstream stack up --prometheus`` (or a test
that asks), so the default stack does not grow. It loads the repository's
rules (``monitoring/prometheus/rules``), so the alerts and recording rules
an operator deploys are the ones evaluated here, and finds its targets in
file_sd JSON files that :class:`stream.ops.launcher.Launcher` writes for each
bridge and worker it starts (``MASKSTREAM_SCRAPE_TARGETS_DIR``).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from stream.devstack import prerequisites
from stream.devstack.processes import start_background
from stream.devstack.service import Service

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = REPO_ROOT / "monitoring" / "prometheus" / "rules"
# Short, so a test sees rates within a minute of data.
SCRAPE_INTERVAL = "5s"
# The jobs of the compose file's Prometheus too: rules and panels may name them.
JOBS = ("maskstream-bridge", "maskstream-worker")


def scrape_config(targets_dir: Path, rules_dir: Path = RULES_DIR) -> dict:
    """Prometheus' configuration: one job per kind of process, targets from files."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules_dir / "*.yml")],
        "scrape_configs": [
            {
                "job_name": job,
                "file_sd_configs": [
                    {"files": [str(targets_dir / f"{job}-*.json")], "refresh_interval": "5s"}
                ],
            }
            for job in JOBS
        ],
    }


class Prometheus(Service):
    name = "prometheus"
    ready_timeout = 60.0

    def port_keys(self) -> list[str]:
        return ["prometheus"]

    @property
    def port(self) -> int:
        return self.ports["prometheus"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def targets_dir(self) -> Path:
        return self.dir / "targets"

    def start(self) -> None:
        binary = prerequisites.require_prometheus()
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "prometheus.yml"
        # JSON is YAML: no YAML writer needed.
        config.write_text(json.dumps(scrape_config(self.targets_dir), indent=2) + "\n")
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=2d",
            "--log.level=warn",
        ]
        start_background(argv, self.log_file, self.pid_file)

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def environment(self) -> dict[str, str]:
        return {"PROMETHEUS_URL": self.url, "MASKSTREAM_SCRAPE_TARGETS_DIR": str(self.targets_dir)}
