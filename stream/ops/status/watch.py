"""``maskstream status --watch``: take a snapshot, draw it over the last one, wait, again."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

from stream.ops.status.figures import Snapshot, current_rate
from stream.ops.status.render import frame, render


def watch(
    take: Callable[[], Snapshot],
    out: IO[str],
    interval: float,
    *,
    sleep: Callable[[float], object] = time.sleep,
    refreshes: int | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> int:
    """Redraw the status every *interval* seconds until Ctrl-C, *stopped()*
    or *refreshes* draws.

    The rate shown is the row delta between consecutive snapshots. Returns 0:
    stopping a watch with Ctrl-C is its normal end.
    """
    previous: Snapshot | None = None
    drawn = 0
    try:
        while (refreshes is None or drawn < refreshes) and not stopped():
            snapshot = take()
            if stopped():
                break
            text = render(snapshot, current_rate(snapshot, previous))
            hint = f"refreshing every {interval:g} s; Ctrl-C to stop"
            out.write(frame(f"{text}\n\n{hint}", first=drawn == 0))
            out.flush()
            previous = snapshot
            drawn += 1
            if refreshes is None or drawn < refreshes:
                sleep(interval)
        if stopped():
            out.write("\n")
    except KeyboardInterrupt:
        out.write("\n")
    return 0
