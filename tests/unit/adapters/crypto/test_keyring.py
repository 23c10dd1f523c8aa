"""The key ring: the newest KEK is current, rotation adds one, retirement removes an old one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from carevault.adapters.crypto import (
    KeyRing,
    KeySourceError,
    UnknownKek,
    open_kek_store,
    open_keyring,
)
from carevault.adapters.crypto.keyring import (
    check_kek_id,
    is_kek_id,
    kek_id_number,
    sorted_kek_ids,
)
from carevault.adapters.keys.local_file import KeyFileError, create_key_file


@pytest.mark.parametrize(
    ("kek_id", "number"),
    [("kek-0001", 1), ("kek-0042", 42), ("kek-9999", 9999), ("kek-12345", 12345)],
)
def test_kek_ids_carry_a_number(kek_id: str, number: int) -> None:
    assert kek_id_number(kek_id) == number
    assert check_kek_id(kek_id) == kek_id
    assert is_kek_id(kek_id)


@pytest.mark.parametrize(
    "name", ["kek-001", "kek-", "kek-00a1", "KEK-0001", " kek-0001", "kek-0001\n"]
)
def test_anything_else_is_not_a_kek_id(name: str) -> None:
    assert not is_kek_id(name)
    with pytest.raises(ValueError, match="not a KEK id"):
        kek_id_number(name)


def test_ids_sort_by_number_without_duplicates() -> None:
    names = ["kek-10000", "kek-0002", "other", "kek-0002", "kek-9999"]
    assert sorted_kek_ids(names) == ["kek-0002", "kek-9999", "kek-10000"]


def test_there_is_no_current_kek_before_initialization(store: Any) -> None:
    ring = KeyRing(store)
    with pytest.raises(KeySourceError, match="no key-encryption key"):
        _ = ring.current
    assert ring.initialize().kek_id == "kek-0001"
    assert ring.initialize().kek_id == "kek-0001"  # safe to re-run
    assert ring.kek_ids() == ["kek-0001"]


def test_rotation_creates_the_next_id_which_becomes_current(keyring: KeyRing) -> None:
    assert keyring.current.kek_id == "kek-0001"
    assert keyring.new_kek().kek_id == "kek-0002"
    assert keyring.new_kek().kek_id == "kek-0003"
    assert keyring.current.kek_id == "kek-0003"
    assert keyring.kek_ids() == ["kek-0001", "kek-0002", "kek-0003"]
    assert keyring.open_kek("kek-0001").kek_id == "kek-0001"  # old ones still open


def test_ids_grow_past_four_digits(store: Any) -> None:
    store.create_kek("kek-9999")
    ring = KeyRing(store)
    assert ring.current.kek_id == "kek-9999"
    assert ring.new_kek().kek_id == "kek-10000"
    assert ring.current.kek_id == "kek-10000"


def test_opened_keks_are_cached(keyring: KeyRing, store: Any) -> None:
    store.opened.clear()
    for _ in range(5):
        keyring.open_kek("kek-0001")
        _ = keyring.current
    assert store.opened == []  # created through this ring: already cached
    keyring.new_kek()
    other = KeyRing(store)
    for _ in range(3):
        other.open_kek("kek-0001")
    assert store.opened == ["kek-0001"]


@pytest.mark.parametrize("kek_id", ["kek-0077", "kek-7", "nonsense"])
def test_opening_an_unknown_kek_fails(keyring: KeyRing, kek_id: str) -> None:
    with pytest.raises(UnknownKek) as failure:
        keyring.open_kek(kek_id)
    assert failure.value.kek_id == kek_id


def test_retiring_destroys_an_old_kek(keyring: KeyRing) -> None:
    keyring.new_kek()
    keyring.retire("kek-0001")
    assert keyring.kek_ids() == ["kek-0002"]
    with pytest.raises(UnknownKek):
        keyring.open_kek("kek-0001")  # not even from the cache


def test_the_current_kek_cannot_be_retired(keyring: KeyRing) -> None:
    with pytest.raises(KeySourceError, match="rotate first"):
        keyring.retire("kek-0001")
    with pytest.raises(UnknownKek):
        keyring.retire("kek-0005")
    assert keyring.current.kek_id == "kek-0001"


def test_a_rotation_elsewhere_is_seen_after_the_recheck_interval(
    keyring: KeyRing, store: Any, clock: Any
) -> None:
    other_process = KeyRing(store)  # the CLI, say, sharing the store
    other_process.new_kek()
    assert keyring.current.kek_id == "kek-0001"  # still within the interval
    clock.now += 59.9
    assert keyring.current.kek_id == "kek-0001"
    clock.now += 0.1
    assert keyring.current.kek_id == "kek-0002"


def test_refresh_sees_a_rotation_at_once(keyring: KeyRing, store: Any) -> None:
    KeyRing(store).new_kek()
    keyring.refresh()
    assert keyring.current.kek_id == "kek-0002"


def test_closing_the_ring_closes_its_store(store: Any) -> None:
    with KeyRing(store) as ring:
        ring.initialize()
    assert store.closed


# --- choosing the store from the key source --------------------------------------------------


def test_a_file_key_source_opens_the_local_store(tmp_path: Path) -> None:
    key_file = tmp_path / "carevault.key"
    create_key_file(key_file)
    with open_keyring(f"file:{key_file}") as ring:
        assert ring.initialize().kek_id == "kek-0001"
        assert type(ring.current).__name__ == "LocalKek"


@pytest.mark.parametrize("key_source", ["vault:secret/carevault", "var/carevault.key", ""])
def test_unknown_key_sources_are_refused(key_source: str) -> None:
    with pytest.raises(KeySourceError, match="unsupported key source"):
        open_kek_store(key_source)


def test_a_missing_key_file_is_the_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        open_keyring(f"file:{tmp_path / 'nope.key'}")


def test_a_pkcs11_source_without_its_pin_fails_before_loading_anything() -> None:
    source = "pkcs11:module=/nonexistent/libp11.so;token=carevault;pin-env=CAREVAULT_TEST_NO_PIN"
    with pytest.raises(KeySourceError, match="CAREVAULT_TEST_NO_PIN is not set"):
        open_keyring(source, environ={})
    with pytest.raises(KeySourceError, match="cannot load the PKCS#11 module"):
        open_keyring(source, environ={"CAREVAULT_TEST_NO_PIN": "1234"})
