"""The Kafka Connect benchmark's inputs, without running Connect (quick, no services)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from bench import bench_connect, sidebyside
from stream.core.keyring import new_keyring
from stream.core.masking import Masker
from stream.core.records import MaskedLogin
from stream.devstack import jvm
from stream.postgres import copy_text
from stream.postgres.rows import LOGIN_COLUMNS, login_row
from tests.support.sandbox import IsolatedPipeline

# Connect writes the rows maskstream writes, but for the raw record's
# position, which only maskstream's own outputs need (docs/design.md).
CONNECT_COLUMNS = [column for column in LOGIN_COLUMNS if column != "raw_position"]


def test_connect_records_carry_the_rows_maskstream_writes() -> None:
    (message,) = sidebyside.valid_workload(1)
    (record,) = bench_connect.connect_records([message], Masker(new_keyring()))
    key, value = record
    envelope = json.loads(value)
    payload = envelope["payload"]
    assert [f["field"] for f in envelope["schema"]["fields"]] == CONNECT_COLUMNS
    assert list(payload) == CONNECT_COLUMNS
    assert key == payload["masked_device_id"].encode()
    # The row maskstream's worker would write for the same message.
    line = login_row(MaskedLogin.loads(masked_json(payload)))
    row = dict(zip(LOGIN_COLUMNS, line.removesuffix("\n").split("\t"), strict=True))
    assert payload["sent_at"] == message.sent_at_ms
    assert copy_text.timestamp(payload["sent_at"]) == row["sent_at"]
    assert str(date(1970, 1, 1) + timedelta(days=payload["create_date"])) == row["create_date"]
    others = set(CONNECT_COLUMNS) - {"sent_at", "create_date"}
    assert {c: copy_value(payload[c]) for c in others} == {c: row[c] for c in others}


def copy_value(value: str | int | None) -> str:
    """A Connect payload value as the worker's COPY text has it."""
    return copy_text.text(value) if not isinstance(value, int) else str(value)


def masked_json(payload: dict) -> bytes:
    """*payload* back as the masked topic's JSON."""
    days = date(1970, 1, 1) + timedelta(days=payload["create_date"])
    fields = {k: v for k, v in payload.items() if k not in ("sent_at", "create_date")}
    fields |= {"sent_at_ms": payload["sent_at"], "create_date": days.isoformat()}
    return json.dumps(fields).encode()


def test_connector_is_configured_as_the_issue_asks(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5999/postgres",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9999",
    }
    pipe = IsolatedPipeline(env, tmp_path)
    worker, connector, _ = bench_connect.connect_files(pipe, "t.connect", tmp_path, unnest=False)
    worker_props = dict(line.split("=", 1) for line in worker.read_text().splitlines())
    props = dict(line.split("=", 1) for line in connector.read_text().splitlines())
    assert worker_props["value.converter"] == "org.apache.kafka.connect.json.JsonConverter"
    assert worker_props["value.converter.schemas.enable"] == "true"
    assert props["connection.url"] == f"jdbc:postgresql://127.0.0.1:5999/{pipe.name}"
    assert props["insert.mode"] == "upsert"
    assert props["primary.key.mode"] == "record_value"
    assert props["primary.key.fields"] == "message_id"
    assert props["schema.evolution"] == "basic"
    assert props["batch.size"] == props["consumer.override.max.poll.records"]


def test_resolve_classpath_reads_a_pom_from_another_maven_dir(tmp_path: Path) -> None:
    pom = tmp_path / "maven" / "thing" / "pom.xml"
    pom.parent.mkdir(parents=True)
    pom.write_text("<project/>")
    jar = tmp_path / "a.jar"
    jar.write_text("")
    cache = tmp_path / "classpath.txt"
    cache.write_text(str(jar))  # newer than the pom: used as it is, no Maven run
    assert jvm.resolve_classpath("thing", cache, tmp_path / "maven") == str(jar)
