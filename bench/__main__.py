"""``python -m bench [NAME...]``: run benchmarks, print a table, write JSON.

Each benchmark is a module ``bench/bench_<name>.py`` with a ``run() -> list[Result]``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path

from bench.harness import Result, report

BENCH_DIR = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(BENCH_DIR)])
        if m.name.startswith("bench_")
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {available()})")
    args = parser.parse_args()
    results: list[Result] = []
    for name in args.names or available():
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"running {name} ...", flush=True)
        results.extend(module.run())
    print(report(results, BENCH_DIR / "results"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
