"""Waiting until every message sent is an outcome: a row or a rejection.

The demo and the test harness both send messages, run a bridge and workers
as children, and wait for the database to hold an outcome for each, watching
that no child has exited with an error meanwhile. This is that wait; each
caller decides what to draw while it runs and what to say when it fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from stream.ops.launcher import Launcher
from stream.postgres.queries import scalar


@dataclass(frozen=True)
class Progress:
    rows: int
    rejections: int

    @property
    def total(self) -> int:
        return self.rows + self.rejections

    def since(self, baseline: Progress) -> Progress:
        """What was added after *baseline* was counted."""
        return Progress(self.rows - baseline.rows, self.rejections - baseline.rejections)


def outcome_counts(conn: psycopg.Connection) -> Progress:
    rows = scalar(conn, "SELECT count(*) FROM user_logins")
    rejections = scalar(conn, "SELECT count(*) FROM rejected_logins")
    return Progress(rows, rejections)


class OutcomesMissing(RuntimeError):
    """The wait ended without every outcome; *done* is what had arrived."""

    def __init__(self, message: str, done: Progress) -> None:
        super().__init__(message)
        self.done = done


class ChildrenExited(OutcomesMissing):
    """Children exited with an error; *exited* maps each name to why (:meth:`Launcher.failed`)."""

    def __init__(self, exited: dict[str, str], done: Progress) -> None:
        super().__init__(f"{', '.join(exited)} exited", done)
        self.exited = exited


class OutcomesTimedOut(OutcomesMissing):
    def __init__(self, timeout: float, done: Progress) -> None:
        super().__init__(f"timed out after {timeout:.0f} s", done)


def wait_for_outcomes(
    count: Callable[[], Progress],
    expected: int,
    timeout: float,
    launcher: Launcher,
    *,
    on_progress: Callable[[Progress], None] = lambda done: None,
    interval: float = 0.5,
) -> Progress:
    """Poll *count* until it reaches *expected* outcomes, showing each reading to *on_progress*.

    Raises :class:`ChildrenExited` as soon as one of *launcher*'s children
    has exited with an error, and :class:`OutcomesTimedOut` after *timeout*
    seconds: either way the rest would never arrive.
    """
    deadline = time.monotonic() + timeout
    while True:
        done = count()
        on_progress(done)
        if done.total >= expected:
            return done
        exited = launcher.failed()
        if exited:
            raise ChildrenExited(exited, done)
        if time.monotonic() > deadline:
            raise OutcomesTimedOut(timeout, done)
        time.sleep(interval)
