"""Parsing and validation of SQS bodies, and the pure mask/reject transform."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.core.keyring import new_keyring
from stream.core.masking import Masker
from stream.core.records import MaskedLogin, RawLogin, Rejection
from stream.core.timestamps import MAX_EPOCH_MS
from stream.core.transform import (
    MAX_BODY_TEXT_BYTES,
    MAX_BODY_TOKEN_CHARS,
    body_text,
    mask_login,
    text_bytes,
    utc_date,
)
from stream.core.validation import InvalidLogin, parse_login

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


# ----------------------------------------------------------- what the database cannot store

STRING_FIELDS = ("user_id", "device_type", "ip", "device_id", "locale", "app_version")


@pytest.mark.parametrize("field", STRING_FIELDS)
def test_a_lone_surrogate_in_any_field_is_rejected_by_name(field: str) -> None:
    raw = json.dumps({**VALID, field: "ab\ud800"}).encode()  # JSON text "ab\\ud800"
    assert b"\\ud800" in raw
    with pytest.raises(InvalidLogin) as caught:
        parse_login(raw)
    assert caught.value.reason == f"{field} is not valid Unicode (a lone surrogate)"


@pytest.mark.parametrize("field", STRING_FIELDS)
def test_a_nul_in_any_field_is_rejected_by_name(field: str) -> None:
    with pytest.raises(InvalidLogin) as caught:
        parse_login(body(**{field: "ab\x00cd"}))
    assert caught.value.reason == f"{field} contains a NUL character"


def test_a_surrogate_pair_is_one_character_and_accepted() -> None:
    raw = body(user_id="\U0001f600", device_type="\U0001f600")
    assert b"\\ud83d\\ude00" in raw
    assert parse_login(raw).user_id == "\U0001f600"


# ----------------------------------------------------------- what json itself refuses


@pytest.mark.parametrize("where", ["extra", "user_id"])
def test_an_integer_past_the_digit_limit_is_a_rejection(where: str) -> None:
    raw = body().replace(b"{", b'{"%s": %s, ' % (where.encode(), b"7" * 5000), 1)
    with pytest.raises(InvalidLogin) as caught:
        parse_login(raw)
    assert caught.value.reason == "not JSON (an integer of more than 4300 digits)"


@pytest.mark.parametrize(
    ("opening", "closing"), [(b"[", b"]"), (b'{"a": ', b"}")], ids=["arrays", "objects"]
)
def test_deep_nesting_is_a_rejection(opening: bytes, closing: bytes) -> None:
    nested = opening * 100_000 + b"1" + closing * 100_000
    raw = body().replace(b"{", b'{"extra": ' + nested + b", ", 1)
    with pytest.raises(InvalidLogin) as caught:
        parse_login(raw)
    assert caught.value.reason == "not JSON (nested too deeply)"


@pytest.mark.parametrize(
    ("duplicate", "reason"),
    [
        (b'"ip": "10.0.0.1"', "duplicate field ip"),
        (b'"device_id": "d-2"', "duplicate field device_id"),
        (b'"593-47-5928": 1, "593-47-5928": 2', "duplicate field (not a login field)"),
    ],
)
def test_a_key_named_twice_is_rejected_naming_login_fields_only(
    duplicate: bytes, reason: str
) -> None:
    raw = body().replace(b"{", b"{" + duplicate + b", ", 1)
    with pytest.raises(InvalidLogin) as caught:
        parse_login(raw)
    assert caught.value.reason == reason


def test_repeated_keys_inside_an_extra_field_do_not_matter() -> None:
    raw = body().replace(b"{", b'{"extra": {"a": 1, "a": 2}, ', 1)
    assert parse_login(raw).extra_fields == 1


@pytest.mark.parametrize("version", ["\uff12.\uff13.\uff10", "\u0662.3", "2.\u00b3"])
def test_app_version_takes_ascii_digits_only(version: str) -> None:
    with pytest.raises(InvalidLogin) as caught:
        parse_login(body(app_version=version))
    assert caught.value.reason == "app_version is not a version like 2.3.0, 0.96 or 3.7"


# ----------------------------------------------------------- canonical values before masking


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("::ffff:198.19.7.7", "198.19.7.7"),
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_ips_are_validated_in_canonical_form(spelling: str, canonical: str) -> None:
    assert parse_login(body(ip=spelling)).ip == canonical


def test_every_spelling_of_an_ip_or_device_gets_one_token() -> None:
    masker = Masker(new_keyring())
    spellings = [
        body(ip="2001:DB8::1", device_id="593-47-5928"),
        body(ip="2001:db8::1", device_id=" 593-47-5928"),
        body(ip="2001:0db8:0:0:0:0:0:0001", device_id="593-47-5928\t"),
    ]
    masked = [mask_login(RawLogin(f"m-{i}", 1, raw), masker) for i, raw in enumerate(spellings)]
    assert all(isinstance(login, MaskedLogin) for login in masked)
    assert len({login.masked_ip for login in masked}) == 1  # type: ignore[union-attr]
    assert len({login.masked_device_id for login in masked}) == 1  # type: ignore[union-attr]


def test_device_id_bounds_apply_to_the_canonical_form() -> None:
    assert parse_login(body(device_id="  " + "d" * 64 + "  ")).device_id == "d" * 64
    with pytest.raises(InvalidLogin) as caught:
        parse_login(body(device_id="   "))
    assert caught.value.reason == "device_id is empty"


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("", "ip is empty"),
        ("::ffff:1.2.3.4%eth0", "ip has a zone id on an IPv4-mapped address"),
        (
            "fe80::1%eth\x010",
            "ip has a zone id other than 1-64 letters, digits, '-', '.', '_', '~'",
        ),
        ("fe80::1%" + "e" * 40, "ip longer than 45"),
    ],
)
def test_ip_problems_have_their_own_reasons(ip: str, reason: str) -> None:
    with pytest.raises(InvalidLogin) as caught:
        parse_login(body(ip=ip))
    assert caught.value.reason == reason


# ----------------------------------------------------------- headers and times


@pytest.mark.parametrize(
    "sent", [b"\xc2\xb2", b"\xd9\xa3", b"-5", b"1.5", b"", b"9" * 16, b"9" * 5000]
)
def test_a_sent_timestamp_that_is_not_a_plain_number_in_range_falls_back(sent: bytes) -> None:
    raw = RawLogin.from_kafka(b"{}", {"sqs_sent_timestamp": sent}, None, 1234, "t:0:1")
    assert raw.sent_at_ms == 1234


def test_a_sent_timestamp_keeps_every_representable_millisecond() -> None:
    for ms in (0, 1_700_000_000_123, MAX_EPOCH_MS):
        header = {"sqs_sent_timestamp": str(ms).encode()}
        assert RawLogin.from_kafka(b"{}", header, None, 1, "t:0:1").sent_at_ms == ms
    past = {"sqs_sent_timestamp": str(MAX_EPOCH_MS + 1).encode()}
    assert RawLogin.from_kafka(b"{}", past, None, 7, "t:0:1").sent_at_ms == 7
    padded = {"sqs_sent_timestamp": b"0" * 40 + b"42"}
    assert RawLogin.from_kafka(b"{}", padded, None, 7, "t:0:1").sent_at_ms == 42


@pytest.mark.parametrize(
    ("timestamp_ms", "sent_at_ms"), [(-1, 0), (-(10**20), 0), (10**20, MAX_EPOCH_MS)]
)
def test_a_record_timestamp_out_of_range_is_clamped(timestamp_ms: int, sent_at_ms: int) -> None:
    raw = RawLogin.from_kafka(body(), {"sqs_sent_timestamp": b"x"}, None, timestamp_ms, "t:0:1")
    assert raw.sent_at_ms == sent_at_ms
    masked = mask_login(raw, Masker(new_keyring()))
    assert isinstance(masked, MaskedLogin)
    assert masked.create_date in ("1970-01-01", "9999-12-31")


def test_the_range_is_what_datetime_can_hold() -> None:
    assert datetime.fromtimestamp(MAX_EPOCH_MS / 1000, tz=UTC).year == 9999
    assert utc_date(MAX_EPOCH_MS) == "9999-12-31" == utc_date(MAX_EPOCH_MS + 1)
    assert utc_date(-1) == "1970-01-01"


@pytest.mark.parametrize("count", [b"\xc2\xb2", b"-1", b"9" * 11, b"2147483648", b"1" * 5000])
def test_a_receive_count_that_is_not_a_plain_number_in_range_is_one(count: bytes) -> None:
    raw = RawLogin.from_kafka(b"{}", {"sqs_receive_count": count}, None, 1, "t:0:1")
    assert raw.receive_count == 1
    kept = RawLogin.from_kafka(b"{}", {"sqs_receive_count": b"2147483647"}, None, 1, "t:0:1")
    assert kept.receive_count == 2**31 - 1


def test_message_ids_are_storable_text_of_at_most_128_characters() -> None:
    nul = RawLogin.from_kafka(b"{}", {"sqs_message_id": b"m\x00-1\xff"}, None, 1, "t:0:1")
    assert nul.message_id == "m\ufffd-1\ufffd"
    long_key = RawLogin.from_kafka(b"{}", None, b"k" * 500, 1, "t:0:1")
    assert long_key.message_id == "k" * 128
    odd_position = RawLogin.from_kafka(b"{}", None, None, 1, "t\ud800:0:1")
    assert odd_position.message_id == "kafka:t?:0:1"


# ----------------------------------------------------------- rejected bodies fit a Kafka record


@pytest.mark.parametrize(
    "raw_body",
    [
        b"\xff" * 400_000,  # escaped: 4 text bytes a byte, the token 5x the body
        b"x" * 1_000_000,  # over the limit of Kafka's default record
        b"\xe2\x82\xac" * 300_000,  # multi-byte characters: never cut in the middle
        b"a\xff" * 120_000,
    ],
)
def test_a_large_rejected_body_is_truncated_to_fit_and_says_so(raw_body: bytes) -> None:
    masker = Masker(new_keyring())
    rejection = mask_login(RawLogin("m-big", 1, raw_body), masker)
    assert isinstance(rejection, Rejection)
    assert len(rejection.body_token) <= MAX_BODY_TOKEN_CHARS
    kept = int(rejection.reason.split("truncated to ")[1].split(" ")[0])
    assert rejection.reason.endswith(f" (body truncated to {kept} of {len(raw_body)} bytes)")
    _, text = masker.unmask(rejection.body_token)
    assert text == raw_body[:kept].decode("utf-8", "backslashreplace")
    assert len(text.encode()) <= MAX_BODY_TEXT_BYTES
    next_text = raw_body[: kept + 1].decode("utf-8", "backslashreplace")
    assert len(next_text.encode()) > MAX_BODY_TEXT_BYTES  # nothing more would have fit


def test_a_rejected_body_that_fits_is_kept_whole() -> None:
    masker = Masker(new_keyring())
    for raw_body in (b"a" * MAX_BODY_TEXT_BYTES, b"\xff" * (MAX_BODY_TEXT_BYTES // 4)):
        rejection = mask_login(RawLogin("m-fit", 1, raw_body), masker)
        assert isinstance(rejection, Rejection)
        assert "truncated" not in rejection.reason
        assert len(rejection.body_token) <= MAX_BODY_TOKEN_CHARS
        assert masker.unmask(rejection.body_token)[1] == raw_body.decode(
            "utf-8", "backslashreplace"
        )


@given(st.binary(max_size=200))
def test_text_bytes_measures_the_escaped_text(raw_body: bytes) -> None:
    assert text_bytes(raw_body) == len(raw_body.decode("utf-8", "backslashreplace").encode())


@given(st.binary(min_size=1, max_size=400), st.integers(min_value=4, max_value=300))
def test_body_text_never_exceeds_its_limit(raw_body: bytes, limit: int) -> None:
    text, kept = body_text(raw_body, limit)
    assert len(text.encode()) <= limit
    assert text == raw_body[:kept].decode("utf-8", "backslashreplace")
