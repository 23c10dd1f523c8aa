"""KEKs in a real PKCS#11 token (SoftHSM2), and the KEK contract every key source must pass.

Each test gets a private SoftHSM token directory under ``tmp_path`` (selected with
``SOFTHSM2_CONF``) and a freshly initialized token. SoftHSM reads its configuration when the
module is initialized, so the fixture re-initializes the module for every test; sessions of the
previous test are closed by then.

Without SoftHSM2 (``apt-get install softhsm2``) the HSM tests are skipped, except under
``CI=true``, where they fail (`support.requirements`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import cast

import pkcs11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import AttributeSensitive, PKCS11Error

from carevault.adapters.crypto import (
    DecryptionFailed,
    KeyRing,
    KeySourceError,
    SealedContent,
    UnknownKek,
    metadata_purpose,
    open_keyring,
    open_sealed,
    rewrap,
    seal,
)
from carevault.adapters.keys.local_file import create_key_file
from support.softhsm import PIN, PIN_ENV, SOFTHSM_MODULE, TOKEN, SoftHsm

MARKER = b"CAREVAULT-HSM-PLAINTEXT-MARKER"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["local", "softhsm"])
def key_source(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        key_file = tmp_path / "var" / "carevault.key"
        create_key_file(key_file)
        return f"file:{key_file}"
    return cast(SoftHsm, request.getfixturevalue("softhsm")).key_source


@pytest.fixture
def keyring(key_source: str) -> Iterator[KeyRing]:
    ring = open_keyring(key_source)
    ring.initialize()
    yield ring
    ring.close()


def _flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x80
    return bytes(changed)


def _seal(ring: KeyRing, plaintext: bytes = MARKER) -> SealedContent:
    return seal(plaintext, document_id="doc-9", version=2, kek=ring.current)


def _open(
    sealed: SealedContent, ring: KeyRing, *, document_id: str = "doc-9", version: int = 2
) -> bytes:
    return open_sealed(sealed, document_id=document_id, version=version, keyring=ring)


# --- the contract: every key source ----------------------------------------------------------


def test_initialization_creates_the_first_kek_once(key_source: str) -> None:
    with open_keyring(key_source) as ring:
        assert ring.kek_ids() == []
        assert ring.initialize().kek_id == "kek-0001"
        assert ring.initialize().kek_id == "kek-0001"
        assert ring.kek_ids() == ["kek-0001"]


def test_sealed_content_and_metadata_round_trip(keyring: KeyRing) -> None:
    sealed = _seal(keyring)
    assert sealed.kek_id == "kek-0001"
    assert _open(sealed, keyring) == MARKER
    title = seal(
        "Lettre de sortie — Hôpital".encode(),
        document_id="doc-9",
        version=2,
        kek=keyring.current,
        purpose=metadata_purpose("title"),
    )
    assert (
        open_sealed(
            title, document_id="doc-9", version=2, keyring=keyring, purpose="metadata/title"
        )
        == "Lettre de sortie — Hôpital".encode()
    )
    with pytest.raises(DecryptionFailed):
        _open(title, keyring)  # a title is not content


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.integers(min_value=0, max_value=1 << 20), fill=st.integers(0, 255))
def test_any_size_up_to_a_megabyte_round_trips(keyring: KeyRing, size: int, fill: int) -> None:
    plaintext = bytes([fill]) * size
    assert _open(_seal(keyring, plaintext), keyring) == plaintext


def test_a_data_key_wraps_and_unwraps_and_never_shows_through(keyring: KeyRing) -> None:
    kek = keyring.current
    data_key = os.urandom(32)
    wrapped = kek.wrap(data_key)
    assert data_key not in wrapped
    assert kek.unwrap(wrapped) == data_key
    with pytest.raises(ValueError, match="256 bits"):
        kek.wrap(os.urandom(16))


def test_content_opens_only_for_its_document_and_version(keyring: KeyRing) -> None:
    sealed = _seal(keyring)
    for binding in ({"document_id": "doc-8"}, {"version": 1}, {"version": 3}):
        with pytest.raises(DecryptionFailed):
            _open(sealed, keyring, **binding)


def test_every_flipped_byte_of_a_wrapped_key_is_detected(keyring: KeyRing) -> None:
    sealed = _seal(keyring)
    for index in range(len(sealed.wrapped_key)):
        with pytest.raises(DecryptionFailed):
            _open(replace(sealed, wrapped_key=_flip(sealed.wrapped_key, index)), keyring)
    for wrong in (sealed.wrapped_key[:-1], sealed.wrapped_key + b"\x00", b""):
        with pytest.raises(DecryptionFailed):
            _open(replace(sealed, wrapped_key=wrong), keyring)
    assert _open(sealed, keyring) == MARKER  # the KEK still works after all those refusals


def test_a_flipped_byte_of_the_ciphertext_or_nonce_is_detected(keyring: KeyRing) -> None:
    sealed = _seal(keyring)
    for index in (0, len(MARKER) // 2, len(sealed.ciphertext) - 1):
        with pytest.raises(DecryptionFailed):
            _open(replace(sealed, ciphertext=_flip(sealed.ciphertext, index)), keyring)
    with pytest.raises(DecryptionFailed):
        _open(replace(sealed, nonce=_flip(sealed.nonce, 5)), keyring)


def test_a_wrapped_key_opens_under_its_own_kek_only(keyring: KeyRing) -> None:
    sealed = _seal(keyring)
    second = keyring.new_kek()
    with pytest.raises(DecryptionFailed):
        second.unwrap(sealed.wrapped_key)
    with pytest.raises(DecryptionFailed):
        _open(replace(sealed, kek_id=second.kek_id), keyring)
    with pytest.raises(DecryptionFailed):
        _open(replace(sealed, kek_id="kek-0404"), keyring)


def test_rotation_rewraps_without_touching_the_ciphertext(keyring: KeyRing) -> None:
    documents = {
        f"doc-{n}": seal(
            MARKER + bytes([n]), document_id=f"doc-{n}", version=1, kek=keyring.current
        )
        for n in range(5)
    }
    new = keyring.new_kek()
    assert (new.kek_id, keyring.current.kek_id) == ("kek-0002", "kek-0002")
    moved = {doc: rewrap(sealed, keyring, new) for doc, sealed in documents.items()}
    for doc, sealed in moved.items():
        assert sealed.kek_id == "kek-0002"
        assert sealed.ciphertext == documents[doc].ciphertext
        assert sealed.nonce == documents[doc].nonce
    keyring.retire("kek-0001")
    assert keyring.kek_ids() == ["kek-0002"]
    for n, (doc, sealed) in enumerate(moved.items()):
        assert open_sealed(sealed, document_id=doc, version=1, keyring=keyring) == MARKER + bytes(
            [n]
        )
        with pytest.raises(DecryptionFailed):  # what was not re-wrapped is gone with its KEK
            open_sealed(documents[doc], document_id=doc, version=1, keyring=keyring)


def test_the_current_kek_cannot_be_retired(keyring: KeyRing) -> None:
    with pytest.raises(KeySourceError, match="rotate first"):
        keyring.retire("kek-0001")
    with pytest.raises(UnknownKek):
        keyring.open_kek("kek-0002")


def test_a_second_keyring_finds_the_same_keks(key_source: str, keyring: KeyRing) -> None:
    sealed = _seal(keyring)
    second = open_keyring(key_source)
    try:
        assert _open(sealed, second) == MARKER
        second.new_kek()
        keyring.refresh()
        assert keyring.current.kek_id == "kek-0002"
        assert (
            _open(seal(b"x", document_id="doc-9", version=2, kek=second.current), keyring) == b"x"
        )
    finally:
        second.close()
    assert _open(sealed, keyring) == MARKER  # closing one ring leaves the other working


def test_one_keyring_serves_many_threads_at_once(keyring: KeyRing) -> None:
    def work(worker: int) -> int:
        for n in range(40):
            plaintext = MARKER + f"{worker}/{n}".encode()
            document = f"doc-{worker}-{n}"
            sealed = seal(plaintext, document_id=document, version=1, kek=keyring.current)
            opened = open_sealed(sealed, document_id=document, version=1, keyring=keyring)
            assert opened == plaintext
        return worker

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sorted(pool.map(work, range(8))) == list(range(8))


def test_closing_twice_is_harmless(key_source: str) -> None:
    ring = open_keyring(key_source)
    ring.close()
    ring.close()


# --- SoftHSM only ----------------------------------------------------------------------------


def _raw_session(softhsm: SoftHsm) -> pkcs11.Session:
    token = pkcs11.lib(str(SOFTHSM_MODULE)).get_token(token_label=TOKEN)
    try:
        return token.open(rw=True, user_pin=PIN)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        return token.open(rw=True)


def test_the_kek_is_generated_in_the_token_and_cannot_leave_it(softhsm: SoftHsm) -> None:
    with open_keyring(softhsm.key_source) as ring:
        ring.initialize()
        with _raw_session(softhsm) as session:
            key = session.get_key(object_class=ObjectClass.SECRET_KEY, label="kek-0001")
            assert key.key_type == KeyType.AES
            assert key[Attribute.VALUE_LEN] == 32
            assert key[Attribute.ID] == b"kek-0001"
            assert key[Attribute.TOKEN] is True
            assert key[Attribute.PRIVATE] is True
            assert key[Attribute.SENSITIVE] is True
            assert key[Attribute.ALWAYS_SENSITIVE] is True
            assert key[Attribute.EXTRACTABLE] is False
            assert key[Attribute.NEVER_EXTRACTABLE] is True
            assert key[Attribute.LOCAL] is True  # generated inside, never imported
            assert key[Attribute.WRAP] is False
            assert key[Attribute.DERIVE] is False
            with pytest.raises(AttributeSensitive):
                key[Attribute.VALUE]
            exporter = session.generate_key(
                KeyType.AES, 256, label="exporter", template={Attribute.WRAP: True}
            )
            with pytest.raises(PKCS11Error):  # KeyUnextractable on SoftHSM
                exporter.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)  # type: ignore[attr-defined]


def test_an_extractable_key_posing_as_a_kek_is_refused(softhsm: SoftHsm) -> None:
    with open_keyring(softhsm.key_source) as ring:
        ring.initialize()
        with _raw_session(softhsm) as session:
            session.generate_key(
                KeyType.AES,
                256,
                label="kek-0002",
                store=True,
                template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
            )
        ring.refresh()
        with pytest.raises(KeySourceError, match="extractable"):
            _ = ring.current


def test_a_second_process_opens_the_token_by_label_and_finds_the_kek(softhsm: SoftHsm) -> None:
    with open_keyring(softhsm.key_source) as ring:
        ring.initialize()
        sealed = _seal(ring)
        child = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=json.dumps(
                {
                    "key_source": softhsm.key_source,
                    "kek_id": sealed.kek_id,
                    "wrapped_key": sealed.wrapped_key.hex(),
                    "nonce": sealed.nonce.hex(),
                    "ciphertext": sealed.ciphertext.hex(),
                }
            ),
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "SOFTHSM2_CONF": str(softhsm.conf), PIN_ENV: PIN},
            timeout=60,
            check=False,
        )
        assert child.returncode == 0, child.stderr
        answer = json.loads(child.stdout)
        assert answer["kek_ids_seen"] == ["kek-0001"]
        assert bytes.fromhex(answer["plaintext"]) == MARKER
        # The child rotated: this process sees its KEK and opens what it sealed with it.
        ring.refresh()
        assert ring.current.kek_id == "kek-0002"
        theirs = SealedContent(
            kek_id=answer["sealed"]["kek_id"],
            wrapped_key=bytes.fromhex(answer["sealed"]["wrapped_key"]),
            nonce=bytes.fromhex(answer["sealed"]["nonce"]),
            ciphertext=bytes.fromhex(answer["sealed"]["ciphertext"]),
        )
        assert theirs.kek_id == "kek-0002"
        assert open_sealed(theirs, document_id="doc-child", version=1, keyring=ring) == b"child"


_CHILD = """
import json, sys
from carevault.adapters.crypto import SealedContent, open_keyring, open_sealed, seal
job = json.load(sys.stdin)
with open_keyring(job["key_source"]) as ring:
    seen = ring.kek_ids()
    sealed = SealedContent(job["kek_id"], bytes.fromhex(job["wrapped_key"]),
                           bytes.fromhex(job["nonce"]), bytes.fromhex(job["ciphertext"]))
    plaintext = open_sealed(sealed, document_id="doc-9", version=2, keyring=ring)
    mine = seal(b"child", document_id="doc-child", version=1, kek=ring.new_kek())
json.dump({"kek_ids_seen": seen, "plaintext": plaintext.hex(), "sealed": {
    "kek_id": mine.kek_id, "wrapped_key": mine.wrapped_key.hex(), "nonce": mine.nonce.hex(),
    "ciphertext": mine.ciphertext.hex()}}, sys.stdout)
"""


def test_the_wrong_pin_is_refused_without_showing_it(
    softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PIN_ENV, "0000-0000")
    with pytest.raises(KeySourceError, match=f"refused the PIN in {PIN_ENV}") as failure:
        open_keyring(softhsm.key_source)
    assert "0000-0000" not in str(failure.value)


def test_an_unknown_token_label_is_named(softhsm: SoftHsm) -> None:
    source = softhsm.key_source.replace(f"token={TOKEN}", "token=no-such-token")
    with pytest.raises(KeySourceError, match="no PKCS#11 token labelled 'no-such-token'"):
        open_keyring(source)


def test_a_kek_is_created_only_once_in_the_token(softhsm: SoftHsm) -> None:
    with open_keyring(softhsm.key_source) as ring:
        ring.initialize()
        store = ring._store  # the store itself: the ring never asks twice
        with pytest.raises(KeySourceError, match="already exists"):
            store.create_kek("kek-0001")
        assert ring.kek_ids() == ["kek-0001"]
