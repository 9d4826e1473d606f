"""Kafka TLS and SASL settings, shared by the bridge, the workers and the CLI.

One parsed description (:class:`KafkaSecurity`) becomes either keyword
arguments for aiokafka clients (bridge, replay, status) or Faust broker
credentials (workers), so every process authenticates the same way.
Passwords never appear in ``repr`` or error messages.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from stream.common.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSecurityError(ValueError):
    """The security settings contradict each other; the message says how."""


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    mechanism: str = "PLAIN"
    username: str = ""
    password: str = field(default="", repr=False)
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaSecurity:
        security = cls(
            protocol=settings.kafka_security_protocol.upper(),
            mechanism=settings.kafka_sasl_mechanism.upper(),
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
        security.check()
        return security

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise KafkaSecurityError(
                f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}, "
                f"got {self.protocol!r}"
            )
        if self.uses_sasl and self.mechanism not in MECHANISMS:
            raise KafkaSecurityError(
                f"KAFKA_SASL_MECHANISM must be one of {', '.join(MECHANISMS)}, "
                f"got {self.mechanism!r}"
            )
        if self.uses_sasl and not (self.username and self.password):
            raise KafkaSecurityError(
                f"{self.protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        if bool(self.certfile) != bool(self.keyfile):
            raise KafkaSecurityError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (CA file or system roots, optional client cert)."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(cafile=self.cafile or None)
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def aiokafka_options(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer / Consumer / AdminClient."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            options.update(
                sasl_mechanism=self.mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return options

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` (``None`` for plaintext)."""
        import faust

        if self.uses_sasl:
            return faust.SASLCredentials(
                username=self.username,
                password=self.password,
                ssl_context=self.ssl_context(),
                mechanism=self.mechanism,
            )
        if self.uses_tls:
            return faust.SSLCredentials(self.ssl_context())
        return None
