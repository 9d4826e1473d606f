"""botocore clients for the AWS services maskstream reads besides SQS.

One place decides the region and endpoint of Secrets Manager, SSM and RDS
clients, so a test server or a VPC endpoint (``MASKSTREAM_AWS_ENDPOINT_URL``)
applies to all of them. Without it, botocore resolves the endpoint itself,
``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>`` included. Credentials
always come from botocore's chain (environment, profile, instance or task
role): nothing here reads or holds a secret.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config

# A key ring read or a token signed at start must not hang a worker for
# minutes behind botocore's default retries and timeouts.
_CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3})


def aws_client(service: str, region: str, endpoint_url: str = "") -> Any:
    """A botocore client of *service* in *region* (at *endpoint_url* if given)."""
    return boto3.session.Session().client(
        service,
        region_name=region,
        endpoint_url=endpoint_url or None,
        config=_CLIENT_CONFIG,
    )


def rds_auth_token(host: str, port: int, user: str, region: str, endpoint_url: str = "") -> str:
    """A fresh RDS IAM authentication token (valid 15 minutes) for *user* at *host*:*port*.

    Signed locally with the current credentials: no call to AWS is made, so
    asking for one per connection costs microseconds, not a round trip.
    """
    client = _rds_client(region, endpoint_url)
    token: str = client.generate_db_auth_token(
        DBHostname=host, Port=port, DBUsername=user, Region=region
    )
    return token


@lru_cache(maxsize=4)
def _rds_client(region: str, endpoint_url: str) -> Any:
    """One RDS client per region and endpoint: making a client loads botocore's
    service models (tens of milliseconds), and a worker signs a token per
    connection. Its credentials refresh themselves (role credentials expire)."""
    return aws_client("rds", region, endpoint_url)
