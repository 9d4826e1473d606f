"""Read one secret text from AWS Secrets Manager or an SSM SecureString parameter.

A reference names where the text lives, and is the only thing errors ever
quote: ``secretsmanager:NAME``, ``ssm:NAME``, or an ARN of either service
(``arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME``,
``arn:aws:ssm:REGION:ACCOUNT:parameter/NAME``; an ARN's region wins over the
configured one, since the secret lives there). Errors are one line, built
from AWS's error *code* and a fixed explanation, never from the service's
message or the response, so no value can leak into a log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

SECRETS_MANAGER = "secretsmanager"
SSM = "ssm"
SERVICES = (SECRETS_MANAGER, SSM)

# What each service's read needs, named in the denial message.
_PERMISSIONS = {
    SECRETS_MANAGER: "secretsmanager:GetSecretValue (and kms:Decrypt on its KMS key)",
    SSM: "ssm:GetParameter (and kms:Decrypt on its KMS key)",
}
_NOT_FOUND = frozenset({"ResourceNotFoundException", "ParameterNotFound"})
_DENIED = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "KMSAccessDeniedException",
    }
)

# (service, region) -> a client with get_secret_value / get_parameter.
ClientFactory = Callable[[str, str], Any]


class SecretSourceError(Exception):
    """The secret cannot be read: the message names the reference and why, never a value."""


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives: the service, its name or ARN as AWS takes it, and
    the ARN's region (empty for a bare name: the configured region)."""

    service: str
    name: str
    region: str = ""

    def __str__(self) -> str:
        return f"{self.service}:{self.name}"


def parse_secret_ref(text: str) -> SecretRef:
    """The reference *text* spells; :class:`SecretSourceError` if it is none."""
    text = text.strip()
    if text.startswith("arn:"):
        return _parse_arn(text)
    service, sep, name = text.partition(":")
    if not sep or service not in SERVICES or not name:
        raise SecretSourceError(
            f"{text!r} is not a secret reference: use secretsmanager:NAME, ssm:NAME "
            "or the ARN of a Secrets Manager secret or an SSM parameter"
        )
    if name.startswith("arn:"):
        return _parse_arn(name)
    return SecretRef(service, name)


def _parse_arn(arn: str) -> SecretRef:
    # arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE (the resource may hold ':')
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[2] == SECRETS_MANAGER and parts[5].startswith("secret:"):
        return SecretRef(SECRETS_MANAGER, arn, parts[3])
    if len(parts) == 6 and parts[2] == SSM and parts[5].startswith("parameter/"):
        # GetParameter takes the ARN too; the region must be the parameter's.
        return SecretRef(SSM, arn, parts[3])
    raise SecretSourceError(
        f"{arn!r} is neither a Secrets Manager secret ARN (…:secret:NAME) "
        "nor an SSM parameter ARN (…:parameter/NAME)"
    )


def read_secret_text(ref: SecretRef, region: str, clients: ClientFactory) -> str:
    """The text stored at *ref* (the ARN's region, else *region*)."""
    client = clients(ref.service, ref.region or region)
    try:
        if ref.service == SECRETS_MANAGER:
            return _secret_string(ref, client.get_secret_value(SecretId=ref.name))
        return _parameter_value(ref, client.get_parameter(Name=ref.name, WithDecryption=True))
    except ClientError as exc:
        raise SecretSourceError(client_error_line(ref, exc)) from None
    except BotoCoreError as exc:
        # No credentials, no endpoint, a timeout: botocore's messages name
        # settings and URLs, never the secret (which was not read).
        raise SecretSourceError(f"cannot read {ref}: {exc}") from None


def client_error_line(ref: SecretRef, exc: ClientError) -> str:
    """One line for an AWS refusal, from its code only (the message may quote the request)."""
    code = str(exc.response.get("Error", {}).get("Code", "")) or "an unknown error"
    if code in _NOT_FOUND:
        return f"{ref} does not exist (or is not visible to these credentials) ({code})"
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    # A 403 whatever its code: some front ends (an IAM-enforcing proxy, moto)
    # refuse before the service can name the error.
    if code in _DENIED or status == 403:
        return f"access to {ref} denied ({code}): the role needs {_PERMISSIONS[ref.service]}"
    return f"cannot read {ref}: AWS answered {code}"


def _secret_string(ref: SecretRef, response: dict[str, Any]) -> str:
    if isinstance(response.get("SecretString"), str):
        return str(response["SecretString"])
    binary = response.get("SecretBinary")
    if isinstance(binary, bytes | bytearray):
        try:
            return bytes(binary).decode()
        except UnicodeDecodeError:
            raise SecretSourceError(f"{ref}: the binary secret is not UTF-8 text") from None
    raise SecretSourceError(f"{ref} has no current value")


def _parameter_value(ref: SecretRef, response: dict[str, Any]) -> str:
    parameter = response.get("Parameter", {})
    if parameter.get("Type") != "SecureString":
        # Key material in a plain String parameter is readable by anyone with
        # ssm:GetParameter and shown in the console: refuse rather than use it.
        raise SecretSourceError(
            f"{ref} is a {parameter.get('Type', 'untyped')} parameter: "
            "store the key ring as a SecureString (encrypted with KMS)"
        )
    return str(parameter.get("Value", ""))
