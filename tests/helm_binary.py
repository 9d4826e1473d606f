"""The pinned Helm the chart tests run: found in the user's cache, else built once.

Helm v4 is a Go module on the Go module proxy, so a machine with Go builds it
with ``go install`` and needs no download site or package of its own. The
build (about 6 minutes on 2 busy cores, most of it compiling Kubernetes'
client libraries) lands outside the checkout, in
``$XDG_CACHE_HOME/maskstream/helm-<version>/helm`` (``~/.cache`` by default),
the way Maven keeps jars in ``~/.m2``: every later run, and every clone on
the machine, skips it. ``MASKSTREAM_HELM`` names another binary instead.

``python3 tests/helm_binary.py`` (standard library only) builds it ahead of
the tests: .ci/run starts it in the background, so the build overlaps the
installation and the test stack's start; a lock makes the tests wait for
that build rather than start a second one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HELM_VERSION = "v4.3.2"
HELM_PACKAGE = "helm.sh/helm/v4/cmd/helm"


class HelmUnavailable(RuntimeError):
    """Neither a cached Helm nor a Go toolchain to build one."""


def cached_helm_path() -> Path:
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_root / "maskstream" / f"helm-{HELM_VERSION}" / "helm"


def find_or_build_helm() -> Path:
    """The Helm binary to run, building the pinned version if it is not cached yet."""
    override = os.environ.get("MASKSTREAM_HELM")
    if override:
        return Path(override)
    target = cached_helm_path()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            _build(target)
    return target


def _build(target: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise HelmUnavailable(
            f"Helm {HELM_VERSION} is not in {target} and Go is not installed to build it "
            f"(or set MASKSTREAM_HELM to a helm binary)"
        )
    # Built into a temporary directory and renamed: a build killed halfway
    # leaves no half-written binary for the next run to trust.
    with tempfile.TemporaryDirectory(dir=target.parent) as build_dir:
        subprocess.run(
            [go, "install", f"{HELM_PACKAGE}@{HELM_VERSION}"],
            env={**os.environ, "GOBIN": build_dir, "CGO_ENABLED": "0"},
            check=True,
        )
        os.replace(Path(build_dir) / "helm", target)


if __name__ == "__main__":
    print(find_or_build_helm())
