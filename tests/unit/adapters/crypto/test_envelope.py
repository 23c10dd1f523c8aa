"""The envelope: fresh data key per seal, AES-256-GCM bound to document/version/purpose, rewrap.

Local KEKs over an in-memory store; the same contract against SoftHSM is in
tests/integration/test_pkcs11_kek.py.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from carevault.adapters.crypto import (
    CONTENT,
    DecryptionFailed,
    KeyRing,
    LocalKek,
    SealedContent,
    associated_data,
    metadata_purpose,
    open_sealed,
    rewrap,
    seal,
)
from carevault.adapters.crypto.envelope import AAD_LABEL
from carevault.domain.errors import CareVaultError, IntegrityFailure

MARKER = b"CAREVAULT-PLAINTEXT-MARKER-7f3a"


def _flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def _sealed(keyring: KeyRing, plaintext: bytes = MARKER * 4) -> SealedContent:
    return seal(plaintext, document_id="doc-1", version=3, kek=keyring.current)


def _open(sealed: SealedContent, keyring: KeyRing, **binding: object) -> bytes:
    where: dict[str, object] = {"document_id": "doc-1", "version": 3, **binding}
    return open_sealed(sealed, keyring=keyring, **where)  # type: ignore[arg-type]


# --- round trips -----------------------------------------------------------------------------


def test_seal_then_open_returns_the_plaintext(keyring: KeyRing) -> None:
    sealed = _sealed(keyring)
    assert _open(sealed, keyring) == MARKER * 4
    assert sealed.kek_id == "kek-0001"
    assert len(sealed.nonce) == 12
    assert len(sealed.wrapped_key) == 40  # AES-KW of a 256-bit key
    assert len(sealed.ciphertext) == len(MARKER * 4) + 16  # the GCM tag rides along


def test_the_empty_document_seals_too(keyring: KeyRing) -> None:
    sealed = seal(b"", document_id="doc-1", version=3, kek=keyring.current)
    assert len(sealed.ciphertext) == 16
    assert _open(sealed, keyring) == b""


def test_metadata_seals_under_its_own_purpose(keyring: KeyRing) -> None:
    title = "Compte rendu opératoire — Müller".encode()
    sealed = seal(
        title,
        document_id="doc-1",
        version=3,
        kek=keyring.current,
        purpose=metadata_purpose("title"),
    )
    assert _open(sealed, keyring, purpose="metadata/title") == title
    for other in (CONTENT, metadata_purpose("description")):
        with pytest.raises(DecryptionFailed):
            _open(sealed, keyring, purpose=other)


def test_nothing_in_a_sealed_row_reveals_the_plaintext(keyring: KeyRing) -> None:
    sealed = _sealed(keyring)
    for field in (sealed.kek_id.encode(), sealed.wrapped_key, sealed.nonce, sealed.ciphertext):
        assert MARKER not in field
        assert MARKER[:8] not in field


def test_every_seal_draws_a_new_data_key_and_nonce(keyring: KeyRing) -> None:
    first, second = _sealed(keyring), _sealed(keyring)
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext
    kek = keyring.current
    assert kek.unwrap(first.wrapped_key) != kek.unwrap(second.wrapped_key)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=1 << 20),
    seed=st.integers(min_value=0, max_value=2**32),
    document_id=st.text(min_size=1, max_size=64),
    version=st.integers(min_value=0, max_value=2**64 - 1),
)
@example(size=0, seed=0, document_id="d", version=0)
@example(size=1 << 20, seed=1, document_id="doc-1", version=1)
def test_any_plaintext_up_to_a_megabyte_round_trips(
    size: int, seed: int, document_id: str, version: int
) -> None:
    # A hypothesis-drawn *size* and seed rather than drawn bytes: generating a megabyte byte by
    # byte would take the whole test budget.
    plaintext = random.Random(seed).randbytes(size)
    kek = LocalKek("kek-0001", bytes(range(32)))
    lookup = _Lookup(kek)
    sealed = seal(plaintext, document_id=document_id, version=version, kek=kek)
    assert len(sealed.ciphertext) == size + 16
    assert (
        open_sealed(sealed, document_id=document_id, version=version, keyring=lookup) == plaintext
    )
    if size:
        position = seed % len(sealed.ciphertext)
        with pytest.raises(DecryptionFailed):
            open_sealed(
                replace(sealed, ciphertext=_flip(sealed.ciphertext, position)),
                document_id=document_id,
                version=version,
                keyring=lookup,
            )


class _Lookup:
    def __init__(self, kek: LocalKek) -> None:
        self.kek = kek

    def open_kek(self, kek_id: str) -> LocalKek:
        assert kek_id == self.kek.kek_id
        return self.kek


# --- the associated data ---------------------------------------------------------------------


def test_the_associated_data_bytes_are_exactly_as_documented() -> None:
    assert associated_data(document_id="doc-1", version=3) == (
        b"carevault/sealed/v1\x00\x00\x07content\x00\x05doc-1\x00\x00\x00\x00\x00\x00\x00\x03"
    )
    assert associated_data(document_id="é", version=2**64 - 1, purpose="metadata/title") == (
        AAD_LABEL + b"\x00\x0emetadata/title" + b"\x00\x02\xc3\xa9" + b"\xff" * 8
    )


@given(
    first=st.tuples(st.text(min_size=1, max_size=20), st.integers(0, 2**64 - 1)),
    second=st.tuples(st.text(min_size=1, max_size=20), st.integers(0, 2**64 - 1)),
    purposes=st.tuples(
        st.sampled_from(["content", "metadata/title", "metadata/description"]),
        st.sampled_from(["content", "metadata/title"]),
    ),
)
def test_distinct_bindings_never_share_associated_data(
    first: tuple[str, int], second: tuple[str, int], purposes: tuple[str, str]
) -> None:
    a = associated_data(document_id=first[0], version=first[1], purpose=purposes[0])
    b = associated_data(document_id=second[0], version=second[1], purpose=purposes[1])
    assert (a == b) == ((first, purposes[0]) == (second, purposes[1]))


@pytest.mark.parametrize(
    "binding",
    [
        {"document_id": "doc-2"},
        {"document_id": "doc-1 "},
        {"document_id": "DOC-1"},
        {"version": 2},
        {"version": 4},
        {"purpose": metadata_purpose("title")},
    ],
    ids=["other-document", "trailing-space", "case", "older-version", "newer-version", "purpose"],
)
def test_content_opens_only_where_it_was_sealed(
    keyring: KeyRing, binding: dict[str, object]
) -> None:
    sealed = _sealed(keyring)
    with pytest.raises(DecryptionFailed) as failure:
        _open(sealed, keyring, **binding)
    assert "does not authenticate" in failure.value.reason


@pytest.mark.parametrize(
    "bad",
    [
        {"document_id": ""},
        {"version": -1},
        {"version": 2**64},
        {"version": True},
        {"purpose": ""},
        {"purpose": "Content"},
        {"purpose": "metadata/"},
        {"purpose": "meta data"},
        {"purpose": "a" * 65},
    ],
)
def test_malformed_bindings_are_refused_before_any_crypto(bad: dict[str, object]) -> None:
    binding: dict[str, object] = {"document_id": "doc-1", "version": 1, "purpose": CONTENT, **bad}
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the field
        associated_data(**binding)  # type: ignore[arg-type]


# --- tampering -------------------------------------------------------------------------------


def test_every_flipped_byte_of_the_ciphertext_is_detected(keyring: KeyRing) -> None:
    sealed = _sealed(keyring, MARKER)
    for index in range(len(sealed.ciphertext)):  # the body and the tag
        with pytest.raises(DecryptionFailed):
            _open(replace(sealed, ciphertext=_flip(sealed.ciphertext, index)), keyring)


def test_every_flipped_byte_of_the_nonce_is_detected(keyring: KeyRing) -> None:
    sealed = _sealed(keyring)
    for index in range(len(sealed.nonce)):
        with pytest.raises(DecryptionFailed):
            _open(replace(sealed, nonce=_flip(sealed.nonce, index)), keyring)


def test_every_flipped_byte_of_the_wrapped_key_is_detected(keyring: KeyRing) -> None:
    sealed = _sealed(keyring)
    for index in range(len(sealed.wrapped_key)):
        with pytest.raises(DecryptionFailed) as failure:
            _open(replace(sealed, wrapped_key=_flip(sealed.wrapped_key, index)), keyring)
        assert "wrapped key" in failure.value.reason


@pytest.mark.parametrize(
    "change",
    [
        {"ciphertext": b""},
        {"ciphertext": b"\x00" * 15},
        {"nonce": b""},
        {"nonce": b"\x00" * 16},
        {"wrapped_key": b""},
        {"wrapped_key": b"\x00" * 40},
    ],
    ids=["no-ciphertext", "short-ciphertext", "no-nonce", "long-nonce", "no-key", "zero-key"],
)
def test_malformed_rows_fail_as_decryption_failures(
    keyring: KeyRing, change: dict[str, bytes]
) -> None:
    with pytest.raises(DecryptionFailed):
        _open(replace(_sealed(keyring), **change), keyring)  # type: ignore[arg-type]


def test_a_wrapped_key_does_not_open_under_another_kek(keyring: KeyRing) -> None:
    sealed = _sealed(keyring)
    keyring.new_kek()
    with pytest.raises(DecryptionFailed) as failure:
        _open(replace(sealed, kek_id="kek-0002"), keyring)
    assert "kek-0002" in failure.value.reason


@pytest.mark.parametrize("kek_id", ["kek-0099", "kek-1", "", "../../etc/passwd"])
def test_an_unknown_kek_is_a_decryption_failure(keyring: KeyRing, kek_id: str) -> None:
    with pytest.raises(DecryptionFailed) as failure:
        _open(replace(_sealed(keyring), kek_id=kek_id), keyring)
    assert "not available" in failure.value.reason


def test_a_decryption_failure_says_nothing_to_the_caller_and_everything_to_the_log(
    keyring: KeyRing,
) -> None:
    sealed = _sealed(keyring)
    with pytest.raises(DecryptionFailed) as wrong_version:
        _open(sealed, keyring, version=4)
    with pytest.raises(DecryptionFailed) as wrong_kek:
        _open(replace(sealed, kek_id="kek-0042"), keyring)
    assert isinstance(wrong_version.value, IntegrityFailure)
    assert isinstance(wrong_version.value, CareVaultError)
    assert str(wrong_version.value) == str(wrong_kek.value)  # one message for every cause
    assert "kek" not in str(wrong_kek.value)
    assert wrong_version.value.reason != wrong_kek.value.reason


# --- rotation --------------------------------------------------------------------------------


def test_rewrap_moves_the_data_key_and_leaves_the_ciphertext_alone(keyring: KeyRing) -> None:
    sealed = _sealed(keyring)
    new = keyring.new_kek()
    moved = rewrap(sealed, keyring, new)
    assert moved.kek_id == "kek-0002"
    assert moved.ciphertext == sealed.ciphertext
    assert moved.nonce == sealed.nonce
    assert moved.wrapped_key != sealed.wrapped_key
    assert new.unwrap(moved.wrapped_key) == keyring.open_kek("kek-0001").unwrap(sealed.wrapped_key)
    assert _open(moved, keyring) == MARKER * 4
    keyring.retire("kek-0001")
    assert _open(moved, keyring) == MARKER * 4
    with pytest.raises(DecryptionFailed):
        _open(sealed, keyring)


def test_rewrap_is_idempotent_so_a_rotation_can_resume(keyring: KeyRing) -> None:
    sealed = _sealed(keyring)
    assert rewrap(sealed, keyring, keyring.current) is sealed
    new = keyring.new_kek()
    once = rewrap(sealed, keyring, new)
    assert rewrap(once, keyring, new) is once


def test_rewrap_checks_the_old_wrapped_key(keyring: KeyRing) -> None:
    sealed = _sealed(keyring)
    new = keyring.new_kek()
    with pytest.raises(DecryptionFailed):
        rewrap(replace(sealed, wrapped_key=_flip(sealed.wrapped_key, 0)), keyring, new)


# --- nothing secret in a repr ----------------------------------------------------------------


def test_reprs_show_sizes_and_ids_never_bytes(keyring: KeyRing) -> None:
    sealed = _sealed(keyring)
    text = repr(sealed)
    assert text == (
        "SealedContent(kek_id='kek-0001', wrapped_key=<40 bytes>, nonce=<12 bytes>, "
        "ciphertext=<140 bytes>)"
    )
    key = bytes(range(32))
    kek = LocalKek("kek-0007", key)
    for shown in (repr(kek), str(kek), repr(keyring), repr(keyring.current)):
        assert key.hex() not in shown
        assert repr(key) not in shown
        assert "\\x" not in shown
    assert repr(kek) == "LocalKek(kek_id='kek-0007')"


def test_a_data_key_must_be_256_bits() -> None:
    kek = LocalKek("kek-0001", bytes(32))
    with pytest.raises(ValueError, match="256 bits"):
        kek.wrap(bytes(16))


def test_sealed_content_is_immutable(keyring: KeyRing) -> None:
    sealed = _sealed(keyring)
    with pytest.raises(AttributeError):
        sealed.kek_id = "kek-0002"  # type: ignore[misc]
