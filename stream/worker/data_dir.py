"""The worker's data directory (``MASKSTREAM_DATA_DIR``), made ready before Faust starts.

Faust creates its data directory with ``mkdir(exist_ok=True)``, without
parents, and only once the worker is running and has reached Kafka: a
directory on a fresh volume (``/var/lib/maskstream/worker-1``, whose parent
does not exist yet) ends the worker with a ``FileNotFoundError`` traceback.
:func:`prepare` runs first, at start: it creates the directory with its
parents, or raises :class:`DataDirError` with one line saying what is in
the way, which ``stream.app`` prints before exiting with status 2.

What is wrong with a path is decided by :func:`refusal` from a
:class:`Survey` of the file system (pure, so each case is a unit test);
only :func:`survey` and :func:`prepare` touch the disk.
"""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass
from pathlib import Path

VARIABLE = "MASKSTREAM_DATA_DIR"


class DataDirError(Exception):
    """The data directory cannot be used or created: one line, for the operator."""


class Kind(enum.Enum):
    """What a path names, as far as making a directory there is concerned."""

    DIRECTORY = "a directory"
    FILE = "a file"
    OTHER = "neither a file nor a directory"
    DANGLING_LINK = "a symbolic link to nothing"


@dataclass(frozen=True)
class Survey:
    """What is at *path*: whether it *exists*, else its nearest ancestor that
    does (*existing*); what that is, and whether this process (*uid*) may
    create entries in it."""

    path: Path
    exists: bool
    existing: Path
    kind: Kind
    writable: bool
    uid: int


def refusal(survey: Survey) -> str | None:
    """Why the data directory of *survey* cannot be used, or None if it can
    (it exists as a writable directory, or a writable directory is there to
    create it in)."""
    where = f"{VARIABLE}={survey.path}"
    if survey.exists:
        if survey.kind is not Kind.DIRECTORY:
            return f"{where} exists but is {survey.kind.value}, not a directory"
        if not survey.writable:
            return f"{where} is not writable by uid {survey.uid}"
        return None
    if survey.kind is not Kind.DIRECTORY:
        return f"{where} cannot be created: {survey.existing} is {survey.kind.value}"
    if not survey.writable:
        return f"{where} cannot be created: {survey.existing} is not writable by uid {survey.uid}"
    return None


def survey(path: Path) -> Survey:
    """Look at *path* and, while it does not exist, at its ancestors (I/O)."""
    existing = path.absolute()
    while True:
        try:
            status = os.stat(existing)
        except FileNotFoundError:
            if os.path.lexists(existing):
                kind = Kind.DANGLING_LINK
                break
        except (NotADirectoryError, PermissionError):
            # An ancestor is a file, or cannot be searched: the walk up finds it.
            pass
        else:
            kind = _kind(status.st_mode)
            break
        existing = existing.parent
    writable = kind is Kind.DIRECTORY and os.access(existing, os.W_OK | os.X_OK)
    exists = existing == path.absolute()
    return Survey(path, exists, path if exists else existing, kind, writable, os.geteuid())


def _kind(mode: int) -> Kind:
    if stat.S_ISDIR(mode):
        return Kind.DIRECTORY
    if stat.S_ISREG(mode):
        return Kind.FILE
    return Kind.OTHER


def prepare(path: Path) -> None:
    """Make *path* a directory the worker can write, parents included, or
    raise :class:`DataDirError` saying why not (I/O)."""
    try:
        problem = refusal(survey(path))
        if problem is None:
            path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # What the survey cannot foresee or classify: a read-only file system,
        # a full disk, a quota, a symbolic-link loop, another process racing us.
        reason = exc.strerror or type(exc).__name__
        raise DataDirError(f"{VARIABLE}={path} cannot be created: {reason}") from None
    if problem:
        raise DataDirError(problem)
