"""The configured key ring, wherever it lives, kept current in a running worker.

:func:`load_configured_keyring` reads the ring from AWS when
``MASKSTREAM_KEYRING_SOURCE`` names a secret (stream.common.aws_secrets), and
otherwise from the file or variable (stream.core.keyring, which stays free of
AWS). The text goes to the same pure parser either way.

:class:`LiveKeyRing` holds the current ring's :class:`Masker` and re-reads the
source every ``MASKSTREAM_KEYRING_REFRESH_SECONDS`` and on SIGHUP, so that a
rotation in Secrets Manager or SSM reaches running workers without a restart.
The agent takes the masker between batches, so one batch is masked with one
ring. A new active key changes the tokens of new logins only; tokens already
stored stay readable as long as the ring keeps their key (docs/masking.md).
A failed re-read keeps the ring in use and logs one warning.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from functools import partial

from stream.common.aws import aws_client
from stream.common.aws_secrets import (
    SecretSourceError,
    parse_secret_ref,
    read_secret_text,
)
from stream.common.settings import Settings
from stream.core.keyring import (
    FILE_VARIABLE,
    INLINE_VARIABLE,
    KeyRing,
    KeyRingError,
    load_keyring,
    parse_keyring,
)
from stream.core.masking import Masker

log = logging.getLogger(__name__)

SOURCE_VARIABLE = "MASKSTREAM_KEYRING_SOURCE"


def load_configured_keyring(settings: Settings) -> KeyRing:
    """The ring *settings* configure; :class:`KeyRingError` (one line, no value) if unusable."""
    if not settings.keyring_source:
        return load_keyring(settings)
    if settings.keyring_file or settings.keyring_json:
        raise KeyRingError(
            f"{SOURCE_VARIABLE} is set, and so is {FILE_VARIABLE} or {INLINE_VARIABLE}: "
            "unset all but one"
        )
    try:
        ref = parse_secret_ref(settings.keyring_source)
        clients = partial(_client, endpoint_url=settings.aws_endpoint_url)
        text = read_secret_text(ref, settings.aws_region, clients)
    except SecretSourceError as exc:
        raise KeyRingError(f"{SOURCE_VARIABLE}: {exc}") from None
    return parse_keyring(text, str(ref))


def _client(service: str, region: str, endpoint_url: str) -> object:
    return aws_client(service, region, endpoint_url)


class LiveKeyRing:
    """The current ring's masker, replaced when a re-read finds a different ring."""

    def __init__(self, read: Callable[[], KeyRing]) -> None:
        """Read the ring once now: a worker that cannot must not start (KeyRingError)."""
        self._read = read
        self._ring = read()
        self.masker = Masker(self._ring)

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveKeyRing:
        return cls(partial(load_configured_keyring, settings))

    @property
    def active_key_id(self) -> str:
        return self._ring.active_id

    def refresh(self) -> bool:
        """Read the ring again; True if it changed. A failure keeps the ring in use."""
        try:
            ring = self._read()
        except KeyRingError as exc:
            log.warning("key ring not refreshed, still using key %s: %s", self.active_key_id, exc)
            return False
        if ring == self._ring:
            return False
        # A new Masker rather than mutating this one: a batch being masked
        # keeps the masker it took, and the token caches of the old keys go.
        self._ring, self.masker = ring, Masker(ring)
        log.info("key ring refreshed: %d keys, active key %s", len(ring.keys), ring.active_id)
        return True

    async def refresh_async(self) -> bool:
        """:meth:`refresh` off the event loop (the read is a blocking AWS call)."""
        return await asyncio.to_thread(self.refresh)

    async def refresh_every(self, seconds: float) -> None:
        """Refresh every *seconds* until cancelled (0 or less: never)."""
        if seconds <= 0:
            return
        while True:
            await asyncio.sleep(seconds)
            await self.refresh_async()

    def refresh_on_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make SIGHUP refresh the ring: an operator's "rotated, pick it up now"."""
        tasks: set[asyncio.Task[bool]] = set()

        def on_sighup() -> None:
            task = loop.create_task(self.refresh_async())
            tasks.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(tasks.discard)

        loop.add_signal_handler(signal.SIGHUP, on_sighup)
