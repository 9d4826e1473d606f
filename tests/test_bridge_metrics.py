"""The bridge's /metrics, /health and /ready, scraped during a real run."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.support.sandbox import IsolatedPipeline

pytestmark = pytest.mark.services


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def metric(text: str, name: str) -> float | None:
    """The sum of *name*'s samples over their labels (one queue here), None if absent."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    ]
    return sum(values) if values else None


def test_bridge_metrics_count_what_it_forwarded(pipeline: IsolatedPipeline) -> None:
    pipeline.create_queue()
    lines = [json.dumps({"n": i, "ip": "192.0.2.44"}).encode() + b"\n" for i in range(300)]
    sent = pipeline.send_to_sqs(lines)
    pipeline.launcher.start_bridge("bridge")
    base = f"http://127.0.0.1:{pipeline.launcher.web_ports['bridge']}"

    deadline = time.monotonic() + 60
    while True:
        try:
            text = scrape(f"{base}/metrics")
        except OSError:
            text = ""
        if metric(text, "maskstream_bridge_messages_deleted_total") == sent:
            break
        assert time.monotonic() < deadline, text[-2000:]
        time.sleep(0.5)
    assert metric(text, "maskstream_bridge_messages_received_total") >= sent
    assert metric(text, "maskstream_bridge_messages_forwarded_total") >= sent
    assert metric(text, "maskstream_bridge_in_flight") == 0
    assert "maskstream_sqs_queue_depth" in text
    assert "192.0.2.44" not in text
    assert json.loads(scrape(f"{base}/health")) == {"status": "ok"}
    assert json.loads(scrape(f"{base}/ready")) == {"ready": True, "problems": []}
    assert metric(text, "maskstream_bridge_oldest_held_age_seconds") == 0
    queue = pipeline.env["SQS_QUEUE_URL"].rpartition("/")[2]
    assert f'maskstream_bridge_outage{{queue="{queue}",service="sqs"}} 0.0' in text
    assert f'maskstream_bridge_outage{{queue="{queue}",service="kafka"}} 0.0' in text
    assert pipeline.launcher.stop("bridge") == 0
