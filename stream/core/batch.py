"""One outcome per raw record: pure, never raising.

The agent takes a batch of raw records off ``logins.raw`` and needs, for
each, a masked login or a rejection. Each record becomes one
:class:`Outcome` holding the raw login, its raw partition and whichever of
the two it turned into, and stays that one object through the batch: the
writer hands back the outcomes the database refused, :func:`refuse` turns
them into rejections, and the device partitions, output records and counts
are read off the outcomes. No parallel lists to keep in step, no indexes.

Anything that goes wrong with one record (parsing, validation, masking)
becomes that record's rejection; nothing here may raise, or the whole batch
would be lost to Faust's acknowledgement of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stream.core.masking import Masker
from stream.core.records import MaskedLogin, RawLogin, Rejection
from stream.core.transform import mask_login, reject


def failure_reason(exc: Exception) -> str:
    """A reason for an unexpected failure: its type only, since a message
    could quote the values (PII) that caused it."""
    return f"could not process the message ({type(exc).__name__})"


@dataclass(slots=True)
class Outcome:
    """What one raw record became: exactly one of *login* and *rejection* is set."""

    raw: RawLogin
    partition: int  # the raw partition: where the device's seen_devices entry lives
    login: MaskedLogin | None = None
    rejection: Rejection | None = None


def outcome(raw: RawLogin, partition: int, masker: Masker, envelope: str = "auto") -> Outcome:
    """Mask *raw* (the login inside an envelope *envelope* unwraps); any failure is its
    rejection."""
    try:
        result = mask_login(raw, masker, envelope)
    except Exception as exc:  # by construction: one record's failure is its own
        return Outcome(raw, partition, rejection=reject(raw, failure_reason(exc), masker))
    if isinstance(result, Rejection):
        return Outcome(raw, partition, rejection=result)
    return Outcome(raw, partition, login=result)


def outcomes(
    records: Iterable[tuple[RawLogin, int]], masker: Masker, envelope: str = "auto"
) -> list[Outcome]:
    """The outcome of each (raw login, raw partition), in order."""
    return [outcome(raw, partition, masker, envelope) for raw, partition in records]


def refuse(refused: Outcome, reason: str, masker: Masker) -> Rejection:
    """Turn a login whose row the database refused into a rejection holding
    its raw body, encrypted, so a key holder can see what was refused."""
    refused.login = None
    refused.rejection = reject(refused.raw, reason, masker)
    return refused.rejection


def logins(batch: Iterable[Outcome]) -> list[MaskedLogin]:
    return [o.login for o in batch if o.login is not None]


def rejections(batch: Iterable[Outcome]) -> list[Rejection]:
    return [o.rejection for o in batch if o.rejection is not None]


def device_partitions(batch: Iterable[Outcome]) -> dict[str, int]:
    """Each device's raw partition: where its ``seen_devices`` entry belongs."""
    return {o.login.masked_device_id: o.partition for o in batch if o.login is not None}
