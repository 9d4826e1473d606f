"""No single message can stop a worker (issue 13), on the real stack.

Every kind of poison pill the pure core refuses (see tests/test_fuzz.py) is
produced to the raw topic among valid logins, some through the bridge's own
headers and some as another producer would write them. Each must end as a
rejection with its reason, every valid login as a row, the worker must never
crash or restart, and no partition may be left with uncommitted records.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream.core.records import (
    HEADER_MESSAGE_ID,
    HEADER_SENT_TIMESTAMP,
    MAX_RAW_RECORD_BYTES,
    MAX_SQS_BODY_BYTES,
)
from tests.support.sandbox import IsolatedPipeline, RawMessage
from tests.test_pipeline import login, new_id

pytestmark = pytest.mark.services

DIGIT_LIMIT = sys.get_int_max_str_digits()  # json refuses longer integers
IP = "199.172.111.135"  # every login's, from tests.test_pipeline.login


def huge_integer_login(digits: int = 5000) -> bytes:
    """A login whose app_version is a JSON integer json cannot parse (json.dumps
    cannot even write one this long)."""
    text = login().decode()
    return text.replace('"2.3.0"', "9" * digits).encode()


@dataclass(frozen=True)
class Poison:
    name: str
    body: bytes
    reason: str  # the rejection reason starts with this


POISONS = [
    Poison("surrogate in user_id", login(user_id="\ud800"), "user_id is not valid Unicode"),
    Poison(
        "surrogate in device_type", login(device_type="a\udfff"), "device_type is not valid Unicode"
    ),
    Poison("surrogate in locale", login(locale="\ud800x"), "locale is not valid Unicode"),
    Poison(
        "5,000-digit integer",
        huge_integer_login(),
        f"not JSON (an integer of more than {DIGIT_LIMIT} digits)",
    ),
    Poison("~900 KB not JSON", b"{" + b"x" * 900_000, "not JSON (body truncated to"),
    Poison("~400 KB not UTF-8", b"\xff\xfe\xc0" * 133_334, "not UTF-8 text (body truncated to"),
    Poison("NUL escape in user_id", login(user_id="a\u0000b"), "user_id contains a NUL character"),
    Poison(
        "raw NUL byte in a string", login(user_id="a\u0000b").replace(b"\\u0000", b"\0"), "not JSON"
    ),
    Poison("deep nesting", b'{"user_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not JSON"),
    Poison("duplicate keys", b'{"user_id": "a", "user_id": "b"}', "duplicate field user_id"),
]


def valid(count: int, tag: str) -> list[RawMessage]:
    return [RawMessage(new_id(), login(device_id=f"{tag}-{n}")) for n in range(count)]


def assert_worker_never_failed(pipe: IsolatedPipeline, name: str = "worker") -> None:
    """Still the first process (no exit, no restart), no traceback logged, and
    no IP in its log (poison must not make a worker quote bodies)."""
    assert pipe.launcher.children[name].poll() is None, pipe.launcher.failed()
    log = pipe.launcher.log(name)
    assert "Traceback" not in log, log[log.index("Traceback") :][:3000]
    assert IP not in log


def test_every_poison_pill_is_one_rejection_and_the_worker_keeps_going(
    pipeline: IsolatedPipeline,
) -> None:
    good: list[RawMessage] = []
    messages: list[RawMessage] = []
    expected: dict[str, str] = {}
    for n, poison in enumerate(POISONS):
        around = valid(3, f"dev-{n}")
        bad = RawMessage(new_id(), poison.body)
        messages += [around[0], bad, *around[1:]]
        good += around
        expected[bad.message_id] = poison.reason
    # Valid bodies with headers no bridge writes: the record's own timestamp
    # stands in for a sent time that is not ASCII digits or past year 9999.
    odd_headers = [
        RawMessage(
            new_id(), login(device_id="dev-sup"), odd_headers={HEADER_SENT_TIMESTAMP: "²".encode()}
        ),
        RawMessage(
            new_id(),
            login(device_id="dev-y10k"),
            odd_headers={HEADER_SENT_TIMESTAMP: b"253402300800000"},  # 10000-01-01
        ),
        RawMessage(
            new_id(),
            login(device_id="dev-digits"),
            odd_headers={HEADER_SENT_TIMESTAMP: b"9" * 5000},
        ),
    ]
    messages += odd_headers
    good += odd_headers

    pipeline.launcher.start_worker("worker")
    pipeline.produce_raw(messages)
    # The same kinds as another producer writes them: odd headers, no key.
    plain_good = new_id()
    plain_bad = new_id()
    pipeline.produce_plain(
        pipeline.raw_topic,
        [
            (
                None,
                login(device_id="dev-plain"),
                [(HEADER_MESSAGE_ID, plain_good.encode()), (HEADER_SENT_TIMESTAMP, "²".encode())],
            ),
            (
                None,
                login(locale="\ud800"),
                [
                    (HEADER_MESSAGE_ID, plain_bad.encode()),
                    (HEADER_SENT_TIMESTAMP, b"-1"),
                    ("odd", b"\xff"),
                ],
            ),
        ],
    )
    expected[plain_bad] = "locale is not valid Unicode"
    started = time.time()
    pipeline.wait_for_outcomes(len(messages) + 2)

    rejected = dict(pipeline.query("SELECT message_id, reason FROM rejected_logins"))
    assert rejected.keys() == expected.keys()
    for message_id, reason in expected.items():
        assert rejected[message_id].startswith(reason), (reason, rejected[message_id])
        assert IP not in rejected[message_id] and "dev-" not in rejected[message_id]
    rows = {r[0] for r in pipeline.query("SELECT message_id FROM user_logins")}
    assert rows == {m.message_id for m in good} | {plain_good}
    # The fallback sent time is the record's Kafka timestamp: now, not year 1 or 9999.
    sent = pipeline.query(
        "SELECT extract(epoch FROM sent_at) FROM user_logins WHERE message_id = ANY(%s)",
        ([m.message_id for m in odd_headers] + [plain_good],),
    )
    assert all(abs(float(s) - started) < 600 for (s,) in sent), sent
    pipeline.wait_until_caught_up()
    assert_worker_never_failed(pipeline)


def test_every_body_sqs_accepts_up_to_1_mib_ends_as_a_row_or_a_rejection(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """Through ElasticMQ, the real bridge and a worker, with the raw topic
    created by the bridge (so its max.message.bytes is the bridge's)."""
    with IsolatedPipeline(stack_env, tmp_path, topics_up_front=False) as pipe:
        pipe.create_queue()
        pipe.launcher.start_bridge("bridge")
        config = pipe.wait_for_topic(pipe.raw_topic)
        assert int(config["max.message.bytes"]) >= MAX_RAW_RECORD_BYTES  # a broker default is 1 MiB
        pipe.launcher.start_worker("worker")
        padding = MAX_SQS_BODY_BYTES - len(login(device_id="dev-1mib", padding=""))
        largest_login = login(device_id="dev-1mib", padding="p" * padding).decode()
        largest_junk = "j" * MAX_SQS_BODY_BYTES
        surrogate = json.dumps({**json.loads(login()), "user_id": "\ud800"})
        assert len(largest_login.encode()) == len(largest_junk) == MAX_SQS_BODY_BYTES
        row_id, junk_id, surrogate_id = pipe.send_large_to_sqs(
            [largest_login, largest_junk, surrogate]
        )
        pipe.wait_for_outcomes(3)
        assert pipe.query("SELECT message_id FROM user_logins") == [(row_id,)]
        rejected = dict(pipe.query("SELECT message_id, reason FROM rejected_logins"))
        assert rejected.keys() == {junk_id, surrogate_id}
        assert rejected[junk_id].startswith("not JSON (body truncated to")
        assert rejected[surrogate_id].startswith("user_id is not valid Unicode")
        pipe.wait_until_caught_up()
        assert_worker_never_failed(pipe)
        assert "exceeds" not in pipe.launcher.log("bridge")  # nothing left for the DLQ
