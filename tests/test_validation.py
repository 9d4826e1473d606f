"""Parsing and validation of SQS bodies, and the pure mask/reject transform."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.keyring import new_keyring
from stream.masking import Masker
from stream.records import MaskedLogin, RawLogin, Rejection
from stream.transform import mask_login, utc_date
from stream.validation import InvalidLogin, parse_login

VALID = {
    "user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae",
    "app_version": "2.3.0",
    "device_type": "android",
    "ip": "199.172.111.135",
    "locale": "RU",
    "device_id": "593-47-5928",
}


def body(**changes: object) -> bytes:
    document = {**VALID, **changes}
    return json.dumps({k: v for k, v in document.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("version", "major"), [("2.3.0", 2), ("0.96", 0), ("3.7", 3), ("10.0.1", 10)]
)
def test_version_formats_give_their_major(version: str, major: int) -> None:
    fields = parse_login(body(app_version=version))
    assert (fields.app_version, fields.app_version_major) == (version, major)


def test_null_or_missing_locale_is_accepted() -> None:
    assert parse_login(body(locale=None)).locale is None
    assert parse_login(body(locale=...)).locale is None


def test_extra_fields_are_dropped_and_counted() -> None:
    assert parse_login(body(extra=1, another="x")).extra_fields == 2


def test_ipv6_is_an_ip() -> None:
    assert parse_login(body(ip="2001:db8::1")).ip == "2001:db8::1"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty body"),
        (b"\xff", "not UTF-8 text"),
        (b"{nope", "not JSON"),
        (b'"text"', "not an object (JSON string)"),
        (b"null", "not an object (JSON null)"),
        (b"{}", "empty object"),
        (b'{"foo": "x", "bar": "123"}', "not a login (no login fields)"),
        (body(device_id=...), "missing field device_id"),
        (body(ip=...), "missing field ip"),
        (body(user_id=5), "user_id must be a string, got number"),
        (body(device_type=None), "device_type must be a string, got null"),
        (body(user_id=""), "user_id is empty"),
        (body(user_id="u" * 129), "user_id longer than 128"),
        (body(locale="l" * 33), "locale longer than 32"),
        (body(device_id="d" * 65), "device_id longer than 64"),
        (body(ip="1.2.3"), "ip is not an IPv4 or IPv6 address"),
        (body(ip="fe80::1%\u00e9th0"), "ip is not an IPv4 or IPv6 address"),
        (body(device_id="\U0001f600" * 60), "device_id longer than 152 bytes in UTF-8"),
        (body(app_version="v2"), "app_version is not a version like 2.3.0, 0.96 or 3.7"),
        (body(app_version="99999999999.1"), "app_version is not a version like 2.3.0, 0.96 or 3.7"),
        (body(app_version=2.3), "app_version must be a string, got number"),
    ],
)
def test_each_problem_has_its_own_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidLogin) as caught:
        parse_login(raw)
    assert caught.value.reason == reason


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_and_reasons_never_quote_the_body(raw: bytes) -> None:
    try:
        parse_login(raw)
    except InvalidLogin as exc:
        text = raw.decode("utf-8", "ignore").strip()
        if len(text) >= 8:
            assert text not in exc.reason


@given(st.text(min_size=1, max_size=40).filter(lambda s: s.strip()))
def test_reasons_never_contain_the_offending_value(value: str) -> None:
    for field in ("user_id", "device_type", "ip", "device_id", "locale", "app_version"):
        try:
            parse_login(body(**{field: value * 10}))
        except InvalidLogin as exc:
            assert value * 10 not in exc.reason


def test_mask_login_masks_pii_and_dates_from_sent_timestamp() -> None:
    masker = Masker(new_keyring())
    raw = RawLogin("m-1", sent_at_ms=1_700_000_000_000, body=body())
    masked = mask_login(raw, masker)
    assert isinstance(masked, MaskedLogin)
    assert masked.create_date == "2023-11-14" == utc_date(raw.sent_at_ms)
    assert masker.unmask(masked.masked_ip) == ("ip", VALID["ip"])
    assert masker.unmask(masked.masked_device_id) == ("device_id", VALID["device_id"])
    assert VALID["ip"] not in masked.dumps().decode()
    assert VALID["device_id"] not in masked.dumps().decode()


def test_masked_login_round_trips_through_its_json() -> None:
    masked = mask_login(RawLogin("m-3", 1_700_000_000_000, body()), Masker(new_keyring()))
    assert isinstance(masked, MaskedLogin)
    assert MaskedLogin.loads(masked.dumps()) == masked


@pytest.mark.parametrize(
    "data", [b"not json", b"[1]", b'{"message_id": "m"}', b'{"unknown": 1}', b"\xff"]
)
def test_masked_login_refuses_what_is_not_one(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"^not a masked login: "):
        MaskedLogin.loads(data)


def test_rejection_keeps_the_body_only_encrypted() -> None:
    masker = Masker(new_keyring())
    raw = RawLogin("m-2", sent_at_ms=1_700_000_000_000, body=body(app_version=3))
    rejection = mask_login(raw, masker)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "app_version must be a string, got number"
    assert VALID["ip"] not in rejection.dumps().decode()
    assert masker.unmask(rejection.body_token) == ("body", raw.body.decode())


def test_raw_login_falls_back_to_key_and_kafka_timestamp_without_headers() -> None:
    raw = RawLogin.from_kafka(b"{}", None, b"key-1", 1234, "t:0:5")
    assert (raw.message_id, raw.sent_at_ms) == ("key-1", 1234)
    anonymous = RawLogin.from_kafka(None, {}, None, 99, "t:0:6")
    assert (anonymous.message_id, anonymous.body) == ("kafka:t:0:6", b"")
