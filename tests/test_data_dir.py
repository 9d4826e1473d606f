"""MASKSTREAM_DATA_DIR: created with its parents at worker start, or refused in one line.

Faust makes its data directory without parents, once the worker runs: a
directory on a fresh volume whose parent does not exist yet used to end the
worker with a FileNotFoundError traceback. The verdict (:func:`refusal`) is
pure and tested case by case; the survey of a real file system and the
worker command itself are tested on temporary directories (the refusals
need no Kafka: they happen before the worker connects).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream.core.keyring import FILE_VARIABLE
from stream.worker.data_dir import DataDirError, Kind, Survey, prepare, refusal, survey
from tests.support.sandbox import IsolatedPipeline, RawMessage

PATH = Path("/var/lib/maskstream/worker-1")
UID = 10001


def surveyed(
    existing: Path, kind: Kind = Kind.DIRECTORY, writable: bool = True, path: Path = PATH
) -> Survey:
    return Survey(path, existing == path, existing, kind, writable, UID)


# --------------------------------------------------------------------------- the verdict (pure)


@pytest.mark.parametrize(
    "found",
    [
        surveyed(PATH),  # there already
        surveyed(PATH.parent),  # one level to create
        surveyed(Path("/")),  # every level to create
    ],
)
def test_a_writable_directory_or_a_writable_place_to_make_one_is_accepted(found: Survey) -> None:
    assert refusal(found) is None


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (
            surveyed(PATH, Kind.FILE),
            f"MASKSTREAM_DATA_DIR={PATH} exists but is a file, not a directory",
        ),
        (
            surveyed(PATH, Kind.OTHER),
            f"MASKSTREAM_DATA_DIR={PATH} exists but is neither a file nor a directory,"
            " not a directory",
        ),
        (
            surveyed(PATH, writable=False),
            f"MASKSTREAM_DATA_DIR={PATH} is not writable by uid {UID}",
        ),
        (
            surveyed(Path("/var/lib/maskstream"), Kind.FILE),
            f"MASKSTREAM_DATA_DIR={PATH} cannot be created: /var/lib/maskstream is a file",
        ),
        (
            surveyed(Path("/var/lib"), writable=False),
            f"MASKSTREAM_DATA_DIR={PATH} cannot be created: /var/lib is not writable by uid {UID}",
        ),
        (
            surveyed(Path("/var/lib/maskstream"), Kind.DANGLING_LINK),
            f"MASKSTREAM_DATA_DIR={PATH} cannot be created:"
            " /var/lib/maskstream is a symbolic link to nothing",
        ),
    ],
)
def test_what_is_in_the_way_is_named_in_one_line(found: Survey, expected: str) -> None:
    assert refusal(found) == expected


# --------------------------------------------------------------------------- the file system


def test_survey_finds_the_nearest_existing_ancestor(tmp_path: Path) -> None:
    found = survey(tmp_path / "fresh" / "volume" / "worker-1")
    assert (found.exists, found.existing, found.kind, found.writable) == (
        *(False, tmp_path, Kind.DIRECTORY, True),
    )
    assert found.uid == os.geteuid()


def test_survey_of_an_existing_directory_is_the_directory_itself(tmp_path: Path) -> None:
    found = survey(tmp_path)
    assert (found.exists, found.existing, found.kind) == (True, tmp_path, Kind.DIRECTORY)


def test_survey_stops_at_a_file_in_the_way(tmp_path: Path) -> None:
    blocker = tmp_path / "volume"
    blocker.write_text("")
    assert survey(blocker / "worker-1").existing == blocker
    assert survey(blocker / "worker-1").kind is Kind.FILE
    assert (survey(blocker).exists, survey(blocker).kind) == (True, Kind.FILE)


def test_survey_sees_a_dangling_symbolic_link(tmp_path: Path) -> None:
    link = tmp_path / "volume"
    link.symlink_to(tmp_path / "gone")
    found = survey(link / "worker-1")
    assert (found.existing, found.kind) == (link, Kind.DANGLING_LINK)


def test_survey_keeps_a_relative_path_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".stack").mkdir()
    found = survey(Path(".stack"))
    assert (found.path, found.exists, found.existing) == (Path(".stack"), True, Path(".stack"))


def test_prepare_creates_the_directory_with_its_parents(tmp_path: Path) -> None:
    target = tmp_path / "fresh" / "volume" / "worker-1"
    prepare(target)
    prepare(target)  # a restart finds it there
    assert target.is_dir()


def test_prepare_refuses_a_path_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "volume").write_text("")
    with pytest.raises(DataDirError, match=r"volume is a file$"):
        prepare(tmp_path / "volume" / "worker-1")


def test_prepare_reports_what_it_cannot_classify_in_one_line(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(
        DataDirError, match=r"cannot be created: Too many levels of symbolic links$"
    ):
        prepare(loop / "worker-1")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_prepare_refuses_a_parent_it_cannot_write(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(DataDirError, match="is not writable by uid"):
        prepare(locked / "worker-1")
    assert not (locked / "worker-1").exists()


# --------------------------------------------------------------------------- the worker command


def worker(data_dir: Path, keyring: Path) -> subprocess.CompletedProcess[str]:
    """``faust -A stream.app worker`` (as the image and the launcher run it), with
    Kafka unreachable: a refusal must come before the worker tries it."""
    env = {
        **os.environ,
        "MASKSTREAM_DATA_DIR": str(data_dir),
        FILE_VARIABLE: str(keyring),
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    }
    env.pop("MASKSTREAM_KEYRING", None)
    argv = [sys.executable, "-m", "faust", "-A", "stream.app", "worker", "-l", "info"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    path = tmp_path / "keyring.json"
    made = subprocess.run(
        [sys.executable, "-m", "stream.cli", "keygen", str(path)], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    return path


@pytest.mark.parametrize(
    ("below", "says"),
    [("volume/worker-1", "volume is a file"), ("volume", "exists but is a file")],
)
def test_worker_refuses_a_data_dir_a_file_is_in_the_way_of(
    tmp_path: Path, keyring: Path, below: str, says: str
) -> None:
    (tmp_path / "volume").write_text("")
    done = worker(tmp_path / below, keyring)
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith("maskstream worker: MASKSTREAM_DATA_DIR="), lines
    assert says in lines[0]


def test_worker_refused_for_another_setting_leaves_no_directory_behind(tmp_path: Path) -> None:
    done = worker(tmp_path / "fresh" / "worker-1", tmp_path / "no-keyring.json")
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and FILE_VARIABLE in done.stderr
    assert not (tmp_path / "fresh").exists()


@pytest.mark.services
def test_worker_starts_on_a_data_dir_whose_parents_do_not_exist_yet(
    pipeline: IsolatedPipeline, tmp_path: Path
) -> None:
    """A fresh volume: the worker makes the path and runs (Faust's own
    directories and the RocksDB table land under it)."""
    data_dir = tmp_path / "fresh-volume" / "maskstream" / "worker-1"
    pipeline.launcher.start_worker("worker", extra_env={"MASKSTREAM_DATA_DIR": str(data_dir)})
    pipeline.produce_raw([RawMessage("m-1", b"not json")])
    pipeline.wait_for_outcomes(1)
    assert data_dir.is_dir() and any(data_dir.iterdir()), "Faust's state is not under it"
    assert "Traceback" not in pipeline.launcher.log("worker")
