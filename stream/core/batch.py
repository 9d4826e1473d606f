"""One batch of raw records, turned into logins and rejections: pure, never raising.

The agent takes a batch of raw records off ``logins.raw`` and needs, for each,
either a login with its ``user_logins`` row or a rejection. Anything that goes
wrong with one record (parsing, validation, masking, building its row)
becomes that record's rejection; nothing here may raise, or the whole batch
would be lost to Faust's acknowledgement of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from stream.core.masking import Masker
from stream.core.records import MaskedLogin, RawLogin, Rejection
from stream.core.transform import mask_login, reject

# Builds the row a login becomes (stream.postgres.rows.login_row).
ToRow = Callable[[MaskedLogin], tuple[Any, ...]]


def failure_reason(exc: Exception) -> str:
    """A reason for an unexpected failure: its type only, since a message
    could quote the values (PII) that caused it."""
    return f"could not process the message ({type(exc).__name__})"


@dataclass
class LoginBatch:
    """The outcomes of one batch of raw records, in their order.

    ``logins[i]`` came from ``raws[i]`` on raw partition ``partitions[i]``
    and becomes ``rows[i]``; rejections stand apart.
    """

    logins: list[MaskedLogin] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    raws: list[RawLogin] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    @classmethod
    def of(
        cls, records: Iterable[tuple[RawLogin, int]], masker: Masker, to_row: ToRow
    ) -> LoginBatch:
        """Mask each (raw login, raw partition) of *records*; *to_row* builds a
        login's row (the storage layer's, passed in so this stays pure)."""
        batch = cls()
        for raw, partition in records:
            batch.add(raw, partition, masker, to_row)
        return batch

    def add(self, raw: RawLogin, partition: int, masker: Masker, to_row: ToRow) -> None:
        try:
            outcome = mask_login(raw, masker)
            if isinstance(outcome, Rejection):
                self.rejections.append(outcome)
                return
            row = to_row(outcome)
        except Exception as exc:  # by construction: one record's failure is its own
            self.rejections.append(reject(raw, failure_reason(exc), masker))
            return
        self.logins.append(outcome)
        self.rows.append(row)
        self.raws.append(raw)
        self.partitions.append(partition)

    def device_partitions(self) -> dict[str, int]:
        """Each device's raw partition: where its ``seen_devices`` entry belongs."""
        return {
            login.masked_device_id: partition
            for login, partition in zip(self.logins, self.partitions, strict=True)
        }
