"""Kafka TLS and SASL settings, shared by the bridge, the workers and the CLI.

One parsed description (:class:`KafkaSecurity`) becomes either keyword
arguments for aiokafka clients or Faust broker credentials (workers), so
every process authenticates the same way. Every aiokafka client in
``stream/`` (replay, status, the sandbox's admin, consumers and producers)
and the bridge's topic creation is built by :class:`KafkaClients`, so none
can connect in plaintext to a cluster that requires TLS or SASL; admin
clients come started and are closed again by
:meth:`KafkaClients.admin_session`. Passwords never appear in ``repr`` or
error messages.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient

from stream.common.errors import one_line
from stream.common.kafka_oauth import (
    AWS_MSK_IAM,
    TokenProviderError,
    check_provider_setting,
    token_provider,
)
from stream.common.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM")
#: Mechanisms whose secret is a token from a provider, not a password.
TOKEN_MECHANISMS = ("OAUTHBEARER", "AWS_MSK_IAM")


class KafkaSecurityError(ValueError):
    """The security settings contradict each other; the message says how."""


@contextlib.contextmanager
def _naming_the_files(settings: str) -> Iterator[None]:
    """A TLS file that is missing, unreadable or not PEM: one line naming the
    *settings* that point at it (the caller prints it and exits 2), not
    ssl's bare traceback."""
    try:
        yield
    except OSError as exc:  # ssl.SSLError included
        raise KafkaSecurityError(f"{settings}: {exc.strerror or one_line(exc)}") from None


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    mechanism: str = "PLAIN"
    username: str = ""
    password: str = field(default="", repr=False)
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    # OAUTHBEARER: which provider makes tokens (see stream.common.kafka_oauth).
    token_provider: str = ""
    token_lifetime: float = 3600.0
    region: str = ""

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
            token_provider=settings.kafka_sasl_oauth_token_provider,
            token_lifetime=settings.kafka_sasl_oauth_token_lifetime_seconds,
            region=settings.aws_region,
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
        if self.uses_tokens:
            try:
                check_provider_setting(self.provider_setting, self.region)
            except TokenProviderError as exc:
                raise KafkaSecurityError(str(exc)) from None
        elif self.uses_sasl and not (self.username and self.password):
            raise KafkaSecurityError(
                f"{self.protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        if bool(self.certfile) != bool(self.keyfile):
            raise KafkaSecurityError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")

    @property
    def uses_tokens(self) -> bool:
        return self.uses_sasl and self.mechanism in TOKEN_MECHANISMS

    @property
    def provider_setting(self) -> str:
        """The token provider: AWS_MSK_IAM means AWS's signer."""
        if self.mechanism == "AWS_MSK_IAM":
            return self.token_provider or AWS_MSK_IAM
        return self.token_provider

    def oauth_provider(self) -> AbstractTokenProvider:
        """The process's token provider for these settings (shared by its clients)."""
        return token_provider(
            self.provider_setting, self.username, self.region, self.token_lifetime
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (CA file or system roots, optional client cert)."""
        if not self.uses_tls:
            return None
        with _naming_the_files(f"KAFKA_SSL_CAFILE={self.cafile}"):
            context = ssl.create_default_context(cafile=self.cafile or None)
        if self.certfile:
            pair = f"KAFKA_SSL_CERTFILE={self.certfile}, KAFKA_SSL_KEYFILE={self.keyfile}"
            with _naming_the_files(pair):
                context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def aiokafka_options(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer / Consumer / AdminClient."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_tokens:
            options.update(
                sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=self.oauth_provider()
            )
        elif self.uses_sasl:
            options.update(
                sasl_mechanism=self.mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return options

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` (``None`` for plaintext)."""
        import faust

        if self.uses_tokens:
            return faust.OAuthCredentials(
                oauth_cb=self.oauth_provider(), ssl_context=self.ssl_context()
            )
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


@dataclass(frozen=True)
class KafkaClients:
    """The one factory of aiokafka clients: bootstrap servers and security
    from the same settings, so a command cannot forget either."""

    bootstrap_servers: str
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaClients:
        """Raises :class:`KafkaSecurityError` when the settings contradict each other."""
        return cls(settings.kafka_bootstrap_servers, KafkaSecurity.from_settings(settings))

    def client_kwargs(self, **options: Any) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client; *options* add to them."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            **self.security.aiokafka_options(),
            **options,
        }

    def admin(self, **options: Any) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.client_kwargs(**options))

    @contextlib.asynccontextmanager
    async def admin_session(self, **options: Any) -> AsyncIterator[AIOKafkaAdminClient]:
        """A started admin client, closed when the block ends, however it ends.

        The close follows a failed start too: a bootstrap that gave up may
        still hold connections.
        """
        admin = self.admin(**options)
        try:
            await admin.start()
            yield admin
        finally:
            await admin.close()

    def consumer(self, *topics: str, **options: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*topics, **self.client_kwargs(**options))

    def producer(self, **options: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self.client_kwargs(**options))
