"""Canonical spellings of IPs and device ids (stream.common.canonical), for bridge and workers."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.common.canonical import (
    InvalidAddress,
    canonical_device_id,
    canonical_ip,
    canonical_value,
    raw_record_key,
)

NOT_AN_ADDRESS = "is not an IPv4 or IPv6 address"
BAD_ZONE = "has a zone id other than 1-64 letters, digits, '-', '.', '_', '~'"


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  # RFC 5952: the first longest run
        ("::ffff:198.19.7.7", "198.19.7.7"),
        ("::FFFF:C613:707", "198.19.7.7"),
        ("0:0:0:0:0:ffff:198.19.7.7", "198.19.7.7"),
        ("198.19.7.7", "198.19.7.7"),
        (" 198.19.7.7\t", "198.19.7.7"),
        ("FE80::1%eth0", "fe80::1%eth0"),
        ("fe80:0::1%Wi-Fi_2.~", "fe80::1%Wi-Fi_2.~"),  # zone kept verbatim
        ("fe80::1%12", "fe80::1%12"),
    ],
)
def test_every_spelling_of_an_address_has_one_canonical_text(spelling: str, canonical: str) -> None:
    assert canonical_ip(spelling) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.2.3", NOT_AN_ADDRESS),
        ("01.2.3.4", NOT_AN_ADDRESS),  # leading zeros: octal or decimal?
        ("1.2.3.4%eth0", NOT_AN_ADDRESS),  # IPv4 has no zones
        ("\uff11.2.3.4", NOT_AN_ADDRESS),  # fullwidth digit
        ("fe80::1%", BAD_ZONE),
        ("::ffff:1.2.3.4%eth0", "has a zone id on an IPv4-mapped address"),
        ("fe80::1%eth 0", BAD_ZONE),
        ("fe80::1%eth\x000", BAD_ZONE),
        ("fe80::1%a%b", BAD_ZONE),
        ("fe80::1%" + "z" * 65, BAD_ZONE),
        ("fe80::1%\u00e9th0", NOT_AN_ADDRESS),
    ],
)
def test_what_is_not_an_acceptable_address_says_why_without_quoting_it(
    text: str, message: str
) -> None:
    with pytest.raises(InvalidAddress) as caught:
        canonical_ip(text)
    assert str(caught.value) == message


@given(st.ip_addresses())
def test_canonical_ip_is_the_same_address_and_idempotent(address: object) -> None:
    canonical = canonical_ip(str(address))
    assert canonical_ip(canonical) == canonical
    parsed = ipaddress.ip_address(canonical)
    mapped = getattr(address, "ipv4_mapped", None)
    assert parsed == (mapped or address)


@given(st.ip_addresses(v=6))
def test_expanded_and_upper_case_ipv6_give_the_compressed_form(
    address: ipaddress.IPv6Address,
) -> None:
    assert canonical_ip(address.exploded.upper()) == canonical_ip(address.compressed)


def test_device_ids_lose_surrounding_whitespace_only() -> None:
    assert canonical_device_id(" 593-47-5928\n") == "593-47-5928"
    assert canonical_device_id("593 47 5928") == "593 47 5928"


def test_canonical_value_never_refuses() -> None:
    assert canonical_value("ip", "2001:DB8::1") == "2001:db8::1"
    assert canonical_value("ip", "not an ip") == "not an ip"
    assert canonical_value("device_id", " d-1 ") == "d-1"
    assert canonical_value("body", " {} ") == " {} "


def test_bridge_keys_every_spelling_of_a_value_alike() -> None:
    def key(field: str, value: str) -> bytes | None:
        return raw_record_key(json.dumps({field: value}).encode(), field)

    assert key("device_id", " d-1 ") == key("device_id", "d-1")
    assert key("ip", "::ffff:198.19.7.7") == key("ip", "198.19.7.7")
    assert key("ip", "2001:DB8::1") == key("ip", "2001:db8::1")


def _ipv4_like() -> st.SearchStrategy[str]:
    octet = st.one_of(
        st.integers(0, 300).map(str),
        st.integers(0, 255).map(lambda n: f"0{n}"),  # leading zeros
        st.text("0123456789٣", min_size=0, max_size=4),  # empty, long, non-ASCII digits
    )
    return st.lists(octet, min_size=3, max_size=5).map(".".join)


@given(_ipv4_like())
def test_the_dotted_quad_fast_path_accepts_exactly_what_ipaddress_accepts(text: str) -> None:
    try:
        expected = str(ipaddress.IPv4Address(text))
    except ValueError:
        expected = None
    try:
        got = canonical_ip(text)
    except InvalidAddress:
        got = None
    assert got == expected
