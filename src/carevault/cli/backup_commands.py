"""``carevault backup …`` and ``carevault restore``: the embedded installation's backups.

The data and the keys go to two archives under two backup keys (`carevault.services.backup`);
a restore refuses a changed or incomplete archive and ends with the drill. PostgreSQL
installations are backed up with pgBackRest (docs/operations.md).
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from carevault.adapters.crypto.archive import ArchiveError, create_backup_key, load_backup_key
from carevault.adapters.keys.local_file import key_file_path
from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.adapters.storage.snapshot import NotEmbedded, sqlite_path
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.bootstrap import audit_log, document_vault
from carevault.cli.context import engine_for, log_for, operator_record, record_now, settings
from carevault.cli.errors import friendly
from carevault.services import backup
from carevault.settings import Settings

app = typer.Typer(help="Backups of an embedded (SQLite) installation.", no_args_is_help=True)
P = ParamSpec("P")
R = TypeVar("R")
BackupKey = Annotated[
    Path, typer.Option("--backup-key", help="The backup key file (`carevault backup key`).")
]


def refusals(command: Callable[P, R]) -> Callable[P, R]:
    """A refused archive or restore is one readable line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (ArchiveError, backup.RestoreRefused, NotEmbedded, OSError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def now() -> datetime:
    return datetime.now(UTC)


def _record(config: Settings, interaction: str, detail: dict[str, str]) -> None:
    record_now(config, operator_record("E", interaction, entity_type="Backup", detail=detail))


def _key_files(config: Settings) -> list[Path]:
    files = [key_file_path(config.key_source)]
    if config.document_key_source and config.document_key_source.startswith("file:"):
        files.append(key_file_path(config.document_key_source))
    return files


@app.command("key")
@friendly
@refusals
def key(path: Annotated[Path, typer.Argument(help="Where to create the backup key.")]) -> None:
    """Create a backup key (0600). Keep the data's and the keys' backup keys apart, and
    neither beside the archives."""
    create_backup_key(path)
    typer.echo(f"backup key created: {path}")


@app.command("create")
@friendly
@refusals
def create(
    archive: Annotated[Path, typer.Argument(help="The data archive to write.")],
    backup_key: BackupKey,
) -> None:
    """A consistent, encrypted archive of the database and the document store, while the
    server runs. It holds no key: back the keys up with `carevault backup keys`."""
    config = settings()
    secret = load_backup_key(backup_key)
    if any(archive.resolve() == path.resolve() for path in _key_files(config)):
        raise backup.RestoreRefused("the archive would overwrite a key file")
    documents = config.document_storage_path if config.document_storage == "filesystem" else None
    manifest = backup.create_backup(log_for(config), documents, secret, archive, now)
    files = len(manifest["files"])
    _record(config, "backup create", {"archive": archive.name, "files": str(files)})
    heads = ", ".join(f"{s} {h['tree_size']}" for s, h in manifest["tree_heads"].items())
    typer.echo(f"backup written: {archive} ({files} files; audit tree heads: {heads})")


@app.command("keys")
@friendly
@refusals
def keys(
    archive: Annotated[Path, typer.Argument(help="The keys archive to write.")],
    backup_key: BackupKey,
) -> None:
    """An encrypted archive of the key file(s) alone, for other media than the data's."""
    config = settings()
    backup.create_key_backup(_key_files(config), load_backup_key(backup_key), archive, now)
    _record(config, "backup keys", {"archive": archive.name})
    typer.echo(f"keys archive written: {archive}")


@app.command("restore-keys")
@friendly
@refusals
def restore_keys(
    archive: Annotated[Path, typer.Argument(help="The keys archive.")],
    backup_key: BackupKey,
    into: Annotated[Path, typer.Option(help="The directory to put the key file(s) in.")],
) -> None:
    """Put the key file(s) of a keys archive back (never over an existing file)."""
    restored = backup.restore_keys(archive, load_backup_key(backup_key), into)
    typer.echo("restored: " + ", ".join(str(path) for path in restored))


@app.command("drill")
@friendly
@refusals
def drill() -> None:
    """Open every document and verify every audit stream of the configured installation."""
    config = settings()
    report = _drill(config, None)
    typer.echo(_said(report))


def _drill(config: Settings, manifest: dict[str, object] | None) -> backup.DrillReport:
    engine = engine_for(config.database_url)
    vault = document_vault(config)
    try:
        return backup.drill(
            lambda: SqlUnitOfWork(engine),
            audit_log(config, engine),
            vault,
            manifest,
            blobs=FileBlobStore(config.document_storage_path)
            if config.document_storage == "filesystem"
            else None,
        )
    finally:
        vault.keyring.close()


def _said(report: backup.DrillReport) -> str:
    sizes = ", ".join(f"{stream} {size}" for stream, size in report.audit_sizes.items())
    return f"drill passed: {report.documents} documents open; audit logs verify ({sizes})"


def restore(
    archive: Annotated[Path, typer.Argument(help="The data archive.")],
    backup_key: BackupKey,
) -> None:
    """Restore a data archive into the configured, empty installation, then run the drill:
    every document opens with the keys in place and the audit logs verify to the archive's
    signed tree heads. On any failure nothing restored is left behind."""
    config = settings()
    database = sqlite_path(engine_for(config.database_url))
    documents = config.document_storage_path if config.document_storage == "filesystem" else None
    manifest = backup.restore_backup(archive, load_backup_key(backup_key), database, documents)
    try:
        report = _drill(config, manifest)
    except Exception:
        engine_for(config.database_url).dispose()
        database.unlink(missing_ok=True)
        if documents is not None:
            shutil.rmtree(documents, ignore_errors=True)
        raise
    _record(config, "backup restore", {"archive": archive.name, "documents": str(report.documents)})
    typer.echo(f"restored {archive}; {_said(report)}")


restore_command = friendly(refusals(restore))
