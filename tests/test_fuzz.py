"""Property test of issue #13: no single message may stop a worker.

Whatever a Kafka record holds (body bytes, JSON values of any type in any
field, headers, key, timestamp), ``RawLogin.from_kafka`` then ``mask_login``
return, never raise, and what they return fits the tables and the topics:
a MaskedLogin whose text PostgreSQL can store within the columns of
``user_logins``, or a Rejection whose body token fits a Kafka record. Reasons
never quote an IP or a device id. Pure: no servers; about ten seconds.
"""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.core.keyring import new_keyring
from stream.core.masking import Masker
from stream.core.records import (
    HEADER_MESSAGE_ID,
    HEADER_RECEIVE_COUNT,
    HEADER_SENT_TIMESTAMP,
    MASKED_FIELDS,
    MaskedLogin,
    RawLogin,
    Rejection,
)
from stream.core.timestamps import MAX_EPOCH_MS, MIN_EPOCH_MS
from stream.core.transform import MAX_BODY_TOKEN_CHARS, mask_login
from stream.core.validation import KNOWN_FIELDS

# varchar lengths of user_logins (stream/schema.py and the exercise's DDL).
COLUMN_CHARS = {
    "message_id": 128,
    "user_id": 128,
    "device_type": 32,
    "masked_ip": 256,
    "masked_device_id": 256,
    "locale": 32,
    "app_version_full": 32,
}
MAX_INTEGER = 2**31 - 1
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MASKERS = {mode: Masker(new_keyring(mode)) for mode in ("siv", "hmac")}

# Values that broke, or could break, a worker: lone surrogates, NUL, digits
# str.isdigit takes but int refuses, spellings that need canonical forms.
POISON_TEXT = st.sampled_from(
    [
        "\ud800",
        "a\udfffb",
        "\x00",
        "x\x00y",
        "\u00b2",
        "\uff12.\uff13.\uff10",
        " ",
        "",
        "\U0001f600",
    ]
)
IPS = st.ip_addresses().map(str)
DEVICE_IDS = st.from_regex(r"\A\d{3}-\d{2}-\d{4}\Z")
FIELD_TEXT = st.one_of(
    POISON_TEXT,
    st.text(max_size=40),
    st.text(max_size=200),
    IPS,
    st.from_regex(r"\A\d{1,3}(\.\d{1,3}){1,2}\Z"),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | FIELD_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Raw fragments json.dumps cannot produce, spliced into an object.
RAW_FRAGMENTS = st.sampled_from(
    [
        b'"big": ' + b"9" * 5000,
        b'"deep": ' + b"[" * 50_000 + b"]" * 50_000,
        b'"ip": "10.0.0.1", "ip": "10.0.0.2"',
        b'"x": NaN',
        b'"x": 1e999',
    ]
)


PLAUSIBLE = {
    "user_id": st.uuids().map(str) | st.text(min_size=1, max_size=128),
    "app_version": st.sampled_from(["2.3.0", "0.96", "3.7"]),
    "device_type": st.sampled_from(["android", "ios"]) | st.text(min_size=1, max_size=32),
    "ip": IPS,
    "locale": st.none() | st.sampled_from(["RU", "en-US"]) | st.text(max_size=32),
    "device_id": DEVICE_IDS,
}


@st.composite
def login_documents(draw: st.DrawFn) -> dict[str, object]:
    """Objects with every login field: plausible values, any JSON value in a few."""
    document = {name: draw(values) for name, values in PLAUSIBLE.items()}
    for name in draw(st.sets(st.sampled_from(sorted(KNOWN_FIELDS)), max_size=2)):
        document[name] = draw(FIELD_TEXT | JSON_VALUES)
    if draw(st.booleans()):
        del document[draw(st.sampled_from(sorted(KNOWN_FIELDS)))]
    document.update(draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2)))
    return document


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=300))
    if choice == 1:
        return json.dumps(draw(JSON_VALUES)).encode()
    text = json.dumps(draw(login_documents()), ensure_ascii=draw(st.booleans()))
    raw = text.encode("utf-8", "surrogatepass")  # ensure_ascii=False keeps lone surrogates raw
    if choice == 3 and raw.startswith(b"{"):
        raw = b"{" + draw(RAW_FRAGMENTS) + (b", " if len(raw) > 2 else b"") + raw[1:]
    return raw


NUMBER_TEXT = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["\u00b2", "\u0663", "1.5", "", "9" * 5000, str(MAX_EPOCH_MS + 1)]),
)
HEADER_VALUES = st.none() | st.binary(max_size=20) | NUMBER_TEXT.map(lambda s: s.encode())
HEADERS = st.none() | st.dictionaries(
    st.sampled_from([HEADER_MESSAGE_ID, HEADER_SENT_TIMESTAMP, HEADER_RECEIVE_COUNT])
    | st.text(max_size=8),
    HEADER_VALUES,
    max_size=4,
)


def storable(text: str, column: str) -> None:
    """PostgreSQL can store *text* in *column*: valid UTF-8, no NUL, not too long."""
    text.encode("utf-8")
    assert "\x00" not in text, column
    assert len(text) <= COLUMN_CHARS[column], column


def check(outcome: MaskedLogin | Rejection, body: bytes) -> None:
    if isinstance(outcome, MaskedLogin):
        for column in COLUMN_CHARS:
            value = getattr(outcome, column)
            if value is not None:
                storable(value, column)
        assert 0 <= outcome.app_version <= MAX_INTEGER
        assert MIN_EPOCH_MS <= outcome.sent_at_ms <= MAX_EPOCH_MS
        assert date.fromisoformat(outcome.create_date)
        assert MaskedLogin.loads(outcome.dumps()) == outcome
        as_json = {name: getattr(outcome, name) for name in MASKED_FIELDS}
        assert outcome.dumps() == json.dumps(as_json).encode()  # the same text, faster
        return
    assert isinstance(outcome, Rejection)
    assert isinstance(outcome.reason, str) and outcome.reason
    outcome.reason.encode("utf-8")
    storable(outcome.message_id, "message_id")
    assert MIN_EPOCH_MS <= outcome.sent_at_ms <= MAX_EPOCH_MS
    assert len(outcome.body_token) <= MAX_BODY_TOKEN_CHARS
    assert_reason_quotes_no_pii(outcome.reason, body)


def assert_reason_quotes_no_pii(reason: str, body: bytes) -> None:
    """No IP or device id of the body appears in the reason (short ones could by chance)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return
    if not isinstance(document, dict):
        return
    for name in ("ip", "device_id"):
        value = document.get(name)
        if isinstance(value, str) and len(value) >= 7:
            assert value not in reason


@pytest.mark.parametrize("mode", sorted(MASKERS))
@FUZZ
@given(
    body=bodies(),
    headers=HEADERS,
    key=st.none() | st.binary(max_size=200),
    timestamp_ms=st.integers(-(2**63), 2**63 - 1),
    position=st.text(max_size=20),
)
def test_any_record_becomes_a_storable_login_or_rejection(
    mode: str,
    body: bytes,
    headers: dict[str, bytes | None] | None,
    key: bytes | None,
    timestamp_ms: int,
    position: str,
) -> None:
    raw = RawLogin.from_kafka(body, headers, key, timestamp_ms, position)  # type: ignore[arg-type]
    storable(raw.message_id, "message_id")
    outcome = mask_login(raw, MASKERS[mode])
    from hypothesis import event

    event(
        type(outcome).__name__
        + (" " + outcome.reason.split(" (")[0] if isinstance(outcome, Rejection) else "")
    )
    check(outcome, body)


@FUZZ
@given(document=login_documents())
def test_login_documents_become_storable_logins_or_rejections(document: dict) -> None:
    body = json.dumps(document).encode()
    check(mask_login(RawLogin("m-1", 1_700_000_000_000, body), MASKERS["siv"]), body)


@settings(max_examples=20, deadline=None)
@given(size=st.integers(200_000, 1_200_000), junk=st.binary(min_size=1, max_size=8))
def test_huge_bodies_are_rejected_with_a_bounded_token(size: int, junk: bytes) -> None:
    body = (junk * (size // len(junk) + 1))[:size]
    check(mask_login(RawLogin("m-1", 1, body), MASKERS["siv"]), body)


def _wrapped(body: bytes, kind: str) -> bytes | None:
    """*body* inside an envelope of *kind*; None if *body* cannot be put there (EventBridge
    carries only JSON objects, SNS only text)."""
    from tests.test_envelopes import eventbridge, sns

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if kind == "sns":
        return json.dumps(sns(text)).encode()
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    # The body's own text as detail, so that what json.loads would fold
    # (repeated keys) reaches the worker as it was.
    return json.dumps(eventbridge("DETAIL")).replace('"DETAIL"', text).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies(), kind=st.sampled_from(["sns", "eventbridge"]))
def test_an_envelope_around_any_body_is_handled_as_the_bare_body(body: bytes, kind: str) -> None:
    """Wrapped, a body becomes the same login as bare (plus the envelope's kind), or a
    rejection whose reason is the bare body's, said to be inside the envelope."""
    from stream.common.envelopes import KIND_NAMES
    from stream.core.validation import InvalidLogin, parse_login

    wrapped = _wrapped(body, kind)
    if wrapped is None:
        return
    try:
        bare = parse_login(body)
    except InvalidLogin as bare_error:
        with pytest.raises(InvalidLogin) as wrapped_error:
            parse_login(wrapped)
        reason = wrapped_error.value.reason
        assert KIND_NAMES[kind] in reason.partition(":")[0], reason
        # The bare body's own reason, or (SNS) what its Message text is.
        assert reason.endswith(bare_error.reason) or reason.startswith(
            f"{KIND_NAMES[kind]}: Message is "
        ), (reason, bare_error.reason)
        assert_reason_quotes_no_pii(reason, body)
        return
    inside = parse_login(wrapped)
    assert (inside.envelope_kind, inside.ip, inside.device_id) == (kind, bare.ip, bare.device_id)
    assert (inside.user_id, inside.locale, inside.app_version) == (
        bare.user_id,
        bare.locale,
        bare.app_version,
    )
