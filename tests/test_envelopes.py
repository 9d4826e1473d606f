"""SNS and EventBridge envelopes, SQS message attributes and FIFO ids on the raw record.

Pure tests: an envelope is recognised by its shape, the bridge keys a wrapped
login by the inner login's device id, the worker validates the inner login
and says where a fault is, and the SQS metadata travels as headers.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bridge.ports import MessageAttribute, SqsMessage
from bridge.producer import to_record
from stream.common.canonical import raw_record_key
from stream.common.envelopes import EVENTBRIDGE, SNS, kind_of
from stream.core.validation import InvalidLogin, parse_login
from tests.support.sandbox import IsolatedPipeline, RawMessage
from tests.test_bridge_services import read_topic
from tests.test_validation import VALID as LOGIN


def sns(message: Any, **extra: Any) -> dict[str, Any]:
    """An SNS notification as SQS delivers it with raw message delivery off."""
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:logins",
        "Message": message,
        "Timestamp": "2026-12-05T21:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+...",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        **extra,
    }


def eventbridge(detail: Any) -> dict[str, Any]:
    """An EventBridge event as a rule targeting a queue delivers it."""
    return {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "user login",
        "source": "com.example.app",
        "account": "123456789012",
        "time": "2026-12-05T21:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_envelopes_are_recognised_by_shape_and_a_login_never_is() -> None:
    assert kind_of(sns(json.dumps(LOGIN))) == SNS
    assert kind_of(eventbridge(LOGIN)) == EVENTBRIDGE
    assert kind_of(LOGIN) is None
    # Login-like bodies that carry one of the keys are still not envelopes.
    assert kind_of({**LOGIN, "Type": "Notification"}) is None
    assert kind_of({**LOGIN, "detail": {}}) is None
    assert kind_of(sns(json.dumps(LOGIN)), "none") is None
    assert kind_of(sns(json.dumps(LOGIN)), EVENTBRIDGE) is None
    assert kind_of(eventbridge(LOGIN), SNS) is None


def test_wrapped_logins_are_keyed_by_the_inner_device_id() -> None:
    bare = raw_record_key(body(LOGIN), "device_id")
    assert bare is not None
    assert raw_record_key(body(sns(json.dumps(LOGIN))), "device_id") == bare
    assert raw_record_key(body(eventbridge(LOGIN)), "device_id") == bare
    # With envelopes off, the envelope has no device id: keyed by message id.
    assert raw_record_key(body(eventbridge(LOGIN)), "device_id", "none") is None
    assert raw_record_key(body(sns("not json")), "device_id") is None


def test_the_worker_reads_the_inner_login_and_keeps_the_envelope_id() -> None:
    bare = parse_login(body(LOGIN))
    wrapped = parse_login(body(sns(json.dumps(LOGIN))))
    routed = parse_login(body(eventbridge(LOGIN)))
    assert (wrapped.ip, wrapped.device_id, wrapped.user_id) == (
        bare.ip,
        bare.device_id,
        bare.user_id,
    )
    assert (wrapped.envelope_kind, wrapped.envelope_id) == (
        SNS,
        "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
    )
    assert (routed.envelope_kind, routed.device_id) == (EVENTBRIDGE, bare.device_id)
    assert (bare.envelope_kind, bare.envelope_id) == (None, None)
    assert wrapped.extra_fields == 0  # envelope keys are not the login's extra fields


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (sns("{not json"), "SNS notification: Message is not JSON"),
        (sns(""), "SNS notification: Message is empty"),
        (sns(7), "SNS notification: Message is not a string"),
        (sns(json.dumps([1])), "inside the SNS notification: not an object (JSON array)"),
        (sns(json.dumps({**LOGIN, "ip": "999.1.1.1"})), "inside the SNS notification: ip "),
        (eventbridge("x"), "EventBridge event: detail is not an object"),
        (eventbridge({"foo": "bar"}), "inside the EventBridge event: not a login"),
        (eventbridge({**LOGIN, "device_id": None}), "inside the EventBridge event: device_id"),
    ],
)
def test_malformed_envelopes_are_rejected_with_a_reason_that_says_where(
    document: Any, reason: str
) -> None:
    with pytest.raises(InvalidLogin) as refused:
        parse_login(body(document))
    assert refused.value.reason.startswith(reason)
    assert "199.172.111.135" not in refused.value.reason


def test_attributes_and_fifo_ids_travel_as_headers() -> None:
    message = SqsMessage(
        message_id="m-1",
        receipt_handle="rh",
        body=body(LOGIN),
        sent_timestamp_ms=1_700_000_000_000,
        receive_count=1,
        attributes=(
            MessageAttribute("trace", "String", b"t-1"),
            MessageAttribute("n", "Number", b"42"),
            MessageAttribute("raw", "Binary", b"\x00\xff"),
        ),
        group_id="g-1",
        deduplication_id="d-1",
    )
    headers = dict(to_record(message).headers)
    assert headers["sqs_group_id"] == b"g-1"
    assert headers["sqs_deduplication_id"] == b"d-1"
    assert headers["sqs_attr.trace"] == b"t-1"
    assert headers["sqs_attr.n"] == b"42" and headers["sqs_attr_type.n"] == b"Number"
    assert headers["sqs_attr.raw"] == b"\x00\xff" and headers["sqs_attr_type.raw"] == b"Binary"
    assert "sqs_attr_type.trace" not in headers


# -- through the real pipeline ------------------------------------------------------------


@pytest.mark.services
def test_wrapped_logins_become_the_same_rows_as_bare_ones_and_bad_envelopes_rejections(
    pipeline: IsolatedPipeline,
) -> None:
    pipeline.create_queue()
    other = {**LOGIN, "device_id": "111-22-3333", "ip": "2001:DB8::1"}
    bodies = [
        json.dumps(LOGIN),
        json.dumps(sns(json.dumps(LOGIN))),
        json.dumps(eventbridge(LOGIN)),
        json.dumps(sns(json.dumps(other))),
        json.dumps(sns("{not json")),
        json.dumps(eventbridge({**LOGIN, "ip": 7})),
    ]
    assert pipeline.send_to_sqs([b.encode() + b"\n" for b in bodies]) == len(bodies)
    pipeline.launcher.start_worker("worker")
    pipeline.launcher.start_bridge("bridge", "--exit-when-idle", "3")
    pipeline.wait_for_outcomes(len(bodies))

    rows = pipeline.query(
        "SELECT envelope_kind, envelope_id, masked_ip, masked_device_id, user_id, app_version"
        " FROM user_logins ORDER BY envelope_kind NULLS FIRST, masked_device_id"
    )
    kinds = [(kind, envelope_id) for kind, envelope_id, *_ in rows]
    assert sorted(kinds, key=str) == sorted(
        [
            (None, None),
            ("eventbridge", "6a7e8feb-b491-4cf7-a9f1-bf3703467718"),
            ("sns", "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"),
            ("sns", "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"),
        ],
        key=str,
    )
    same_login = {tuple(row[2:]) for row in rows if row[3] == rows[0][3]}
    assert len(same_login) == 1, "wrapped and bare logins of one device must match"
    assert pipeline.device_mismatches() == {}
    reasons = sorted(r for (r,) in pipeline.query("SELECT reason FROM rejected_logins"))
    assert reasons[0].startswith("SNS notification: Message is not JSON")
    assert reasons[1].startswith("inside the EventBridge event: ip must be a string")
    stored = pipeline.query("SELECT * FROM user_logins")
    assert "199.172.111.135" not in repr(stored) and "Signature" not in repr(stored)


def test_the_worker_unwraps_only_what_its_envelope_setting_names() -> None:
    from stream.core.batch import outcomes
    from stream.core.keyring import new_keyring
    from stream.core.masking import Masker
    from stream.core.records import RawLogin

    masker = Masker(new_keyring())
    raws = [
        (RawLogin.from_kafka(body(document), {"sqs_message_id": b"m%d" % i}, None, 0, "p0"), 0)
        for i, document in enumerate([sns(json.dumps(LOGIN)), eventbridge(LOGIN)])
    ]

    def kinds(mode: str) -> list[str | None]:
        return [
            o.login.envelope_kind if o.login else o.rejection.reason if o.rejection else None
            for o in outcomes(raws, masker, mode)
        ]

    assert kinds("auto") == ["sns", "eventbridge"]
    assert kinds("sns") == ["sns", "not a login (no login fields)"]
    assert kinds("none") == ["not a login (no login fields)"] * 2


@pytest.mark.services
def test_a_worker_carries_on_only_the_attributes_it_is_told_to(pipeline: IsolatedPipeline) -> None:
    attributes = {"sqs_attr.trace": b"trace-7", "sqs_attr.email": b"someone@example.com"}
    messages = [RawMessage(f"attr-{i}", body(LOGIN), odd_headers=attributes) for i in range(3)]
    pipeline.launcher.start_worker("worker", extra_env={"MASKSTREAM_COPY_ATTRIBUTES": "trace"})
    pipeline.produce_raw(messages)
    pipeline.wait_for_outcomes(len(messages))
    masked = asyncio.run(read_topic(pipeline.env["KAFKA_BOOTSTRAP_SERVERS"], pipeline.masked_topic))
    assert len(masked) == len(messages)
    for record in masked:
        assert dict(record.headers) == {"sqs_attr.trace": b"trace-7"}
