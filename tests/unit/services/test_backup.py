"""Backup archives, without a database: the keys archive made and restored, and the data
archive's restore, on archives this test seals itself with the archive format
(`adapters.crypto.archive`). Nothing is put in place unless the whole archive checks; a restore
goes into an empty place only; key files are never overwritten. (Making a data archive
snapshots a SQLite database, and the drill opens a restored one:
tests/reliability/test_backup_restore.py.)"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from carevault.adapters.crypto.archive import ArchiveWriter, fingerprint, read_archive
from carevault.services.backup import (
    FORMAT,
    RestoreRefused,
    create_key_backup,
    restore_backup,
    restore_keys,
)

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
DATABASE = b"SQLite format 3\x00 the installation's database"
DOCUMENT = b"sealed document bytes"


def clock() -> datetime:
    return NOW


def key_files(folder: Path, mode: int = 0o600) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, data in (("carevault.key", b"data KEK file"), ("pki.key", b"CA key password")):
        path = folder / name
        path.write_bytes(data)
        path.chmod(mode)
        files.append(path)
    return files


def contents(archive: Path, key: bytes) -> dict[str, bytes]:
    """What an archive holds, opened with the archive format and tarfile, not the service."""
    with open(archive, "rb") as source:
        plain = b"".join(read_archive(source, key))
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def sealed(out: Path, entries: list[tuple[str, bytes]], key: bytes = KEY, *,
           links: tuple[str, ...] = ()) -> Path:
    """An archive in the backup format holding ``entries`` as files (and ``links`` as
    symbolic links), in that order."""
    with open(out, "wb") as raw:
        writer = ArchiveWriter(raw, key)
        with tarfile.open(fileobj=writer, mode="w|gz") as tar:  # type: ignore[call-overload]
            for name, data in entries:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            for name in links:
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
        writer.close()
    return out


def manifest(files: dict[str, bytes], kind: str = "data", **extra: Any) -> tuple[str, bytes]:
    listed = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    return "manifest.json", json.dumps(
        {"format": FORMAT, "kind": kind, "files": listed, **extra}).encode()


DATA_FILES = {"carevault.db": DATABASE, "documents/ab/doc-1": DOCUMENT}


def data_archive(tmp_path: Path, files: dict[str, bytes] | None = None,
                 listed: dict[str, bytes] | None = None, **extra: Any) -> Path:
    files = DATA_FILES if files is None else files
    return sealed(tmp_path / "data.cvb",
                  [*files.items(), manifest(files if listed is None else listed, **extra)])


# --- the keys archive -------------------------------------------------------------------------


def test_the_keys_archive_holds_the_key_files_and_its_manifest_only(tmp_path: Path) -> None:
    files = key_files(tmp_path / "keys")
    out = tmp_path / "keys.cvb"
    written = create_key_backup(files, KEY, out, clock)
    assert written == {
        "format": FORMAT, "kind": "keys", "created": NOW.isoformat(),
        "backup_key": fingerprint(KEY),
        "files": {"keys/carevault.key": hashlib.sha256(b"data KEK file").hexdigest(),
                  "keys/pki.key": hashlib.sha256(b"CA key password").hexdigest()}}
    held = contents(out, KEY)
    assert json.loads(held.pop("manifest.json")) == written
    assert held == {"keys/carevault.key": b"data KEK file", "keys/pki.key": b"CA key password"}
    assert KEY.hex() not in json.dumps(written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "keys.cvb"]  # nothing partial


def test_a_key_file_named_twice_is_archived_once_and_two_of_one_name_are_refused(
        tmp_path: Path) -> None:
    one, two = key_files(tmp_path / "a")
    written = create_key_backup([one, two, one], KEY, tmp_path / "keys.cvb", clock)
    assert sorted(written["files"]) == ["keys/carevault.key", "keys/pki.key"]
    [same_name, _] = key_files(tmp_path / "b")
    with pytest.raises(ValueError, match="two key files share a name"):
        create_key_backup([one, same_name], KEY, tmp_path / "other.cvb", clock)
    assert not (tmp_path / "other.cvb").exists()


def test_the_key_files_are_restored_readable_by_their_owner_only(tmp_path: Path) -> None:
    archive = tmp_path / "keys.cvb"
    # Whatever mode the archive recorded.
    create_key_backup(key_files(tmp_path / "keys", 0o644), KEY, archive, clock)
    target = tmp_path / "restored"
    restored = restore_keys(archive, KEY, target)
    assert restored == [target / "carevault.key", target / "pki.key"]
    assert [p.read_bytes() for p in restored] == [b"data KEK file", b"CA key password"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in restored} == {0o600}
    assert sorted(p.name for p in target.iterdir()) == ["carevault.key", "pki.key"]


def test_a_key_file_is_never_overwritten(tmp_path: Path) -> None:
    archive = tmp_path / "keys.cvb"
    create_key_backup(key_files(tmp_path / "keys"), KEY, archive, clock)
    target = tmp_path / "restored"
    target.mkdir()
    (target / "carevault.key").write_bytes(b"the key in use")
    with pytest.raises(RestoreRefused) as refused:
        restore_keys(archive, KEY, target)
    assert str(refused.value) == (
        f"{target / 'carevault.key'} exists: key files are never overwritten")
    assert (target / "carevault.key").read_bytes() == b"the key in use"


def test_the_keys_archive_opens_with_its_own_backup_key_only(tmp_path: Path) -> None:
    archive = tmp_path / "keys.cvb"
    create_key_backup(key_files(tmp_path / "keys"), KEY, archive, clock)
    target = tmp_path / "restored"
    with pytest.raises(RestoreRefused, match="does not open: the archive was changed or the key"):
        restore_keys(archive, OTHER_KEY, target)
    assert list(target.iterdir()) == []


def test_a_data_archive_is_not_restored_as_keys(tmp_path: Path) -> None:
    target = tmp_path / "restored"
    with pytest.raises(RestoreRefused) as refused:
        restore_keys(data_archive(tmp_path), KEY, target)
    assert str(refused.value) == "this is not a keys archive of this CareVault version"
    assert list(target.iterdir()) == []


# --- restoring the data archive ---------------------------------------------------------------


def test_a_data_archive_restores_its_database_and_documents_into_an_empty_place(
        tmp_path: Path) -> None:
    place = tmp_path / "place"
    database, documents = place / "carevault.db", place / "documents"
    restored = restore_backup(data_archive(tmp_path, created="yesterday"), KEY, database,
                              documents)
    assert restored["kind"] == "data" and restored["created"] == "yesterday"
    assert database.read_bytes() == DATABASE
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert (documents / "ab" / "doc-1").read_bytes() == DOCUMENT
    assert sorted(p.name for p in place.iterdir()) == ["carevault.db", "documents"]


def test_an_empty_document_folder_and_an_empty_database_file_are_an_empty_place(
        tmp_path: Path) -> None:
    place = tmp_path / "place"
    (place / "documents").mkdir(parents=True)
    (place / "carevault.db").touch()
    restore_backup(data_archive(tmp_path), KEY, place / "carevault.db", place / "documents")
    assert (place / "documents" / "ab" / "doc-1").read_bytes() == DOCUMENT


def test_a_restore_never_goes_over_an_installation(tmp_path: Path) -> None:
    archive = data_archive(tmp_path)
    place = tmp_path / "place"
    place.mkdir()
    database = place / "carevault.db"
    database.write_bytes(b"the live database")
    with pytest.raises(RestoreRefused) as refused:
        restore_backup(archive, KEY, database, place / "documents")
    assert str(refused.value) == f"{database} exists: a restore goes into an empty place"
    assert database.read_bytes() == b"the live database"
    database.unlink()
    (place / "documents").mkdir()
    (place / "documents" / "live").write_bytes(b"a live document")
    with pytest.raises(RestoreRefused) as refused:
        restore_backup(archive, KEY, database, place / "documents")
    assert str(refused.value) == (
        f"{place / 'documents'} is not empty: a restore goes into an empty place")
    assert not database.exists()


def refused_data(tmp_path: Path, archive: Path, key: bytes = KEY) -> str:
    place = tmp_path / "place"
    with pytest.raises(RestoreRefused) as refused:
        restore_backup(archive, key, place / "carevault.db", place / "documents")
    assert not (place / "carevault.db").exists() and not (place / "documents").exists()
    assert [p.name for p in place.iterdir()] == []  # no work folder left behind
    return str(refused.value)


def test_a_data_archive_with_documents_needs_the_document_store(tmp_path: Path) -> None:
    database = tmp_path / "place" / "carevault.db"
    with pytest.raises(RestoreRefused) as refused:
        restore_backup(data_archive(tmp_path), KEY, database, None)
    assert str(refused.value) == "the archive holds document files: give the document store"
    assert not database.exists()


def test_a_data_archive_without_documents_restores_without_a_document_store(
        tmp_path: Path) -> None:
    database = tmp_path / "place" / "carevault.db"
    archive = data_archive(tmp_path, {"carevault.db": DATABASE})
    restore_backup(archive, KEY, database, None)
    assert database.read_bytes() == DATABASE


def test_a_keys_archive_is_not_restored_as_data(tmp_path: Path) -> None:
    archive = tmp_path / "keys.cvb"
    create_key_backup(key_files(tmp_path / "keys"), KEY, archive, clock)
    assert refused_data(tmp_path, archive) == (
        "this is not a data archive of this CareVault version")


def test_an_archive_of_another_format_version_is_refused(tmp_path: Path) -> None:
    files = {"carevault.db": DATABASE}
    archive = sealed(tmp_path / "data.cvb", [*files.items(), (
        "manifest.json", json.dumps({"format": "carevault-backup/0", "kind": "data",
                                     "files": {}}).encode())])
    assert refused_data(tmp_path, archive) == (
        "this is not a data archive of this CareVault version")


def test_a_data_archive_sealed_with_another_key_is_refused(tmp_path: Path) -> None:
    assert refused_data(tmp_path, data_archive(tmp_path), OTHER_KEY) == (
        "chunk 0 does not open: the archive was changed or the key is wrong")


def test_a_file_that_does_not_match_its_manifest_is_refused(tmp_path: Path) -> None:
    archive = data_archive(tmp_path, listed={**DATA_FILES, "carevault.db": b"another db"})
    assert refused_data(tmp_path, archive) == "carevault.db does not match its manifest"


def test_a_missing_or_unlisted_file_is_refused(tmp_path: Path) -> None:
    missing = data_archive(tmp_path, {"carevault.db": DATABASE}, listed=DATA_FILES)
    assert refused_data(tmp_path, missing) == (
        "the archive does not hold what its manifest lists (1 missing, 0 unlisted)")
    unlisted = data_archive(tmp_path, listed={"carevault.db": DATABASE})
    assert refused_data(tmp_path, unlisted) == (
        "the archive does not hold what its manifest lists (0 missing, 1 unlisted)")


def test_an_archive_without_a_manifest_is_refused(tmp_path: Path) -> None:
    archive = sealed(tmp_path / "data.cvb", [("carevault.db", DATABASE)])
    assert refused_data(tmp_path, archive) == "the archive has no readable manifest"


def test_entries_that_escape_the_archive_or_are_links_are_refused(tmp_path: Path) -> None:
    files = {"carevault.db": DATABASE}
    escaping = sealed(tmp_path / "escaping.cvb",
                      [*files.items(), ("../outside", b"x"), manifest(files)])
    assert refused_data(tmp_path, escaping) == (
        "the archive holds an unexpected entry: ../outside")
    assert not (tmp_path / "outside").exists()
    absolute = sealed(tmp_path / "absolute.cvb", [("/tmp/carevault-absolute", b"x")])
    assert refused_data(tmp_path, absolute) == (
        "the archive holds an unexpected entry: /tmp/carevault-absolute")
    linked = sealed(tmp_path / "linked.cvb", [*files.items(), manifest(files)],
                    links=("documents/ab/doc-1",))
    assert refused_data(tmp_path, linked) == (
        "the archive holds an unexpected entry: documents/ab/doc-1")


def test_an_archive_cut_off_or_with_bytes_added_is_refused(tmp_path: Path) -> None:
    whole = data_archive(tmp_path).read_bytes()
    (tmp_path / "cut.cvb").write_bytes(whole[:-7])
    assert refused_data(tmp_path, tmp_path / "cut.cvb") == (
        "the archive is incomplete: its last chunk is cut off")
    (tmp_path / "longer.cvb").write_bytes(whole + b"x")
    assert refused_data(tmp_path, tmp_path / "longer.cvb") == (
        "bytes follow the final chunk: the archive was changed")


def test_a_refused_keys_restore_puts_no_key_file_in_place(tmp_path: Path) -> None:
    """A key file that exists refuses the restore before any other is put beside it, so that
    the same restore can run again once the place is cleared."""
    archive = tmp_path / "keys.cvb"
    create_key_backup(key_files(tmp_path / "keys"), KEY, archive, clock)
    target = tmp_path / "restored"
    target.mkdir()
    (target / "pki.key").write_bytes(b"the key in use")
    with pytest.raises(RestoreRefused) as refused:
        restore_keys(archive, KEY, target)
    assert str(refused.value) == f"{target / 'pki.key'} exists: key files are never overwritten"
    assert sorted(p.name for p in target.iterdir()) == ["pki.key"]
