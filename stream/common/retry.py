"""Capped exponential backoff with jitter, shared by everything that retries."""

from __future__ import annotations

import random
from dataclasses import dataclass


def backoff_delay(attempt: int, base: float, cap: float, rand: float) -> float:
    """In [d/2, d], d = min(cap, base * 2**(attempt-1)).

    *rand* in [0, 1) spreads out retries of many clients that failed together
    (all workers losing the database at once, every held message at a Kafka
    outage).
    """
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + rand * ceiling / 2


@dataclass(frozen=True)
class Backoff:
    """:func:`backoff_delay` with fixed base and cap and its own randomness."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.base, self.cap, random.random())
