"""Capped exponential backoff with jitter, shared by everything that retries."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays of ``min(cap, base * 2**(attempt-1))``, jittered into its upper half.

    The jitter spreads out retries of many clients that failed together (all
    workers losing the database at once, say).
    """

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, rand: float | None = None) -> float:
        ceiling = min(self.cap, self.base * 2 ** max(0, attempt - 1))
        jitter = random.random() if rand is None else rand
        return ceiling / 2 + jitter * ceiling / 2
