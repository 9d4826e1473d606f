"""Property tests for PII tokens: round trip, determinism, binding, failures, rotation."""

from __future__ import annotations

import ipaddress
import re
import secrets

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from stream.core.keyring import Key, KeyRing, new_keyring, rotate
from stream.core.masking import (
    RECENT_TOKENS,
    InvalidFieldError,
    IrreversibleTokenError,
    MalformedTokenError,
    Masker,
    MaskingError,
    TamperedTokenError,
    UnknownKeyError,
    b64decode,
    b64encode,
    max_value_bytes,
    parse_token,
)
from stream.postgres.rekey import RekeyResult, TokenTable, rekey_row

FIELDS = st.sampled_from(["ip", "device_id", "body"])
# Lone surrogates can arrive through JSON ("\ud800"), so they must round-trip too.
SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1)
ANY_TEXT = st.text() | SURROGATES
TOKEN_SHAPE = re.compile(r"(siv|hmac):[a-z0-9]{1,16}:[a-z][a-z0-9_]*:[A-Za-z0-9_=-]+\Z")


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    return new_keyring("siv")


@pytest.fixture(scope="module")
def masker(ring: KeyRing) -> Masker:
    return Masker(ring)


@pytest.fixture(scope="module")
def hmac_masker() -> Masker:
    return Masker(new_keyring("hmac"))


def replace_payload(token: str, data: bytes) -> str:
    parts = parse_token(token)
    return parts.prefix + b64encode(data)


# ----------------------------------------------------------------------------- AES-SIV


@given(field=FIELDS, value=ANY_TEXT)
def test_round_trip_returns_field_and_exact_value(masker: Masker, field: str, value: str) -> None:
    assert masker.unmask(masker.mask(field, value)) == (field, value)


def test_round_trip_non_ascii_and_empty(masker: Masker) -> None:
    for value in ["", "ü", "設備-42", "🙂" * 10, "a\nb\x00c"]:
        assert masker.unmask(masker.mask("device_id", value)) == ("device_id", value)


@given(field=FIELDS, value=ANY_TEXT)
def test_same_value_same_key_same_token(ring: KeyRing, field: str, value: str) -> None:
    # A fresh Masker proves determinism comes from the cryptography, not a cache.
    assert Masker(ring).mask(field, value) == Masker(ring).mask(field, value)


@given(field=FIELDS, first=ANY_TEXT, second=ANY_TEXT)
def test_distinct_values_distinct_tokens(
    masker: Masker, field: str, first: str, second: str
) -> None:
    assume(first != second)
    assert masker.mask(field, first) != masker.mask(field, second)


@given(value=ANY_TEXT)
def test_field_is_bound_in(masker: Masker, value: str) -> None:
    ip_token = masker.mask("ip", value)
    device_token = masker.mask("device_id", value)
    assert parse_token(ip_token).payload != parse_token(device_token).payload
    moved = "siv:" + masker.active_key_id + ":device_id:" + parse_token(ip_token).payload
    with pytest.raises(TamperedTokenError):
        masker.unmask(moved)


@given(value=st.text(min_size=1), position=st.integers(min_value=0))
def test_tampered_token_fails(masker: Masker, value: str, position: int) -> None:
    token = masker.mask("ip", value)
    sealed = bytearray(b64decode(parse_token(token).payload))
    sealed[position % len(sealed)] ^= 0x01
    with pytest.raises(TamperedTokenError):
        masker.unmask(replace_payload(token, bytes(sealed)))


def test_wrong_key_with_same_id_fails_as_tampered(ring: KeyRing, masker: Masker) -> None:
    impostor = KeyRing("siv", ring.active_id, {ring.active_id: Key(secrets.token_bytes(64))})
    with pytest.raises(TamperedTokenError):
        Masker(impostor).unmask(masker.mask("ip", "198.51.100.23"))


def test_unknown_key_id_fails(masker: Masker) -> None:
    other = Masker(new_keyring("siv"))
    with pytest.raises(UnknownKeyError) as caught:
        masker.unmask(other.mask("ip", "198.51.100.23"))
    assert other.active_key_id in str(caught.value)


def test_relabelled_key_id_fails(ring: KeyRing, masker: Masker) -> None:
    rotated = Masker(rotate(ring))
    token = masker.mask("ip", "198.51.100.23")
    relabelled = "siv:" + rotated.active_key_id + token.removeprefix("siv:" + ring.active_id)
    with pytest.raises(TamperedTokenError):
        rotated.unmask(relabelled)


@given(text=st.text())
def test_text_that_is_not_a_token_is_malformed(masker: Masker, text: str) -> None:
    assume(not text.startswith(("siv:", "hmac:")))
    with pytest.raises(MalformedTokenError):
        masker.unmask(text)


@pytest.mark.parametrize(
    "suffix",
    [
        "not*base64",  # outside the alphabet
        "AAAA+AAA",  # standard, not URL-safe, alphabet
        "QUJD",  # decodes, but shorter than an AES-SIV tag
        "QUJDRA",  # padding missing: not the canonical form
    ],
)
def test_bad_payload_is_malformed(masker: Masker, suffix: str) -> None:
    with pytest.raises(MalformedTokenError):
        masker.unmask(f"siv:{masker.active_key_id}:ip:{suffix}")


def test_errors_never_contain_the_value(ring: KeyRing, masker: Masker) -> None:
    value = "203.0.113.77"
    token = masker.mask("ip", value)
    impostor = KeyRing("siv", ring.active_id, {ring.active_id: Key(secrets.token_bytes(64))})
    attempts = [
        lambda: Masker(impostor).unmask(token),
        lambda: Masker(new_keyring()).unmask(token),
        lambda: masker.unmask(value),
        lambda: masker.unmask(token[:-4] + "AAA="),
    ]
    for attempt in attempts:
        with pytest.raises(MaskingError) as caught:
            attempt()
        assert value not in str(caught.value)
        assert token not in str(caught.value)


def test_invalid_field_names_are_refused(masker: Masker) -> None:
    for field in ["", "IP", "a:b", "ip address", "x" * 33]:
        with pytest.raises(InvalidFieldError):
            masker.mask(field, "198.51.100.23")


# ----------------------------------------------------------------------------- rotation


@given(field=FIELDS, value=ANY_TEXT)
def test_rotation_keeps_old_tokens_readable(
    ring: KeyRing, masker: Masker, field: str, value: str
) -> None:
    old_token = masker.mask(field, value)
    rotated = Masker(rotate(ring))
    assert rotated.unmask(old_token) == (field, value)


def test_rotation_makes_new_tokens_with_the_new_key(ring: KeyRing, masker: Masker) -> None:
    rotated_ring = rotate(ring)
    rotated = Masker(rotated_ring)
    old_token = masker.mask("ip", "198.51.100.23")
    new_token = rotated.mask("ip", "198.51.100.23")
    assert rotated.token_key_id(new_token) == rotated_ring.active_id != ring.active_id
    assert new_token != old_token
    assert not rotated.is_current(old_token)
    assert rotated.rekey(old_token) == new_token
    assert rotated.rekey(new_token) == new_token


@pytest.mark.parametrize(
    ("field", "spelling", "canonical"),
    [
        ("ip", "2001:DB8::1", "2001:db8::1"),
        ("ip", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("ip", "::ffff:198.19.7.7", "198.19.7.7"),
        ("device_id", " 593-47-5928\t", "593-47-5928"),
        ("ip", "not an address", "not an address"),  # kept as it was, never refused
        ("body", " {} ", " {} "),  # bodies have no canonical form
    ],
)
def test_rekey_reissues_the_canonical_token_of_a_spelling(
    ring: KeyRing, masker: Masker, field: str, spelling: str, canonical: str
) -> None:
    rotated = Masker(rotate(ring))
    reissued = rotated.rekey(masker.mask(field, spelling))
    assert reissued == rotated.mask(field, canonical)
    assert rotated.unmask(reissued) == (field, canonical)


def test_rekey_row_merges_the_spellings_of_one_value(ring: KeyRing, masker: Masker) -> None:
    table = TokenTable("user_logins", "message_id", ("masked_ip", "masked_device_id"))
    rotated = Masker(rotate(ring))
    result = RekeyResult()
    rows = [
        ("m-1", masker.mask("ip", "2001:DB8::1"), masker.mask("device_id", "d-1 ")),
        ("m-2", masker.mask("ip", "2001:db8::1"), masker.mask("device_id", "d-1")),
    ]
    changes = [rekey_row(table, row, rotated, result) for row in rows]
    assert changes[0] is not None and changes[1] is not None
    expected = [rotated.mask("ip", "2001:db8::1"), rotated.mask("device_id", "d-1")]
    assert changes[0][:2] == changes[1][:2] == expected
    assert (result.tokens, result.failures) == (4, [])


# ----------------------------------------------------------------------------- HMAC


@given(field=FIELDS, value=ANY_TEXT)
def test_hmac_is_deterministic_and_refused_by_unmask(field: str, value: str) -> None:
    ring = new_keyring("hmac")
    token = Masker(ring).mask(field, value)
    assert token == Masker(ring).mask(field, value)
    assert token.startswith(f"hmac:{ring.active_id}:{field}:")
    for opener in (Masker(ring), Masker(new_keyring("siv"))):
        with pytest.raises(IrreversibleTokenError):
            opener.unmask(token)


@given(first=ANY_TEXT, second=ANY_TEXT)
def test_hmac_distinct_values_and_fields(hmac_masker: Masker, first: str, second: str) -> None:
    assert hmac_masker.mask("ip", first) != hmac_masker.mask("device_id", first)
    assume(first != second)
    assert hmac_masker.mask("ip", first) != hmac_masker.mask("ip", second)


def test_hmac_depends_on_the_key(hmac_masker: Masker) -> None:
    other = Masker(new_keyring("hmac"))
    payload = parse_token(hmac_masker.mask("ip", "198.51.100.23")).payload
    assert payload != parse_token(other.mask("ip", "198.51.100.23")).payload


# ----------------------------------------------------------------------------- format

IPV6_45 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"


def longest_id_rings() -> list[KeyRing]:
    """Rings whose key id has the maximum length: the longest possible prefixes."""
    key_id = "k" * 16
    return [
        KeyRing(mode, key_id, {key_id: Key(secrets.token_bytes(size))})
        for mode, size in (("siv", 64), ("hmac", 32))
    ]


@given(
    field=st.sampled_from(["ip", "device_id"]),
    value=st.text(st.characters(codec="utf-8"), max_size=64),
)
def test_tokens_of_values_within_the_byte_bound_fit_varchar_256(field: str, value: str) -> None:
    assume(len(value.encode()) <= max_value_bytes(field))
    for ring in longest_id_rings():
        assert len(Masker(ring).mask(field, value)) <= 256


def test_longest_validated_values_fit_varchar_256() -> None:
    assert len(IPV6_45) == 45
    for ring in longest_id_rings():
        masker = Masker(ring)
        assert len(masker.mask("ip", IPV6_45)) <= 256
        assert len(masker.mask("device_id", "d" * 64)) <= 256
        assert len(masker.mask("device_id", "ж" * 64)) <= 256  # two-byte characters
        assert len(masker.mask("device_id", "x" * max_value_bytes("device_id"))) <= 256


@given(field=FIELDS, value=ANY_TEXT)
def test_tokens_never_look_like_ips_or_device_ids(
    masker: Masker, hmac_masker: Masker, field: str, value: str
) -> None:
    for token in (masker.mask(field, value), hmac_masker.mask(field, value)):
        assert TOKEN_SHAPE.match(token)
        assert not re.fullmatch(r"[0-9-]+", token)  # device ids look like 593-47-5928
        with pytest.raises(ValueError):
            ipaddress.ip_address(token)


def test_recurring_values_get_the_same_tokens_as_mask_before_and_after_eviction() -> None:
    masker = Masker(new_keyring())
    values = [f"device-{n % 50}" for n in range(200)]
    assert [masker.mask_recurring("device_id", v) for v in values] == [
        masker.mask("device_id", v) for v in values
    ]
    assert masker.mask_recurring("ip", "10.0.0.1") == masker.mask("ip", "10.0.0.1")
    assert masker.mask_recurring("ip", "10.0.0.1") != masker.mask_recurring("device_id", "10.0.0.1")
    for n in range(RECENT_TOKENS + 10):
        masker.mask_recurring("device_id", f"d{n}")
    assert masker.mask_recurring("device_id", "d0") == masker.mask("device_id", "d0")
