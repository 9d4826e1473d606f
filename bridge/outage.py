"""How the bridge reports failing calls: a short description, and one line per outage phase."""

from __future__ import annotations

import logging
from collections.abc import Callable

# The forwarder's parts log under one name, as the forwarder did before it was
# split into modules: an operator filters one logger for the pipeline.
log = logging.getLogger("bridge.forwarder")


def describe(exc: BaseException) -> str:
    """An error for the log: its type and message; never a message body."""
    name, text = type(exc).__name__, str(exc)
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


class OutageLog:
    """Log an outage once when it begins, every *repeat* seconds while it lasts, once at its end.

    A broker that is down makes every call fail; one clear line per phase
    says more to an operator than a line per failed call.
    """

    def __init__(self, service: str, clock: Callable[[], float], repeat: float = 30.0) -> None:
        self._service = service
        self._clock = clock
        self._repeat = repeat
        self._since: float | None = None
        self._last_logged = 0.0
        self._detail = ""

    @property
    def down(self) -> bool:
        return self._since is not None

    @property
    def service(self) -> str:
        return self._service

    def problem(self) -> str | None:
        """While down, what ``/ready`` says: the service, for how long, the last error."""
        if self._since is None:
            return None
        return f"{self._service} unavailable for {self._clock() - self._since:.0f}s: {self._detail}"

    def failure(self, detail: str) -> None:
        now = self._clock()
        self._detail = detail
        if self._since is None:
            self._since = self._last_logged = now
            log.warning("%s unavailable: %s; retrying with backoff", self._service, detail)
        elif now - self._last_logged >= self._repeat:
            self._last_logged = now
            log.warning(
                "%s still unavailable after %.0fs: %s", self._service, now - self._since, detail
            )

    def success(self) -> None:
        if self._since is not None:
            log.info("%s available again after %.0fs", self._service, self._clock() - self._since)
            self._since = None
