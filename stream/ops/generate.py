"""Synthetic login messages, realistic enough to exercise every path.

Most lines are valid logins from a pool of devices (so some devices log in
several times and duplicates show up under masking); the rest are the odd
cases real queues carry: null locales, three version formats, extra fields,
and bodies that are not logins, not JSON, mistyped, too long or empty.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator

DEVICE_TYPES = ("android", "ios", "web", "ipados")
LOCALES = ("RU", "PA", "US", "DE", "FR", "BR", "IN", "JP", None, None, None)

# (share of lines, maker) for the odd cases; the remainder are valid logins.
ODD_CASES = (
    (0.02, "not_a_login"),
    (0.02, "not_json"),
    (0.02, "wrong_type"),
    (0.01, "too_long"),
    (0.01, "missing_field"),
    (0.01, "empty_object"),
    (0.01, "whitespace"),
    (0.01, "array"),
    (0.02, "bad_ip"),
)


class Generator:
    """Yields JSON lines; a fixed *seed* gives the same lines every time."""

    def __init__(self, seed: int | None = None, devices: int = 0) -> None:
        self.rng = random.Random(seed)
        self.device_pool = [self._device_id() for _ in range(max(devices, 1))]

    def _device_id(self) -> str:
        r = self.rng.randint
        return f"{r(100, 999)}-{r(10, 99)}-{r(1000, 9999)}"

    def _ip(self) -> str:
        if self.rng.random() < 0.05:
            return ":".join(f"{self.rng.randint(0, 0xFFFF):x}" for _ in range(8))
        return ".".join(str(self.rng.randint(1, 254)) for _ in range(4))

    def _version(self) -> str:
        r = self.rng.randint
        return self.rng.choice(
            (f"{r(0, 9)}.{r(0, 9)}.{r(0, 9)}", f"{r(0, 9)}.{r(10, 99)}", f"{r(0, 9)}.{r(0, 9)}")
        )

    def login(self) -> dict[str, object]:
        return {
            "user_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "app_version": self._version(),
            "device_type": self.rng.choice(DEVICE_TYPES),
            "ip": self._ip(),
            "locale": self.rng.choice(LOCALES),
            "device_id": self.rng.choice(self.device_pool),
        }

    def odd(self, kind: str) -> str:
        login = self.login()
        if kind == "not_a_login":
            return json.dumps(
                {"foo": "oops_wrong_message_format", "bar": str(self.rng.randint(1, 999))}
            )
        if kind == "not_json":
            return json.dumps(login)[: self.rng.randint(5, 40)]
        if kind == "wrong_type":
            login["app_version"] = self.rng.randint(1, 9)
        elif kind == "too_long":
            login["device_type"] = "x" * 40
        elif kind == "missing_field":
            del login["device_id"]
        elif kind == "empty_object":
            return "{}"
        elif kind == "whitespace":
            return " "
        elif kind == "array":
            return json.dumps([login])
        elif kind == "bad_ip":
            login["ip"] = "999.1.1"
        return json.dumps(login)

    def line(self) -> str:
        roll = self.rng.random()
        for share, kind in ODD_CASES:
            if roll < share:
                return self.odd(kind)
            roll -= share
        login = self.login()
        if self.rng.random() < 0.03:
            login["session_hint"] = self.rng.choice(("cold", "warm"))  # an unknown extra field
        return json.dumps(login)

    def lines(self, count: int) -> Iterator[str]:
        for _ in range(count):
            yield self.line()


def generate(count: int, seed: int | None = None) -> Iterator[str]:
    """*count* lines from a device pool about a third of *count* in size."""
    return Generator(seed, devices=max(1, count // 3)).lines(count)
