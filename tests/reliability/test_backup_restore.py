"""The restore drill of the embedded (SQLite) installation: `carevault backup create` while it
serves, `carevault backup keys` to another archive under another backup key, then an empty
place brought up from the two archives with `carevault backup restore-keys` and
`carevault restore`: every document opens, the audit logs verify to the backup's signed tree
heads. Changed, cut-off, foreign and mismatched archives are refused and leave nothing."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from starlette.testclient import TestClient
from typer.testing import CliRunner

from carevault.adapters.crypto.archive import read_archive
from carevault.adapters.keys.local_file import create_key_file
from carevault.adapters.storage.database import connect, upgrade
from carevault.adapters.storage.snapshot import NotEmbedded
from carevault.bootstrap import Platform, build
from carevault.cli.main import app
from carevault.services import backup
from carevault.settings import Settings
from support.authorities import presence_code, with_presence
from support.builders import patient
from support.documents import FHIR_JSON, Pro, created_id, provide_bundle, publish
from support.tokens import professional_token

runner = CliRunner()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Platform, TestClient, dict[str, str]]]:
    """A running embedded installation (filesystem document store) with three documents."""
    root = tmp_path / "site-a"
    url = f"sqlite:///{root / 'var' / 'carevault.db'}"
    (root / "var").mkdir(parents=True, mode=0o700)
    engine = connect(url)
    upgrade(engine)
    key_file = root / "keys" / "carevault.key"
    create_key_file(key_file)
    settings = Settings(database_url=url, key_source=f"file:{key_file}", environment="dev",
                        document_storage="filesystem", document_storage_path=root / "documents",
                        _env_file=None)  # type: ignore[call-arg]
    platform = build(settings, engine)
    env = {"CAREVAULT_DATABASE_URL": url, "CAREVAULT_KEY_SOURCE": f"file:{key_file}",
           "CAREVAULT_DOCUMENT_STORAGE": "filesystem",
           "CAREVAULT_DOCUMENT_STORAGE_PATH": str(root / "documents")}
    with TestClient(platform.app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000),
                    headers={"Authorization": f"Bearer {professional_token(platform)}"}) as client:
        from support.authorities import registrar_token
        made = client.post("/fhir/Patient", json=patient(platform.directory.systems, 7),
                           headers={**FHIR_JSON,
                                    "Authorization": f"Bearer {registrar_token(platform)}"})
        patient_id = str(made.json()["id"])
        gp = Pro(platform, "HP-DOC-BACKUP")
        seen = client.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "subject": {"reference": f"Patient/{patient_id}"},
            "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
            "period": {"start": "2026-11-20T09:00:00Z"}}, presence_code(platform, patient_id)))
        assert seen.status_code == 201, seen.text
        for n in range(3):
            content = b"%PDF-1.4\n% restore drill document " + str(n).encode() + b"\n%%EOF\n"
            answer = publish(client, gp, provide_bundle(patient_id, gp, content))
            assert answer.status_code == 200, answer.text
            created_id(answer)
        yield platform, client, env
    engine.dispose()


def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_the_restore_drill_brings_up_an_empty_place_from_two_archives(
        site: tuple[Platform, TestClient, dict[str, str]], tmp_path: Path) -> None:
    platform, _client, env = site
    media = tmp_path / "media"
    data_key, keys_key = tmp_path / "vault-1" / "data.bkey", tmp_path / "vault-2" / "keys.bkey"
    assert cli(env, "backup", "key", str(data_key))[0] == 0
    assert cli(env, "backup", "key", str(keys_key))[0] == 0
    media.mkdir()
    status, said = cli(env, "backup", "create", str(media / "data.cvb"),
                       "--backup-key", str(data_key))
    assert status == 0, said
    status, said = cli(env, "backup", "keys", str(media / "keys.cvb"),
                       "--backup-key", str(keys_key))
    assert status == 0, said

    # The data archive holds no key material: its plaintext does not contain the key file.
    key_bytes = Path(env["CAREVAULT_KEY_SOURCE"].removeprefix("file:")).read_bytes()
    with open(media / "data.cvb", "rb") as source:
        plaintext = b"".join(read_archive(source, _key(data_key)))
    assert key_bytes.strip() not in plaintext and b"carevault.key" not in plaintext
    with tarfile.open(fileobj=io.BytesIO(plaintext), mode="r:gz") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    # The tree heads the backup recorded were signed by the running site.
    heads = {s: platform.audit.tree_head(s, h["tree_size"])
             for s, h in manifest["tree_heads"].items()}
    assert all(heads[s].root_hash.hex() == h["root_hash"]
               for s, h in manifest["tree_heads"].items())
    # And the archive is not readable without its key.
    assert b"%PDF" not in (media / "data.cvb").read_bytes()

    # An empty place on "site B".
    other = tmp_path / "site-b"
    env_b = {"CAREVAULT_DATABASE_URL": f"sqlite:///{other / 'var' / 'carevault.db'}",
             "CAREVAULT_KEY_SOURCE": f"file:{other / 'keys' / 'carevault.key'}",
             "CAREVAULT_DOCUMENT_STORAGE": "filesystem",
             "CAREVAULT_DOCUMENT_STORAGE_PATH": str(other / "documents")}
    (other / "var").mkdir(parents=True, mode=0o700)
    # Without the keys in place the drill fails and nothing restored is left behind.
    status, said = cli(env_b, "restore", str(media / "data.cvb"), "--backup-key", str(data_key))
    assert status == 1 and "error:" in said, said
    assert not (other / "var" / "carevault.db").exists()
    assert not (other / "documents").exists() or not any((other / "documents").iterdir())

    status, said = cli(env_b, "backup", "restore-keys", str(media / "keys.cvb"),
                       "--backup-key", str(keys_key), "--into", str(other / "keys"))
    assert status == 0, said
    status, said = cli(env_b, "restore", str(media / "data.cvb"), "--backup-key", str(data_key))
    assert status == 0, said
    assert "drill passed: 6 documents open" in said, said  # 3 reports and their signatures

    restored = build(Settings(database_url=env_b["CAREVAULT_DATABASE_URL"],
                              key_source=env_b["CAREVAULT_KEY_SOURCE"], environment="dev",
                              document_storage="filesystem",
                              document_storage_path=other / "documents",
                              _env_file=None))  # type: ignore[call-arg]
    for stream, head in heads.items():
        again = restored.audit.tree_head(stream, head.tree_size)
        assert (again.root_hash, again.signature) == (head.root_hash, head.signature)
    restored.engine.dispose()
    # A second restore into the now full place is refused.
    status, said = cli(env_b, "restore", str(media / "data.cvb"), "--backup-key", str(data_key))
    assert status == 1 and "empty place" in said


def _key(path: Path) -> bytes:
    from carevault.adapters.crypto.archive import load_backup_key
    return load_backup_key(path)


def test_changed_cut_off_foreign_and_wrong_kind_archives_are_refused(
        site: tuple[Platform, TestClient, dict[str, str]], tmp_path: Path) -> None:
    _platform, _client, env = site
    key_file = tmp_path / "data.bkey"
    cli(env, "backup", "key", str(key_file))
    archive = tmp_path / "data.cvb"
    assert cli(env, "backup", "create", str(archive), "--backup-key", str(key_file))[0] == 0
    keys_archive = tmp_path / "keys.cvb"
    assert cli(env, "backup", "keys", str(keys_archive), "--backup-key", str(key_file))[0] == 0
    good = archive.read_bytes()
    target = tmp_path / "empty"

    def refused(data: bytes, expected: str, key: Path = key_file) -> None:
        candidate = tmp_path / "candidate.cvb"
        candidate.write_bytes(data)
        with pytest.raises(backup.RestoreRefused, match=expected):
            backup.restore_backup(candidate, _key(key), target / "carevault.db",
                                  target / "documents")
        assert not (target / "carevault.db").exists()
        assert not (target / "documents").exists()

    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    refused(bytes(flipped), "does not open")
    refused(good[: len(good) - 7], "incomplete")
    refused(good[:-1 - (len(good) - 24) // 2], "incomplete|does not open|impossible")
    refused(good + b"x", "follow the final chunk")
    refused(b"PK\x03\x04 a zip file", "not a CareVault backup")
    other_key = tmp_path / "other.bkey"
    cli(env, "backup", "key", str(other_key))
    refused(good, "does not open", other_key)
    refused(keys_archive.read_bytes(), "not a data archive")

    # An archive sealed with the right key whose contents do not match their manifest.
    from carevault.adapters.crypto.archive import ArchiveWriter
    with open(tmp_path / "forged.cvb", "wb") as out:
        writer = ArchiveWriter(out, _key(key_file))
        with tarfile.open(fileobj=writer, mode="w|gz") as tar:  # type: ignore[call-overload]
            for name, data in (("carevault.db", b"not the database"), ("manifest.json", (
                    b'{"format": "carevault-backup/1", "kind": "data", '
                    b'"files": {"carevault.db": "00"}}'))):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        writer.close()
    refused((tmp_path / "forged.cvb").read_bytes(), "does not match its manifest")


def test_a_postgresql_installation_is_pointed_to_pgbackrest(postgres_url: str,
                                                            tmp_path: Path) -> None:
    engine = create_engine(postgres_url)
    from carevault.adapters.storage.snapshot import snapshot
    with pytest.raises(NotEmbedded, match="pgBackRest"):
        snapshot(engine, tmp_path / "copy.db")
    engine.dispose()
