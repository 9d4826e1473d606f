"""Run JVM services from jars that Maven resolves from Maven Central.

Maven keeps the jars in its local repository (``~/.m2``); we only ask it for
the classpath, cache that list next to the service's state, and ask again
when the pom changes or a jar has gone missing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from stream.devstack.prerequisites import MissingPrerequisite, require_java, require_maven

MAVEN_DIR = Path(__file__).resolve().parent / "maven"


def resolve_classpath(artifact: str, cache_file: Path, maven_dir: Path = MAVEN_DIR) -> str:
    """Classpath for ``<maven_dir>/<artifact>/pom.xml`` (by default the stack's
    own poms), downloading jars on first use."""
    pom = maven_dir / artifact / "pom.xml"
    if cache_file.exists() and cache_file.stat().st_mtime >= pom.stat().st_mtime:
        classpath = cache_file.read_text().strip()
        if classpath and all(Path(jar).exists() for jar in classpath.split(":")):
            return classpath
    mvn = require_maven()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:build-classpath",
            f"-Dmdep.outputFile={cache_file}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise MissingPrerequisite(
            f"Maven could not resolve {artifact}'s jars from Maven Central "
            f"(is the network to Maven Central up?):\n{tail}"
        )
    return cache_file.read_text().strip()


def java_command(
    classpath: str,
    main_class: str,
    args: list[str],
    heap: str,
    properties: Mapping[str, str] | None = None,
) -> list[str]:
    """The argv for a bounded-heap JVM running *main_class*."""
    java = require_java()
    props = [f"-D{key}={value}" for key, value in (properties or {}).items()]
    return [
        java,
        f"-Xmx{heap}",
        "-Xss512k",
        "-XX:+UseSerialGC",  # two cores: a parallel collector only competes with the work
        "-Djava.awt.headless=true",
        *props,
        "-cp",
        classpath,
        main_class,
        *args,
    ]
