"""SASL/OAUTHBEARER tokens for every Kafka client: AWS MSK IAM, or any provider.

aiokafka asks a token provider for a token each time a connection
authenticates, and Faust passes the same provider to its clients. The
providers here cache a token until shortly before it expires, so many
connections opening together (a worker's consumer, producer and admin) share
one, and a connection opened later gets a fresh one. A broker that bounds
sessions by the token's lifetime (KIP-368, ``connections.max.reauth.ms``)
closes a connection whose token expired; the client reconnects and takes the
provider's current token, so nothing is lost but a round trip (produces are
idempotent, fetches resume from their position).

Which provider (``KAFKA_SASL_OAUTH_TOKEN_PROVIDER``):

- ``aws-msk-iam``: AWS's own signer (``aws-msk-iam-sasl-signer-python``),
  with botocore's credential chain (environment, profile, IRSA web identity,
  instance role) and ``AWS_REGION``; what MSK Serverless requires.
  ``KAFKA_SASL_MECHANISM=AWS_MSK_IAM`` is a shorthand for it;
- ``unsecured``: Kafka's unsecured JWS (``alg: none``) for the principal
  ``KAFKA_SASL_USERNAME``, for a broker with Kafka's default unsecured
  validator (the local stack's SASL listener); never for production;
- ``<module>:<callable>``: any other OAuth source: the callable, given no
  arguments, returns an :class:`aiokafka.abc.AbstractTokenProvider`.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import time
from dataclasses import dataclass
from typing import Any

from aiokafka.abc import AbstractTokenProvider

#: A cached token is replaced this long before it expires.
REFRESH_MARGIN_SECONDS = 60.0
AWS_MSK_IAM = "aws-msk-iam"
UNSECURED = "unsecured"


class TokenProviderError(ValueError):
    """A token provider setting that names nothing usable; the message says why."""


@dataclass(frozen=True)
class Token:
    value: str = ""
    expires_at: float = 0.0  # time.time() seconds
    issued_at: float = 0.0

    def fresh(self, now: float, margin: float) -> bool:
        """Usable for a while yet: more than *margin* (or half its whole
        lifetime, when that is shorter) before it expires."""
        margin = min(margin, (self.expires_at - self.issued_at) / 2)
        return bool(self.value) and now < self.expires_at - margin


class CachingTokenProvider(AbstractTokenProvider):
    """A token provider that keeps its token until *margin* before it expires
    (or half its lifetime, for short-lived tokens: see :meth:`Token.fresh`).

    No lock: a worker's consumer runs on an event loop of its own thread, so
    an asyncio lock would belong to one loop only; callers that race merely
    make one token each. Tokens are made off the event loop (signing may
    first fetch credentials)."""

    def __init__(self, margin: float = REFRESH_MARGIN_SECONDS) -> None:
        self._margin = margin
        self._token = Token()
        #: How many tokens were made (for tests).
        self.issued = 0

    async def token(self) -> str:
        if self._token.fresh(time.time(), self._margin):
            return self._token.value
        self._token = await asyncio.to_thread(self.new_token)
        self.issued += 1
        return self._token.value

    def new_token(self) -> Token:
        raise NotImplementedError


def unsecured_jws(principal: str, issued_at: float, lifetime: float) -> str:
    """Kafka's unsecured token: a JWS with ``alg: none`` and an empty signature."""

    def part(claims: dict[str, Any]) -> str:
        raw = json.dumps(claims, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {"sub": principal, "iat": int(issued_at), "exp": int(issued_at + lifetime)}
    return f"{part({'alg': 'none'})}.{part(claims)}."


class UnsecuredTokenProvider(CachingTokenProvider):
    """Unsecured tokens for *principal*, each valid *lifetime* seconds."""

    def __init__(self, principal: str, lifetime: float) -> None:
        super().__init__()
        self.principal, self.lifetime = principal, lifetime

    def new_token(self) -> Token:
        now = time.time()
        value = unsecured_jws(self.principal, now, self.lifetime)
        return Token(value, now + self.lifetime, now)


class MskIamTokenProvider(CachingTokenProvider):
    """AWS MSK IAM tokens (15 minutes each) for *region*, signed with
    botocore's default credentials."""

    def __init__(self, region: str) -> None:
        super().__init__()
        self.region = region

    def new_token(self) -> Token:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

        now = time.time()
        value, expiry_ms = MSKAuthTokenProvider.generate_auth_token(self.region)
        return Token(value, expiry_ms / 1000, now)


def named_provider(spec: str) -> AbstractTokenProvider:
    """The provider ``<module>:<callable>`` makes."""
    module_name, _, attribute = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        raise TokenProviderError(
            f"KAFKA_SASL_OAUTH_TOKEN_PROVIDER={spec}: no such module:callable"
        ) from None
    provider = factory()
    if not isinstance(provider, AbstractTokenProvider):
        raise TokenProviderError(
            f"KAFKA_SASL_OAUTH_TOKEN_PROVIDER={spec} returned {type(provider).__name__}, "
            "not an aiokafka AbstractTokenProvider"
        )
    return provider


def check_provider_setting(spec: str, region: str) -> None:
    """Refuse a provider setting that cannot work, before any client starts."""
    if spec == AWS_MSK_IAM:
        if not region:
            raise TokenProviderError("AWS MSK IAM needs AWS_REGION (or AWS_DEFAULT_REGION)")
    elif spec != UNSECURED and ":" not in spec:
        raise TokenProviderError(
            f"KAFKA_SASL_OAUTH_TOKEN_PROVIDER must be {AWS_MSK_IAM}, {UNSECURED} or "
            f"<module>:<callable>, got {spec!r}"
        )


_providers: dict[tuple[str, str, str, float], AbstractTokenProvider] = {}


def token_provider(
    spec: str, principal: str, region: str, lifetime: float
) -> AbstractTokenProvider:
    """The process's one provider for these settings: every client of the
    process shares its cached token."""
    key = (spec, principal, region, lifetime)
    if key not in _providers:
        check_provider_setting(spec, region)
        if spec == AWS_MSK_IAM:
            _providers[key] = MskIamTokenProvider(region)
        elif spec == UNSECURED:
            _providers[key] = UnsecuredTokenProvider(principal or "maskstream", lifetime)
        else:
            _providers[key] = named_provider(spec)
    return _providers[key]
