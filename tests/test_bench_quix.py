"""The Quix benchmark's environment, without running Quix (quick, no services)."""

from __future__ import annotations

from bench import bench_quix


def test_the_quix_environment_takes_maskstreams_locked_versions() -> None:
    pins = bench_quix.locked_pins()
    assert sorted(pin.partition("==")[0].lower() for pin in pins) == sorted(bench_quix.LOCKED)
    assert all(pin.partition("==")[2] for pin in pins)


def test_the_quix_app_is_where_the_benchmark_runs_it() -> None:
    assert bench_quix.QUIX_APP.is_file()
    assert "==" in bench_quix.QUIX_REQUIREMENT  # pinned, never the newest by surprise
