"""Shared pieces of the benchmark harness: results, ratios, the report.

Timings on a shared 2-core machine are noisy, so every benchmark measures its
subject *and* a baseline in the same run and reports the ratio; absolute
figures are printed for context only.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Result:
    """One line of the report: a subject measured against its baseline."""

    benchmark: str
    subject: str
    subject_rate: float
    baseline: str
    baseline_rate: float
    unit: str
    target: str  # e.g. ">= 0.8" (ratio subject/baseline) or "<= 1.3"

    @property
    def ratio(self) -> float:
        return self.subject_rate / self.baseline_rate if self.baseline_rate else float("nan")

    @property
    def meets_target(self) -> bool:
        op, _, value = self.target.partition(" ")
        bound = float(value)
        return self.ratio >= bound if op == ">=" else self.ratio <= bound


def rate(count: int, func: Callable[[], object]) -> float:
    """Run *func* once and return *count* divided by the seconds it took."""
    started = time.perf_counter()
    func()
    return count / (time.perf_counter() - started)


def machine() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def report(results: list[Result], out_dir: Path) -> str:
    """Format *results* as a table and save them as JSON under *out_dir*."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    payload = {
        "machine": machine(),
        "results": [
            asdict(r) | {"ratio": r.ratio, "meets_target": r.meets_target} for r in results
        ],
    }
    (out_dir / f"bench-{stamp}.json").write_text(json.dumps(payload, indent=2))
    header = (
        f"{'benchmark':<22} {'subject':<28} {'rate':>12} "
        f"{'baseline':<28} {'rate':>12} {'ratio':>7} target"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        mark = "ok" if r.meets_target else "MISSED"
        lines.append(
            f"{r.benchmark:<22} {r.subject:<28} {figure(r.subject_rate, r.unit)} {r.baseline:<28} "
            f"{figure(r.baseline_rate, r.unit)} {r.ratio:>7.2f} {r.target} {mark}"
        )
    return "\n".join(lines)


def figure(value: float, unit: str) -> str:
    """A rate as ``N/s``; any other quantity (seconds, MiB) with its unit."""
    return f"{value:>10.0f}/s" if unit.endswith("/s") else f"{value:>8.1f} {unit:<3}"
