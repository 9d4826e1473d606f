"""Where requests go, under which region, signed with which keys: botocore's answers.

botocore resolves what every AWS tool resolves the same way: the credential
chain (environment, profiles, SSO, AssumeRole, web identity, container and
instance metadata), the region, and the endpoint (``AWS_ENDPOINT_URL_SQS``,
``AWS_ENDPOINT_URL``, the config file). It is asked once per process; the
credentials object it returns refreshes itself, and is read at each request
so a rotation is picked up.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bridge.sqs.signing import Credentials

# An AWS SQS host names its region: sqs.<region>.amazonaws.com[.cn], or the
# legacy <region>.queue.amazonaws.com.
AWS_HOST = re.compile(
    r"^(?:sqs[.-](?:fips[.-])?(?P<region>[a-z0-9-]+)|(?P<legacy>[a-z0-9-]+)\.queue)"
    r"\.amazonaws\.com(?:\.cn)?$"
)


@dataclass(frozen=True)
class Endpoint:
    """The URL every call is POSTed to, and the region its signature names."""

    url: str
    region: str


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def aws_region_of(url: str) -> str | None:
    """The region an AWS SQS URL names, or None for any other host."""
    match = AWS_HOST.match((urlsplit(url).hostname or "").lower())
    if match is None:
        return None
    return match.group("region") or match.group("legacy")


def choose_endpoint(resolved: Endpoint, configured: bool, queue_url: str) -> Endpoint:
    """The endpoint for *queue_url*, given botocore's *resolved* one.

    An endpoint the user *configured* wins. Otherwise a queue URL on AWS
    names its own region (a bridge in one region may read a queue in
    another), and a queue URL on any other host (LocalStack, ElasticMQ) is
    served by that host: what users expect when they give only the URL.
    """
    if configured or not queue_url:
        return resolved
    region = aws_region_of(queue_url)
    if region is not None:
        return Endpoint(origin(queue_url), region)
    return Endpoint(origin(queue_url), resolved.region)


@functools.cache
def _botocore_session() -> Any:
    import botocore.session

    return botocore.session.get_session()


@functools.cache
def resolve(region: str | None, endpoint_url: str | None) -> tuple[Endpoint, bool]:
    """botocore's endpoint and region for SQS, and whether an endpoint was configured."""
    session = _botocore_session()
    client = session.create_client("sqs", region_name=region or None, endpoint_url=endpoint_url)
    url = client.meta.endpoint_url.rstrip("/")
    configured = bool(endpoint_url) or aws_region_of(url) is None
    return Endpoint(url, client.meta.region_name or "us-east-1"), configured


class CredentialSource:
    """The chain's current keys, read at each request (refreshable credentials rotate)."""

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials
        self._last: tuple[Any, Credentials] | None = None

    @classmethod
    def from_chain(cls) -> CredentialSource:
        """botocore's default chain; raises :class:`LookupError` if it finds no keys."""
        credentials = _botocore_session().get_credentials()
        if credentials is None:
            raise LookupError(
                "no AWS credentials found (environment, profile, SSO, role, or instance "
                "metadata); local servers accept any, e.g. AWS_ACCESS_KEY_ID=local "
                "AWS_SECRET_ACCESS_KEY=local"
            )
        return cls(credentials)

    @classmethod
    def static(cls, access_key: str, secret_key: str, token: str | None = None) -> CredentialSource:
        """Fixed keys (a local server's, a test's)."""
        from botocore.credentials import Credentials as BotocoreCredentials

        return cls(BotocoreCredentials(access_key, secret_key, token))

    def current(self) -> Credentials:
        frozen = self._credentials.get_frozen_credentials()
        last = self._last
        if last is not None and last[0] == frozen:
            return last[1]
        keys = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
        self._last = (frozen, keys)
        return keys
