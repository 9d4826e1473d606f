"""Canonical spellings of PII values, shared by the bridge and the workers.

Masking is deterministic, so two spellings of one value would get two tokens
and hide a duplicate. The bridge also keys raw records by a hash of the
canonical device id, so every spelling of one device lands in one partition
(and its ``seen_devices`` entry in one changelog partition). Both sides must
therefore agree on the canonical form: it is defined here, once, and the
rules are written down in docs/masking.md ("Canonical values").

Pure functions; of the project, this module imports only :mod:`stream.common.envelopes`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from stream.common.envelopes import login_document

# Bytes of SHA-256 kept for a raw record's key: enough that two devices never
# collide in practice, short enough to cost nothing on the wire.
RAW_KEY_BYTES = 16

# An IPv6 zone id (RFC 4007) as RFC 6874 lets a URI carry it: unreserved
# characters only. Interface names ("eth0", "en0", "wlp2s0") and Windows zone
# numbers fit; spaces, control characters and other scripts do not.
ZONE_ID = re.compile(r"[A-Za-z0-9._~-]{1,64}\Z")


# Exactly the texts ipaddress.IPv4Address accepts (four decimal octets of
# 0-255, no leading zeros, ASCII digits), which are already canonical: most
# logins carry one, and the regular expression costs a tenth of the parse.
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


class InvalidAddress(ValueError):
    """The text is not an acceptable IP address.

    The message completes "ip ...", e.g. "ip is not an IPv4 or IPv6 address",
    and never quotes the text: it may be PII (ipaddress's own errors quote it).
    """


def canonical_device_id(value: str) -> str:
    """A device id without surrounding whitespace."""
    return value.strip()


def canonical_ip(value: str) -> str:
    """The one text form of an IP address, or :class:`InvalidAddress`.

    - surrounding whitespace is dropped;
    - IPv4 stays dotted decimal (``ipaddress`` refuses leading zeros);
    - IPv6 becomes RFC 5952 text, lower case with the longest run of zero
      groups as ``::`` (``2001:DB8::1``, ``2001:db8::1`` and
      ``2001:0db8:0:0:0:0:0:1`` are all ``2001:db8::1``);
    - an IPv4-mapped IPv6 address becomes its IPv4 form
      (``::ffff:198.19.7.7`` -> ``198.19.7.7``): it is how a dual-stack socket
      reports an IPv4 client, the same client as ``198.19.7.7``;
    - a zone id (``fe80::1%eth0``) is kept, verbatim (interface names are
      case-sensitive), if it is 1-64 of RFC 6874's unreserved characters; it
      is refused on IPv4 and IPv4-mapped addresses, which have no zones.
    """
    text = value.strip()
    if DOTTED_QUAD.fullmatch(text):
        return text  # the one IPv4 spelling ipaddress takes, without its cost
    if not text.isascii():
        raise InvalidAddress("is not an IPv4 or IPv6 address")
    address_text, has_zone, zone = text.partition("%")
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        raise InvalidAddress("is not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv4Address):
        if has_zone:
            raise InvalidAddress("is not an IPv4 or IPv6 address")  # IPv4 has no zones
        # ipaddress takes only the one dotted-decimal spelling (no leading
        # zeros, four octets): the text is canonical, and str() would cost time.
        return address_text
    mapped = address.ipv4_mapped
    if not has_zone:
        return str(mapped or address)
    if mapped is not None:
        raise InvalidAddress("has a zone id on an IPv4-mapped address")
    if not ZONE_ID.match(zone):
        raise InvalidAddress("has a zone id other than 1-64 letters, digits, '-', '.', '_', '~'")
    return f"{address}%{zone}"


def canonical_value(field: str, value: str) -> str:
    """*value* of *field* in canonical form, for code that must not refuse it.

    The bridge (keying) and ``rekey`` (re-masking recovered values) see values
    validation may refuse or may have refused under older rules; those are
    kept as they are rather than raising. Fields without a rule are unchanged.
    """
    if field == "device_id":
        return canonical_device_id(value)
    if field == "ip":
        try:
            return canonical_ip(value)
        except InvalidAddress:
            return value
    return value


def raw_record_key(body: bytes, field: str, envelope: str = "auto") -> bytes | None:
    """The key of a raw record: a hash of the login's *field* (canonical form).

    Like Kafka Connect's ValueToKey, so every login of a device lands in one
    partition of the raw topic; hashed, so tools that print keys show no PII.
    The login is the body, or what an envelope the *envelope* mode unwraps
    holds (:mod:`stream.common.envelopes`). None when there is no JSON object
    with that field as a string: the caller keys such a record by its message
    id instead. Never raises.
    """
    document = login_document(body, envelope)
    value = document.get(field) if isinstance(document, dict) else None
    if not isinstance(value, str):
        return None
    try:
        encoded = canonical_value(field, value).encode()
    except UnicodeEncodeError:  # a lone surrogate escape: keyed by message id
        return None
    return hashlib.sha256(encoded).digest()[:RAW_KEY_BYTES]
