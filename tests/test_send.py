"""``maskstream send``: lines become SQS bodies byte for byte; bad lines are named."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.ops.send import DEFAULT_MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from stream.ops.send import Line, LineError, batches, read_lines
from tests.support.sqs import SqsServer, stack_servers

# -- pure functions ----------------------------------------------------------------------


def test_read_lines_keeps_bytes_and_flags_what_sqs_cannot_carry() -> None:
    data = b'{"a": 1}\r\nnot json\n\n\xc3\xa9t\xc3\xa9\n\xff\n' + b"x" * (MAX_MESSAGE_BYTES + 1)
    items = list(read_lines(io.BytesIO(data)))
    assert items[0] == Line(1, '{"a": 1}\r', 9)
    assert items[1] == Line(2, "not json", 8)
    assert isinstance(items[2], LineError) and items[2].number == 3
    assert items[3] == Line(4, "été", 5)
    assert isinstance(items[4], LineError) and "UTF-8" in items[4].reason
    assert isinstance(items[5], LineError) and "over the queue's limit" in items[5].reason


def test_batches_hold_ten_entries_and_stay_under_the_payload_limit() -> None:
    small = [Line(i, "x", 1) for i in range(25)]
    assert [len(b) for b in batches(small)] == [10, 10, 5]
    big = [Line(i, "y", MAX_MESSAGE_BYTES // 2) for i in range(5)]
    assert [len(b) for b in batches(big)] == [2, 2, 1]
    assert [line.number for batch in batches(small) for line in batch] == list(range(25))


# -- against ElasticMQ --------------------------------------------------------------------


@pytest.fixture(params=["json", "query"])
def server(request: pytest.FixtureRequest, stack_env: dict[str, str]) -> SqsServer:
    """Each test runs against the current ElasticMQ and the query-only one."""
    return stack_servers(stack_env)[request.param]


@pytest.fixture
def queue_url(server: SqsServer) -> Iterator[str]:
    with server.queue("send-test") as url:
        yield url


def maskstream_send(
    server: SqsServer, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``maskstream send`` as a user runs it against *server* (protocol left to auto)."""
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "send", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        env={**os.environ, "AWS_ENDPOINT_URL_SQS": server.endpoint},
    )


def drain(server: SqsServer, queue_url: str) -> list[str]:
    return [message["Body"] for message in server.drain(queue_url)]


@pytest.mark.services
def test_send_file_delivers_each_line_byte_for_byte(
    server: SqsServer, queue_url: str, tmp_path: Path
) -> None:
    lines = [f'{{"n": {i}, "ip": "10.0.0.{i % 256}"}}' for i in range(1234)]
    lines += ["not json", " ", "José 🚀", '{"pad": "' + "a" * (MAX_MESSAGE_BYTES - 11) + '"}']
    path = tmp_path / "logins.jsonl"
    path.write_bytes("\n".join(lines).encode() + b"\n")

    result = maskstream_send(server, str(path), "--queue-url", queue_url)

    assert result.returncode == 0, result.stderr.decode()
    assert f"sent {len(lines)} messages".encode() in result.stderr
    assert sorted(drain(server, queue_url)) == sorted(lines)


@pytest.mark.services
def test_send_stdin_reports_bad_lines_by_number_and_sends_the_rest(
    server: SqsServer, queue_url: str
) -> None:
    data = b'{"ok": 1}\n\nbad \x00 byte\n\xff\xfe\n{"ok": 2}\n'

    result = maskstream_send(server, "-", "--queue-url", queue_url, stdin=data)

    assert result.returncode == 1
    errors = result.stderr.decode()
    assert "stdin:2: not sent: empty line" in errors
    assert "stdin:3: not sent: " in errors
    assert "stdin:4: not sent: not UTF-8" in errors
    assert "sent 2 messages from stdin; 3 lines not sent" in errors
    assert sorted(drain(server, queue_url)) == ['{"ok": 1}', '{"ok": 2}']
