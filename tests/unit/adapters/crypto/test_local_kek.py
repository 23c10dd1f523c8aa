"""Local KEKs: derived from the key file's master key, AES-KW, a registry of ids beside the file."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from carevault.adapters.crypto import (
    DecryptionFailed,
    KeySourceError,
    LocalKek,
    LocalKekStore,
    UnknownKek,
    open_keyring,
    open_sealed,
    seal,
)
from carevault.adapters.crypto.local_kek import kek_info, registry_path
from carevault.adapters.keys.local_file import KeyFileError, create_key_file, load_keys


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "var" / "carevault.key"
    create_key_file(path)
    return path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_aes_key_wrap_matches_rfc_3394_section_4_6() -> None:
    # 256 bits of key data wrapped with a 256-bit KEK, the RFC's own test vector.
    kek = LocalKek("kek-0001", bytes(range(32)))
    key_data = bytes.fromhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
    wrapped = kek.wrap(key_data)
    assert wrapped == bytes.fromhex(
        "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"
    )
    assert kek.unwrap(wrapped) == key_data


def test_a_local_kek_is_hkdf_of_the_master_key_with_its_id_in_the_label() -> None:
    master = os.urandom(32)
    expected = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"carevault/document-kek/kek-0003/v1",
    ).derive(master)
    data_key = os.urandom(32)
    assert LocalKek.derive(master, "kek-0003").wrap(data_key) == aes_key_wrap(expected, data_key)
    assert kek_info("kek-0003") == b"carevault/document-kek/kek-0003/v1"


def test_each_id_and_each_master_gives_an_independent_kek() -> None:
    master, data_key = os.urandom(32), os.urandom(32)
    one = LocalKek.derive(master, "kek-0001")
    wrapped = one.wrap(data_key)
    for other in (LocalKek.derive(master, "kek-0002"), LocalKek.derive(os.urandom(32), "kek-0001")):
        assert other.wrap(data_key) != wrapped
        with pytest.raises(DecryptionFailed):
            other.unwrap(wrapped)


@pytest.mark.parametrize("wrapped", [b"", b"\x00" * 39, b"\x00" * 40, b"\x00" * 48])
def test_garbage_does_not_unwrap(wrapped: bytes) -> None:
    with pytest.raises(DecryptionFailed):
        LocalKek("kek-0001", bytes(32)).unwrap(wrapped)


@pytest.mark.parametrize("kek_id", ["kek-1", "KEK-0001", "kek-0001 ", "master-1", ""])
def test_a_kek_needs_a_well_formed_id(kek_id: str) -> None:
    with pytest.raises(ValueError, match="KEK id"):
        LocalKek(kek_id, bytes(32))


# --- the store -------------------------------------------------------------------------------


def test_the_registry_sits_beside_the_key_file(key_file: Path) -> None:
    assert registry_path(key_file) == key_file.parent / "carevault.keks"


def test_a_fresh_key_file_has_no_kek_until_one_is_created(key_file: Path) -> None:
    store = LocalKekStore.from_key_source(f"file:{key_file}")
    assert store.kek_ids() == []
    with pytest.raises(UnknownKek):
        store.open_kek("kek-0001")
    kek = store.create_kek("kek-0001")
    assert store.kek_ids() == ["kek-0001"]
    data_key = os.urandom(32)
    assert store.open_kek("kek-0001").unwrap(kek.wrap(data_key)) == data_key


def test_the_registry_is_private_and_holds_no_key_material(key_file: Path) -> None:
    store = LocalKekStore.from_key_source(f"file:{key_file}")
    store.create_kek("kek-0001")
    registry = registry_path(key_file)
    entry = registry / "kek-0001"
    assert _mode(registry) == 0o700
    assert _mode(entry) == 0o600
    text = entry.read_text()
    assert json.loads(text)["kek_id"] == "kek-0001"
    master = load_keys(key_file)["master-1"]
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=kek_info("kek-0001")
    ).derive(master)
    for secret in (master, derived):
        assert base64.b64encode(secret).decode() not in text
        assert secret.hex() not in text


def test_a_kek_is_created_once(key_file: Path) -> None:
    store = LocalKekStore.from_key_source(f"file:{key_file}")
    store.create_kek("kek-0001")
    with pytest.raises(KeySourceError, match="already exists"):
        store.create_kek("kek-0001")


def test_another_process_derives_the_same_kek_from_the_same_file(key_file: Path) -> None:
    first = LocalKekStore.from_key_source(f"file:{key_file}")
    sealed = seal(b"note", document_id="d", version=1, kek=first.create_kek("kek-0001"))
    with open_keyring(f"file:{key_file}") as again:
        assert open_sealed(sealed, document_id="d", version=1, keyring=again) == b"note"


def test_a_destroyed_kek_no_longer_opens(key_file: Path) -> None:
    store = LocalKekStore.from_key_source(f"file:{key_file}")
    store.create_kek("kek-0001")
    store.create_kek("kek-0002")
    store.destroy_kek("kek-0001")
    assert store.kek_ids() == ["kek-0002"]
    with pytest.raises(UnknownKek):
        store.open_kek("kek-0001")
    with pytest.raises(UnknownKek):
        store.destroy_kek("kek-0001")


def test_ids_sort_by_number_and_strangers_are_ignored(key_file: Path) -> None:
    store = LocalKekStore.from_key_source(f"file:{key_file}")
    for kek_id in ("kek-10000", "kek-0002", "kek-9999"):
        store.create_kek(kek_id)
    registry = registry_path(key_file)
    (registry / "README").write_text("not a kek")
    (registry / "kek-1").write_text("not a kek id")
    (registry / "kek-0042").mkdir()
    assert store.kek_ids() == ["kek-0002", "kek-9999", "kek-10000"]
    with pytest.raises(UnknownKek):
        store.open_kek("kek-0042")


@pytest.mark.parametrize("kek_id", ["../carevault.key", "kek-1", ""])
def test_malformed_ids_never_touch_the_file_system(key_file: Path, kek_id: str) -> None:
    store = LocalKekStore.from_key_source(f"file:{key_file}")
    with pytest.raises(UnknownKek):
        store.open_kek(kek_id)
    with pytest.raises(UnknownKek):
        store.destroy_kek(kek_id)
    with pytest.raises(ValueError, match="KEK id"):
        store.create_kek(kek_id)
    assert key_file.exists()


def test_the_key_file_rules_still_apply(tmp_path: Path, key_file: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        LocalKekStore.from_key_source(f"file:{tmp_path / 'missing.key'}")
    key_file.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        LocalKekStore.from_key_source(f"file:{key_file}")
    other = tmp_path / "other.key"
    other.write_text(json.dumps({"keys": {"master-2": base64.b64encode(bytes(32)).decode()}}))
    other.chmod(0o600)
    with pytest.raises(KeyFileError, match="master-1"):
        LocalKekStore.from_key_source(f"file:{other}")


def test_reprs_name_the_registry_not_the_key(key_file: Path) -> None:
    store = LocalKekStore.from_key_source(f"file:{key_file}")
    master = load_keys(key_file)["master-1"]
    for shown in (repr(store), repr(store.create_kek("kek-0001"))):
        assert master.hex() not in shown
        assert "\\x" not in shown
