"""AWS Signature Version 4 for SQS requests, as a pure function of request, keys and time.

botocore's ``SigV4Auth`` rebuilds the signing key (four HMACs) and walks a
generic request object on every call; the bridge signs two requests per ten
messages, so the key is derived once per (secret, day, region, service) and
cached, and the canonical request is built from the few headers the client
sends. ``tests/test_sqs_signing.py`` checks the result against botocore's
``SigV4Auth`` for the same request and instant.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Credentials:
    """One set of AWS keys, read fresh from the credential chain for each request."""

    access_key: str
    secret_key: str = ""
    token: str | None = None

    def __repr__(self) -> str:  # keys never reach a log line
        return f"Credentials(access_key={self.access_key!r}, secret_key=..., token=...)"


@functools.lru_cache(maxsize=16)
def signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    """The day's derived key: valid for every request of that day, region and service."""
    key = hmac.digest(f"AWS4{secret_key}".encode(), day.encode(), "sha256")
    key = hmac.digest(key, region.encode(), "sha256")
    key = hmac.digest(key, service.encode(), "sha256")
    return hmac.digest(key, b"aws4_request", "sha256")


@functools.lru_cache(maxsize=64)
def canonical_target(url: str) -> tuple[str, str, str]:
    """(host header, canonical path, canonical query) of a URL, cached per URL.

    The host loses a default port, as HTTP clients send it; the path is
    percent-encoded as SigV4 asks (``/`` and ``~`` kept).
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.port is not None and parts.port != DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    path = quote(parts.path or "/", safe="/~")
    query = "&".join(sorted(parts.query.split("&"))) if parts.query else ""
    return host, path, query


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Credentials,
    region: str,
    now: datetime,
    service: str = "sqs",
) -> dict[str, str]:
    """*headers* plus ``Host``, ``X-Amz-Date``, the session token and ``Authorization``.

    *headers* are signed as given (names are lower-cased for the signature);
    *now* must be UTC.
    """
    host, path, query = canonical_target(url)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    signed = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    signed["host"] = host
    signed["x-amz-date"] = stamp
    if credentials.token:
        signed["x-amz-security-token"] = credentials.token
    names = sorted(signed)
    signed_names = ";".join(names)
    canonical = "\n".join(
        (
            method,
            path,
            query,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            signed_names,
            hashlib.sha256(body).hexdigest(),
        )
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = signing_key(credentials.secret_key, day, region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = dict(headers)
    out["Host"] = host
    out["X-Amz-Date"] = stamp
    if credentials.token:
        out["X-Amz-Security-Token"] = credentials.token
    out["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={signed_names}, Signature={signature}"
    )
    return out
