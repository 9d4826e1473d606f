"""How a child's crash is reported: from its log's last traceback or error."""

from __future__ import annotations

from stream.ops.launcher import last_error


def test_the_last_traceback_is_reported_not_earlier_errors() -> None:
    log = "\n".join(
        [
            "[ERROR] Unable connect to node with id 1",
            "Traceback (most recent call last):",
            "ValueError: an earlier, handled failure",
            "[INFO] recovered",
            "Traceback (most recent call last):",
            '  File "agents.py", line 1',
            "IllegalStateError: No current assignment",
        ]
    )
    report = last_error(log)
    assert "IllegalStateError: No current assignment" in report
    assert "an earlier, handled failure" not in report


def test_without_a_traceback_the_last_error_line_is_reported() -> None:
    report = last_error("[ERROR] first\n[INFO] between\n[ERROR] Crashed reason=boom\n[INFO] bye")
    assert report.splitlines()[1:] == ["[ERROR] Crashed reason=boom", "[INFO] bye"]


def test_a_log_without_errors_says_so() -> None:
    assert last_error("[INFO] Worker ready\n[INFO] Stopping...") == "no error in its log"
