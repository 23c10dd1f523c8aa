"""Backups of an embedded (SQLite) installation, and the drill that proves one restores.

Two archives, two backup keys, kept on different media (docs/operations.md, "Backups"):

- the **data archive** (``create_backup``): a consistent snapshot of the database (SQLite's
  online backup API), the document store's files (already sealed by the documents' KEKs), and
  a manifest with each file's SHA-256 and each audit stream's latest signed tree head. It never
  holds key material: the key file is not in it, and its contents are useless without it.
- the **keys archive** (``create_key_backup``): the key file(s), under another backup key.

Both are `adapters.crypto.archive` streams (AES-256-GCM chunks, the last one marked).
``restore_backup`` decrypts the whole archive before anything is put in place, checks every
file against the manifest and refuses a changed, cut-off or foreign archive; it only restores
into an empty place. ``drill`` then proves the restore: every document opens with the keys and
matches its recorded SHA-256, and every audit stream verifies (every entry, every stored hash,
every signed tree head) and holds the manifest's signed tree head.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from carevault.adapters.crypto.archive import (
    ArchiveError,
    ArchiveWriter,
    fingerprint,
    read_archive,
)
from carevault.adapters.crypto.vault import EnvelopeVault
from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.adapters.storage.snapshot import snapshot, sqlite_path
from carevault.domain.audit import STREAMS
from carevault.domain.tree_head import TreeHead
from carevault.services.audit_log import AuditLog
from carevault.services.document_publication import CONTENT
from carevault.services.unit_of_work import UnitOfWork
from carevault.verifier import VerificationError, verify_log

FORMAT = "carevault-backup/1"
DATABASE = "carevault.db"
DOCUMENTS = "documents"
KEYS = "keys"
MANIFEST = "manifest.json"


class RestoreRefused(Exception):
    """The archive cannot be restored here (changed, incomplete, wrong kind, place not empty),
    or the restored installation failed its drill."""


@dataclass(frozen=True)
class DrillReport:
    documents: int
    audit_sizes: dict[str, int]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _private_workdir(near: Path) -> Path:
    near.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".carevault-backup-", dir=near))


def _write_archive(
    out: Path, key: bytes, files: list[tuple[str, Path]], manifest: dict[str, Any]
) -> dict[str, Any]:
    """``files`` as (archive name, path) then the manifest, sealed into ``out`` atomically."""
    manifest = {**manifest, "backup_key": fingerprint(key), "files": {}}
    temporary = out.with_name(f".{out.name}.partial")
    with open(temporary, "wb") as raw:
        writer = ArchiveWriter(raw, key)
        with tarfile.open(fileobj=writer, mode="w|gz") as tar:  # type: ignore[call-overload]
            for name, path in files:
                manifest["files"][name] = _sha256(path)
                tar.add(path, arcname=name, recursive=False)
            data = json.dumps(manifest, indent=2, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        writer.close()
        os.fsync(raw.fileno())
    os.replace(temporary, out)
    return manifest


def _document_files(root: Path | None) -> Iterator[tuple[str, Path]]:
    if root is None or not root.exists():
        return
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and relative.parts[0] != "tmp":
            yield f"{DOCUMENTS}/{relative.as_posix()}", path


def create_backup(
    log: AuditLog, document_dir: Path | None, key: bytes, out: Path, clock: Callable[[], datetime]
) -> dict[str, Any]:
    """The data archive of the installation whose audit log is ``log``; returns its manifest.

    A tree head is signed for every stream first: the snapshot holds it (and possibly later
    entries), and the restore drill requires it."""
    sqlite_path(log.database.engine)  # PostgreSQL: refused, readably
    heads = {stream: log.sign_tree_head(stream) for stream in STREAMS}
    work = _private_workdir(out.parent)
    try:
        database = work / DATABASE
        snapshot(log.database.engine, database)
        files = [(DATABASE, database), *_document_files(document_dir)]
        return _write_archive(
            out,
            key,
            files,
            {
                "format": FORMAT,
                "kind": "data",
                "created": clock().isoformat(),
                "tree_heads": {s: _head_json(h) for s, h in heads.items()},
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def create_key_backup(
    key_files: list[Path], key: bytes, out: Path, clock: Callable[[], datetime]
) -> dict[str, Any]:
    """The keys archive: the key file(s), nothing else."""
    names = [(f"{KEYS}/{path.name}", path) for path in dict.fromkeys(key_files)]
    if len({name for name, _ in names}) != len(names):
        raise ValueError("two key files share a name")
    return _write_archive(
        out, key, names, {"format": FORMAT, "kind": "keys", "created": clock().isoformat()}
    )


def _head_json(head: TreeHead) -> dict[str, Any]:
    return {
        "tree_size": head.tree_size,
        "root_hash": head.root_hash.hex(),
        "timestamp": head.timestamp_ms,
        "signature": head.signature.hex(),
    }


def _open(archive: Path, key: bytes, work: Path, kind: str) -> tuple[dict[str, Any], Path]:
    """Decrypt and check ``archive`` completely inside ``work``: (manifest, extracted root)."""
    plain = work / "archive.tar.gz"
    try:
        with open(archive, "rb") as source, open(plain, "wb") as out:
            for chunk in read_archive(source, key):
                out.write(chunk)
    except ArchiveError as error:
        raise RestoreRefused(str(error)) from None
    root = work / "extracted"
    root.mkdir(mode=0o700)
    try:
        with tarfile.open(plain, "r:gz") as tar:
            for member in tar.getmembers():
                name = PurePosixPath(member.name)
                if not member.isfile() or name.is_absolute() or ".." in name.parts:
                    raise RestoreRefused(f"the archive holds an unexpected entry: {member.name}")
            tar.extractall(root, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise RestoreRefused(f"the archive's contents are unreadable: {error}") from None
    finally:
        plain.unlink(missing_ok=True)
    try:
        manifest = json.loads((root / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        raise RestoreRefused("the archive has no readable manifest") from None
    if manifest.get("format") != FORMAT or manifest.get("kind") != kind:
        raise RestoreRefused(f"this is not a {kind} archive of this CareVault version")
    listed = dict(manifest.get("files", {}))
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {MANIFEST}
    if set(listed) != present:
        raise RestoreRefused(
            f"the archive does not hold what its manifest lists "
            f"({len(set(listed) - present)} missing, {len(present - set(listed))} unlisted)"
        )
    for name, digest in listed.items():
        if _sha256(root / name) != digest:
            raise RestoreRefused(f"{name} does not match its manifest")
    return manifest, root


def _empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def restore_backup(
    archive: Path, key: bytes, database: Path, document_dir: Path | None
) -> dict[str, Any]:
    """Put the data archive's database at ``database`` and its documents in ``document_dir``;
    both must be absent or empty. Nothing is put in place unless the whole archive checks."""
    if database.exists() and database.stat().st_size > 0:
        raise RestoreRefused(f"{database} exists: a restore goes into an empty place")
    if document_dir is not None and not _empty(document_dir):
        raise RestoreRefused(f"{document_dir} is not empty: a restore goes into an empty place")
    work = _private_workdir(database.parent)
    try:
        manifest, root = _open(archive, key, work, "data")
        has_documents = (root / DOCUMENTS).exists()
        if has_documents and document_dir is None:
            raise RestoreRefused("the archive holds document files: give the document store")
        os.chmod(root / DATABASE, 0o600)
        os.replace(root / DATABASE, database)
        if has_documents and document_dir is not None:
            if document_dir.exists():
                document_dir.rmdir()
            document_dir.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(root / DOCUMENTS), str(document_dir))
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def restore_keys(archive: Path, key: bytes, directory: Path) -> list[Path]:
    """The keys archive's key files into ``directory`` (0700), refusing to overwrite any."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = _private_workdir(directory)
    try:
        manifest, root = _open(archive, key, work, "keys")
        targets = [
            (name, directory / PurePosixPath(name).name) for name in sorted(manifest["files"])
        ]
        for _name, target in targets:  # all checked before any is put in place
            if target.exists():
                raise RestoreRefused(f"{target} exists: key files are never overwritten")
        restored = []
        for name, target in targets:
            os.chmod(root / name, 0o600)
            os.replace(root / name, target)
            restored.append(target)
        return restored
    finally:
        shutil.rmtree(work, ignore_errors=True)


def drill(
    units: Callable[[], UnitOfWork],
    log: AuditLog,
    vault: EnvelopeVault,
    manifest: dict[str, Any] | None = None,
    *,
    blobs: FileBlobStore | None = None,
    batch: int = 200,
) -> DrillReport:
    """Prove a restored installation: every document opens and matches its SHA-256, every
    audit stream verifies and holds the manifest's signed tree heads. Raises `RestoreRefused`
    naming the first failure."""
    opened, after = 0, ""
    while True:
        with units() as uow:
            rows = uow.documents.with_blobs(blobs).sealed_contents(after=after, limit=batch)
        if not rows:
            break
        for document_id, sha256, sealed in rows:
            if sealed is None:
                raise RestoreRefused(f"document {document_id}: its file is missing")
            try:
                plain = vault.open(sealed, document_id=document_id, version=1, purpose=CONTENT)
            except Exception as error:
                raise RestoreRefused(
                    f"document {document_id} does not open ({type(error).__name__})"
                ) from None
            if hashlib.sha256(plain).hexdigest() != sha256:
                raise RestoreRefused(f"document {document_id} does not match its SHA-256")
            opened += 1
        after = rows[-1][0]
    sizes = {stream: _verify_stream(log, stream, manifest) for stream in STREAMS}
    return DrillReport(opened, sizes)


def _verify_stream(log: AuditLog, stream: str, manifest: dict[str, Any] | None) -> int:
    read = log.for_verifier(stream)
    size, heads = read.size, read.heads
    try:
        verify_log(log.public_key_pem(stream), size, read.entries, read.nodes, heads)
    except VerificationError as error:
        raise RestoreRefused(f"the {stream} audit log does not verify: {error}") from None
    if manifest is not None:
        wanted = manifest["tree_heads"][stream]
        match = [
            h
            for h in heads
            if h.tree_size == wanted["tree_size"]
            and h.root_hash.hex() == wanted["root_hash"]
            and h.signature.hex() == wanted["signature"]
        ]
        if not match:
            raise RestoreRefused(f"the {stream} audit log lacks the backup's signed tree head")
    return size
