"""Key rings: creation, loading from a file or a variable, rotation, refusal without a key."""

from __future__ import annotations

import base64
import json
import logging
import re
import stat
from pathlib import Path

import pytest

from stream.cli import main
from stream.common.settings import Settings
from stream.core.keyring import (
    FILE_VARIABLE,
    INLINE_VARIABLE,
    KeyRingError,
    MissingKeyError,
    create_keyring_file,
    dump_keyring,
    load_keyring,
    new_keyring,
    read_keyring_file,
)
from stream.core.masking import Masker


def settings(keyring_file: str = "", keyring_json: str = "") -> Settings:
    return Settings(keyring_file=keyring_file, keyring_json=keyring_json)


@pytest.fixture
def no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither key variable set, whatever the developer's shell or .stack/env says."""
    monkeypatch.delenv(FILE_VARIABLE, raising=False)
    monkeypatch.delenv(INLINE_VARIABLE, raising=False)


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ----------------------------------------------------------------------------- files


def test_create_keyring_file_is_private_and_loadable(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keyring.json"
    create_keyring_file(path)
    assert file_mode(path) == 0o600
    ring = load_keyring(settings(keyring_file=str(path)))
    assert ring.mode == "siv"
    assert len(ring.keys) == 1
    assert len(ring.active_key) == 64


def test_create_keyring_file_hmac(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    create_keyring_file(path, mode="hmac")
    ring = read_keyring_file(path)
    assert ring.mode == "hmac"
    assert len(ring.active_key) == 32


def test_create_keyring_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    create_keyring_file(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        create_keyring_file(path)
    assert path.read_bytes() == before


def test_exposed_key_file_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keyring.json"
    create_keyring_file(path)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="stream.core.keyring"):
        read_keyring_file(path)
    assert "chmod 600" in caplog.text
    assert str(path) in caplog.text


def test_private_key_file_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keyring.json"
    create_keyring_file(path)
    with caplog.at_level(logging.WARNING, logger="stream.core.keyring"):
        read_keyring_file(path)
    assert caplog.text == ""


# ----------------------------------------------------------------------------- loading


def test_inline_json_loads_the_same_ring() -> None:
    ring = new_keyring()
    loaded = load_keyring(settings(keyring_json=dump_keyring(ring)))
    assert loaded.active_id == ring.active_id
    assert loaded.active_key == ring.active_key


def test_settings_read_the_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keyring.json"
    create_keyring_file(path)
    monkeypatch.delenv(INLINE_VARIABLE, raising=False)
    monkeypatch.setenv(FILE_VARIABLE, str(path))
    assert load_keyring(Settings()).active_id == read_keyring_file(path).active_id


def test_no_key_is_a_clear_error() -> None:
    with pytest.raises(MissingKeyError) as caught:
        load_keyring(settings())
    message = str(caught.value)
    assert FILE_VARIABLE in message
    assert INLINE_VARIABLE in message
    assert "maskstream keygen" in message


def test_missing_key_file_is_a_missing_key(tmp_path: Path) -> None:
    with pytest.raises(MissingKeyError) as caught:
        load_keyring(settings(keyring_file=str(tmp_path / "absent.json")))
    assert "maskstream keygen" in str(caught.value)


def test_both_sources_set_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    create_keyring_file(path)
    with pytest.raises(KeyRingError, match="both"):
        load_keyring(settings(keyring_file=str(path), keyring_json=dump_keyring(new_keyring())))


def document(**changes: object) -> str:
    base = json.loads(dump_keyring(new_keyring()))
    base.update(changes)
    return json.dumps(base)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        json.dumps({"keys": {}}),
        document(version=2),
        document(mode="rot13"),
        document(active="nosuchkey"),
        document(keys={}),
        document(keys={"k1": {"secret": "!!!"}}),
        document(keys={"k1": {"secret": base64.b64encode(b"short").decode()}}, active="k1"),
        document(keys={"BAD:ID": {"secret": base64.b64encode(bytes(64)).decode()}}),
    ],
)
def test_invalid_documents_are_refused_without_showing_secrets(text: str) -> None:
    with pytest.raises(KeyRingError) as caught:
        load_keyring(settings(keyring_json=text))
    assert INLINE_VARIABLE in str(caught.value)
    for secret in re.findall(r'"secret": "([^"]+)"', text):
        assert secret not in str(caught.value)


def test_repr_hides_secrets() -> None:
    ring = new_keyring()
    encoded = base64.b64encode(ring.active_key).decode()
    assert encoded not in repr(ring)
    assert repr(ring.active_key) not in repr(ring)


# ----------------------------------------------------------------------------- keygen CLI


def test_keygen_creates_then_rotates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keyring.json"
    assert main(["keygen", str(path)]) == 0
    first = read_keyring_file(path)
    token = Masker(first).mask("ip", "198.51.100.23")
    assert file_mode(path) == 0o600

    assert main(["keygen", str(path)]) == 0
    second = read_keyring_file(path)
    assert file_mode(path) == 0o600
    assert set(second.keys) == {first.active_id, second.active_id}
    assert second.active_id != first.active_id
    assert Masker(second).unmask(token) == ("ip", "198.51.100.23")
    assert first.active_id in capsys.readouterr().out


def test_keygen_uses_the_configured_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_key_env: None
) -> None:
    path = tmp_path / "keyring.json"
    monkeypatch.setenv(FILE_VARIABLE, str(path))
    assert main(["keygen", "--mode", "hmac"]) == 0
    assert read_keyring_file(path).mode == "hmac"


def test_keygen_rotation_keeps_the_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keyring.json"
    create_keyring_file(path, mode="siv")
    assert main(["keygen", str(path), "--mode", "hmac"]) == 2
    assert "siv key ring" in capsys.readouterr().err
    assert len(read_keyring_file(path).keys) == 1


def test_keygen_retire(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keyring.json"
    create_keyring_file(path)
    old = read_keyring_file(path).active_id
    assert main(["keygen", str(path), "--retire", old]) == 2  # the active key stays
    assert main(["keygen", str(path)]) == 0
    assert main(["keygen", str(path), "--retire", old]) == 0
    assert old not in read_keyring_file(path).keys
    assert file_mode(path) == 0o600


def test_keygen_without_a_path_is_a_clear_error(
    no_key_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen"]) == 2
    assert FILE_VARIABLE in capsys.readouterr().err


@pytest.mark.parametrize("command", [["unmask", "siv:abc:ip:AAAA"], ["rekey"]])
def test_commands_refuse_to_start_without_a_key(
    command: list[str], no_key_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(command) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no masking key" in captured.err
