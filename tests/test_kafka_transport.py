"""The transport's pure decisions (its behaviour under rebalances is in the fault suite)."""

from __future__ import annotations

import pytest

from stream.kafka_transport import seek_target


@pytest.mark.parametrize(("asked", "sought"), [(None, 0), (-2, 0), (-1, 0), (0, 0), (7, 7)])
def test_a_negative_or_missing_recovery_offset_seeks_from_the_start(
    asked: int | None, sought: int
) -> None:
    assert seek_target(asked) == sought
