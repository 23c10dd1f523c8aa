"""The sealing of prescriptions' access codes: it opens for its own task with its own key, and
for nothing else (another task's row, another key file, a changed byte, an unknown format)."""

from __future__ import annotations

import os

import pytest

from carevault.adapters.security.sealed_codes import AccessCodeBox, CodeUnavailable
from carevault.domain.prescriptions import new_code


def test_a_sealed_code_opens_for_its_task_only() -> None:
    box = AccessCodeBox.derive(os.urandom(32))
    code = new_code()
    sealed = box.seal(code, "task-1")
    assert box.open(sealed, "task-1") == code
    assert code.encode() not in sealed and bytes.fromhex(code) not in sealed
    assert box.seal(code, "task-1") != sealed  # a fresh nonce each time
    with pytest.raises(CodeUnavailable):
        box.open(sealed, "task-2")
    with pytest.raises(CodeUnavailable):
        AccessCodeBox.derive(os.urandom(32)).open(sealed, "task-1")
    changed = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(CodeUnavailable):
        box.open(changed, "task-1")
    with pytest.raises(CodeUnavailable):
        box.open(b"\x02" + sealed[1:], "task-1")


def test_the_key_is_derived_with_its_own_label() -> None:
    """The same master key seals TOTP secrets under another label: neither opens the other's."""
    from carevault.adapters.security.totp import SecretUnavailable, TotpSecretBox

    master = os.urandom(32)
    sealed = AccessCodeBox.derive(master).seal("a" * 64, "x")
    with pytest.raises(SecretUnavailable):
        TotpSecretBox.derive(master).open(sealed, "x")
    with pytest.raises(ValueError, match="256 bits"):
        AccessCodeBox(b"short")
