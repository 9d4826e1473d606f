"""The pinned Helm the chart tests run: found in the user's cache, else built once.

Helm v4 is a Go module on the Go module proxy, so a machine with Go builds it
with ``go install`` and needs no download site or package of its own. The
build (about 6 minutes on 2 busy cores, most of it compiling Kubernetes'
client libraries) lands outside the checkout, in
``$XDG_CACHE_HOME/maskstream/helm-<version>/helm`` (``~/.cache`` by default),
the way Maven keeps jars in ``~/.m2``: every later run, and every clone on
the machine, skips it. ``MASKSTREAM_HELM`` names another binary instead.
"""

from __future__ import annotations

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
    go = shutil.which("go")
    if go is None:
        raise HelmUnavailable(
            f"Helm {HELM_VERSION} is not in {target} and Go is not installed to build it "
            f"(or set MASKSTREAM_HELM to a helm binary)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built into a temporary directory and renamed: a build killed halfway
    # leaves no half-written binary for the next run to trust.
    with tempfile.TemporaryDirectory(dir=target.parent) as build_dir:
        subprocess.run(
            [go, "install", f"{HELM_PACKAGE}@{HELM_VERSION}"],
            env={**os.environ, "GOBIN": build_dir, "CGO_ENABLED": "0"},
            check=True,
        )
        os.replace(Path(build_dir) / "helm", target)
    return target
