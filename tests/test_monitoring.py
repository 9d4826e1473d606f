"""The monitoring an operator deploys: Prometheus rules, the Grafana dashboard, and
both checked against a real Prometheus scraping a real pipeline.

- ``promtool check rules`` and ``promtool test rules`` (the alerts' unit tests
  in monitoring/prometheus/tests);
- the dashboard and the provisioning files compose mounts fit together;
- on the local stack with Prometheus (``stack up --prometheus``), with messages
  flowing through a bridge and a worker: every recording rule, every series an
  alert reads and every dashboard query returns data (a query that returns
  nothing is a broken panel), and the freshness histogram's p99 lies within one
  bucket of the rows' own ``ingested_at - sent_at`` in PostgreSQL.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from stream.core.freshness import FRESHNESS_BUCKETS
from stream.devstack.manager import Stack
from stream.devstack.prerequisites import require_promtool
from stream.ops.generate import Generator
from tests.support.sandbox import IsolatedPipeline

REPO_ROOT = Path(__file__).resolve().parent.parent
MONITORING = REPO_ROOT / "monitoring"
RULES = sorted((MONITORING / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = MONITORING / "prometheus" / "tests" / "maskstream.test.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "maskstream.json"
PROVISIONING = MONITORING / "grafana" / "provisioning"
# Grafana's rate interval, as it would resolve at a 5 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for path in RULES for group in load_yaml(path)["groups"]
            for rule in group["rules"]]  # fmt: skip


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel["targets"]]


def series_read_by(expr: str) -> set[str]:
    """Metric and recording-rule names in a PromQL expression (not label values)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return {
        name
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings)
        if name.startswith("maskstream_") or name.startswith("maskstream:") or name == "up"
    }


# --------------------------------------------------------------------------- rules, offline


def test_rules_pass_promtool_check() -> None:
    result = subprocess.run(
        [require_promtool(), "check", "rules", *map(str, RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_as_their_unit_tests_expect() -> None:
    result = subprocess.run(
        [require_promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_summary_a_runbook_entry_and_a_unit_test() -> None:
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    tested = RULE_TESTS.read_text()
    alerts = [rule for rule in rules() if "alert" in rule]
    assert len(alerts) >= 7
    for rule in alerts:
        name = rule["alert"]
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}"
        assert f"### {name}" in operations, f"{name} has no runbook section"
        assert f"alertname: {name}" in tested, f"{name} has no promtool test"


def test_alert_thresholds_are_recording_rules_not_numbers_in_the_alerts() -> None:
    thresholds = {
        r["record"] for r in rules() if r.get("record", "").startswith("maskstream:threshold:")
    }
    used = {name for r in rules() if "alert" in r for name in series_read_by(r["expr"])}
    assert thresholds and thresholds <= used, thresholds - used


# --------------------------------------------------------------------------- dashboard, offline


def test_dashboard_panels_query_the_provisioned_datasource() -> None:
    datasources = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")
    uid = datasources["datasources"][0]["uid"]
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(set(titles)) == len(titles)
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid and target["expr"].strip(), panel["title"]


def test_compose_mounts_the_rules_dashboard_and_provisioning() -> None:
    compose = load_yaml(REPO_ROOT / "docker-compose.yml")
    mounts = {
        volume.split(":")[1]: REPO_ROOT / volume.split(":")[0]
        for name in ("prometheus", "grafana")
        for volume in compose["services"][name]["volumes"]
        if volume.startswith("./")
    }
    assert mounts["/etc/prometheus/rules"] == REPO_ROOT / "monitoring/prometheus/rules"
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING
    provider = load_yaml(PROVISIONING / "dashboards" / "maskstream.yml")
    assert mounts[provider["providers"][0]["options"]["path"]] == DASHBOARD.parent
    for source in mounts.values():
        assert source.exists(), source
    config = mounts["/etc/prometheus/prometheus.yml"]
    result = subprocess.run(
        [require_promtool(), "check", "config", "--syntax-only", str(config)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"] for job in load_yaml(config)["scrape_configs"]}
    assert jobs == {"maskstream-bridge", "maskstream-worker"}


# --------------------------------------------------------------------------- real Prometheus


class PrometheusApi:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant query's result; fails the test if Prometheus rejects the PromQL."""
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(address, timeout=10) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as exc:
            pytest.fail(f"Prometheus refused {expr!r}: {exc.read().decode()}")
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else float("nan")


@pytest.fixture(scope="module")
def prometheus(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The shared stack with Prometheus added for this module, then taken away again."""
    stack = Stack(Path(stack_env["MASKSTREAM_STACK_DIR"]))
    variables = stack.up(prometheus=True)
    try:
        yield variables
    finally:
        stack.drop_prometheus()


def redriven_queue(pipeline: IsolatedPipeline) -> None:
    """The pipeline's queue with a dead-letter queue of its own, as in production."""
    sqs = pipeline._sqs()
    dead = sqs.create_queue(f"{pipeline.name}-dlq")
    arn = sqs.attributes(dead, ["QueueArn"])["QueueArn"]
    policy = {"deadLetterTargetArn": arn, "maxReceiveCount": "5"}
    url = sqs.create_queue(pipeline.name, {"RedrivePolicy": json.dumps(policy)})
    pipeline.env["SQS_QUEUE_URL"] = url


@pytest.mark.services
def test_rules_and_panels_return_data_and_freshness_matches_postgres(
    stack_env: dict[str, str], prometheus: dict[str, str], tmp_path: Path
) -> None:
    api = PrometheusApi(prometheus["PROMETHEUS_URL"])
    with IsolatedPipeline({**stack_env, **prometheus}, tmp_path) as pipe:
        redriven_queue(pipe)
        pipe.launcher.start_bridge("bridge")
        pipe.launcher.start_worker("worker")
        generator = Generator(seed=27, devices=200)
        sent = 0
        # Messages keep flowing while Prometheus scrapes: rates need samples.
        for _ in range(12):
            sent += pipe.send_to_sqs([line.encode() for line in generator.lines(150)])
            time.sleep(2.5)
        pipe.wait_for_outcomes(sent)

        queries = [(f"rule {r.get('record') or r['alert']}", name)
                   for r in rules() for name in series_read_by(r["expr"])]  # fmt: skip
        queries += [(f"rule {r['record']}", r["expr"]) for r in rules() if "record" in r]
        queries += [(f"panel {title!r}", expr) for title, expr in dashboard_queries()]
        deadline = time.monotonic() + 90
        while True:
            empty = [(where, expr) for where, expr in queries if not api.query(expr)]
            if not empty or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert not empty, f"queries without data: {empty}"

        # The last batch scraped: every masked login is in the histogram.
        deadline = time.monotonic() + 60
        while True:
            counted = api.value("sum(maskstream_freshness_seconds_count)")
            masked = api.value("sum(maskstream_logins_masked_total)")
            rows = pipe.row_count()
            # Prometheus sees the counters one scrape later than PostgreSQL its rows.
            if (counted == masked > 0 and masked >= rows) or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert counted == masked > 0, (counted, masked)
        assert masked >= rows, (masked, rows)

        measured = api.value(
            "histogram_quantile(0.99, sum by (le) (maskstream_freshness_seconds_bucket))"
        )
        [(stored,)] = pipe.query(
            "SELECT percentile_cont(0.99) WITHIN GROUP"
            " (ORDER BY extract(epoch FROM ingested_at - sent_at)) FROM user_logins"
        )
        assert abs(bucket_of(measured) - bucket_of(float(stored))) <= 1, (measured, stored)


def bucket_of(seconds: float) -> int:
    """Index of the histogram bucket holding *seconds*."""
    return next(
        (i for i, bound in enumerate(FRESHNESS_BUCKETS) if seconds <= bound), len(FRESHNESS_BUCKETS)
    )


def test_freshness_histogram_counts_a_batch_by_bucket() -> None:
    from stream.core.freshness import FreshnessTally

    tally = FreshnessTally()
    now_ms = 1_000_000.0
    # Ages 5 ms, 20 ms, 20 ms, 2 s, 2 h: one batch, in no particular order.
    tally.add([int(now_ms - a) for a in (20, 5, 7_200_000, 2_000, 20)], now_ms)
    counts = dict(zip(tally.bounds, tally.cumulative, strict=True))
    assert (counts[0.01], counts[0.025], counts[1.0], counts[2.5], counts[3600.0]) == (
        1,
        3,
        3,
        4,
        4,
    )
    assert tally.count == 5
    assert tally.sum_seconds == pytest.approx(0.005 + 0.02 + 0.02 + 2 + 7200)
    assert tally.newest_sent_ms == int(now_ms - 5)
    tally.add([], now_ms)
    assert tally.count == 5
