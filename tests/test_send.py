"""``maskstream send``: lines become SQS bodies byte for byte; bad lines are named."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from bridge.sqs import MAX_MESSAGE_BYTES
from stream.ops.send import Line, LineError, batches, read_lines

# -- pure functions ----------------------------------------------------------------------


def test_read_lines_keeps_bytes_and_flags_what_sqs_cannot_carry() -> None:
    data = b'{"a": 1}\r\nnot json\n\n\xc3\xa9t\xc3\xa9\n\xff\n' + b"x" * (MAX_MESSAGE_BYTES + 1)
    items = list(read_lines(io.BytesIO(data)))
    assert items[0] == Line(1, '{"a": 1}\r', 9)
    assert items[1] == Line(2, "not json", 8)
    assert isinstance(items[2], LineError) and items[2].number == 3
    assert items[3] == Line(4, "été", 5)
    assert isinstance(items[4], LineError) and "UTF-8" in items[4].reason
    assert isinstance(items[5], LineError) and "over the SQS limit" in items[5].reason


def test_batches_hold_ten_entries_and_stay_under_the_payload_limit() -> None:
    small = [Line(i, "x", 1) for i in range(25)]
    assert [len(b) for b in batches(small)] == [10, 10, 5]
    big = [Line(i, "y", MAX_MESSAGE_BYTES // 2) for i in range(5)]
    assert [len(b) for b in batches(big)] == [2, 2, 1]
    assert [line.number for batch in batches(small) for line in batch] == list(range(25))


# -- against ElasticMQ --------------------------------------------------------------------


@pytest.fixture
def queue_url(stack_env: dict[str, str]) -> Iterator[str]:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=f"send-test-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    yield url
    sqs.delete_queue(QueueUrl=url)


def drain(queue_url: str) -> list[str]:
    """Receive and delete everything in the queue; return the bodies."""
    sqs = boto3.client("sqs")
    bodies: list[str] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            return bodies
        bodies += [m["Body"] for m in messages]
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


def maskstream_send(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "send", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.services
def test_send_file_delivers_each_line_byte_for_byte(queue_url: str, tmp_path: Path) -> None:
    lines = [f'{{"n": {i}, "ip": "10.0.0.{i % 256}"}}' for i in range(1234)]
    lines += ["not json", " ", "José 🚀", '{"pad": "' + "a" * (MAX_MESSAGE_BYTES - 11) + '"}']
    path = tmp_path / "logins.jsonl"
    path.write_bytes("\n".join(lines).encode() + b"\n")

    result = maskstream_send(str(path), "--queue-url", queue_url)

    assert result.returncode == 0, result.stderr.decode()
    assert f"sent {len(lines)} messages".encode() in result.stderr
    assert sorted(drain(queue_url)) == sorted(lines)


@pytest.mark.services
def test_send_stdin_reports_bad_lines_by_number_and_sends_the_rest(queue_url: str) -> None:
    data = b'{"ok": 1}\n\nbad \x00 byte\n\xff\xfe\n{"ok": 2}\n'

    result = maskstream_send("-", "--queue-url", queue_url, stdin=data)

    assert result.returncode == 1
    errors = result.stderr.decode()
    assert "stdin:2: not sent: empty line" in errors
    assert "stdin:3: not sent: " in errors
    assert "stdin:4: not sent: not UTF-8" in errors
    assert "sent 2 messages from stdin; 3 lines not sent" in errors
    assert sorted(drain(queue_url)) == ['{"ok": 1}', '{"ok": 2}']
