"""Tests for the local key file: created private, loaded only if still private."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from carevault.adapters.keys.local_file import (
    KeyFileError,
    create_key_file,
    key_file_path,
    load_keys,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_create_makes_an_owner_only_file_with_one_256_bit_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "nested" / "carevault.key"
    assert create_key_file(path) is True
    assert _mode(path) == 0o600
    keys = load_keys(path)
    assert list(keys) == ["master-1"]
    assert len(keys["master-1"]) == 32
    assert json.loads(path.read_text())["format"] == "carevault-keys/1"


def test_create_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        create_key_file(tmp_path / "k")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "k") == 0o600


def test_create_does_not_overwrite_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "carevault.key"
    assert create_key_file(path) is True
    before = path.read_bytes()
    assert create_key_file(path) is False
    assert path.read_bytes() == before


def test_two_files_get_different_keys(tmp_path: Path) -> None:
    create_key_file(tmp_path / "a")
    create_key_file(tmp_path / "b")
    assert load_keys(tmp_path / "a") != load_keys(tmp_path / "b")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602, 0o610], ids=oct)
def test_load_refuses_a_file_others_can_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "carevault.key"
    create_key_file(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_keys(path)


def test_load_accepts_a_read_only_owner_file(tmp_path: Path) -> None:
    path = tmp_path / "carevault.key"
    create_key_file(path)
    path.chmod(0o400)
    assert "master-1" in load_keys(path)


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "",
        "[]",
        '"keys"',
        '{"format": "carevault-keys/1"}',
        '{"keys": {"master-1": 5}}',
        '{"keys": {"master-1": "not base64!"}}',
    ],
)
def test_load_refuses_a_malformed_file(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "carevault.key", text)
    with pytest.raises(KeyFileError, match="is malformed"):
        load_keys(path)


@pytest.mark.parametrize("text", ['{"keys": []}', '{"keys": null}', '{"keys": "abc"}'])
def test_load_refuses_keys_that_are_not_an_object(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "carevault.key", text)
    with pytest.raises(KeyFileError, match="is malformed"):
        load_keys(path)


def test_load_of_a_missing_file_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="run 'carevault init'"):
        load_keys(tmp_path / "absent.key")


def test_key_file_path() -> None:
    assert key_file_path("file:var/carevault.key") == Path("var/carevault.key")
    assert key_file_path("file:/etc/cv/keys") == Path("/etc/cv/keys")


@pytest.mark.parametrize("source", ["pkcs11:token=x", "file:", "var/carevault.key", ""])
def test_key_file_path_refuses_other_sources(source: str) -> None:
    with pytest.raises(KeyFileError, match="unsupported key source"):
        key_file_path(source)
