"""Key rotation, on a unit of work in memory: every data key and sealed text moves under the
new KEK in batches, one transaction per batch, with its progress told; a KEK is retired only
when nothing uses it and it is not current."""

from __future__ import annotations

import pytest

from carevault.adapters.storage.document_store import SealedParts
from carevault.domain.errors import BusinessRuleViolation
from carevault.services.key_rotation import remaining, retire, rewrap_all, rotate, usage
from support.fake_uow import FakeUnitOfWork


class Vault:
    """A key vault that re-wraps by renaming: the data key's bytes name the KEK they are
    wrapped with, so that a test sees what was re-wrapped."""

    def __init__(self) -> None:
        self.keks = ["kek-1"]
        self.retired: list[str] = []

    @property
    def current_kek(self) -> str:
        return self.keks[-1]

    def kek_ids(self) -> list[str]:
        return list(self.keks)

    def new_kek(self) -> str:
        self.keks.append(f"kek-{len(self.keks) + 1}")
        return self.keks[-1]

    def refresh(self) -> None:
        pass

    def retire(self, kek_id: str) -> None:
        self.keks.remove(kek_id)
        self.retired.append(kek_id)

    def rewrap(self, sealed: SealedParts) -> SealedParts:
        return SealedParts(self.current_kek, self.current_kek.encode(), sealed.nonce,
                           sealed.ciphertext)


@pytest.fixture
def uow() -> FakeUnitOfWork:
    fake = FakeUnitOfWork()
    for n in range(7):
        fake.documents.contents[f"doc-{n}"] = SealedParts("kek-1", b"kek-1", b"n", b"c")
    for n in range(3):
        fake.documents.texts[f"doc-{n}"] = SealedParts("kek-1", b"kek-1", b"n", b"t")
    return fake


def test_rotation_moves_every_key_under_the_new_kek_in_batches(uow: FakeUnitOfWork) -> None:
    vault = Vault()
    told: list[tuple[int, int]] = []
    report = rotate(lambda: uow, vault, batch=3, progress=lambda d, r: told.append((d, r)))
    assert (report.kek_id, report.rewrapped) == ("kek-2", 10)
    assert usage(lambda: uow) == {"kek-2": 10}
    assert all(p.wrapped_key == b"kek-2" for p in uow.documents.contents.values())
    assert {p.ciphertext for p in uow.documents.texts.values()} == {b"t"}  # text kept
    assert uow.commits == 4  # 3 + 3 + 1 contents, then 3 texts: one transaction per batch
    assert told[0] == (3, 7) and told[-1] == (10, 0)


def test_a_rotation_interrupted_is_finished_by_the_next_run(uow: FakeUnitOfWork) -> None:
    vault = Vault()
    vault.new_kek()
    uow.documents.contents["doc-0"] = SealedParts("kek-2", b"kek-2", b"n", b"c")  # done before
    assert remaining(lambda: uow, "kek-2") == 9
    report = rewrap_all(lambda: uow, vault, batch=100)
    assert report.rewrapped == 9 and remaining(lambda: uow, "kek-2") == 0


def test_a_kek_in_use_or_current_is_not_retired(uow: FakeUnitOfWork) -> None:
    vault = Vault()
    vault.new_kek()
    with pytest.raises(BusinessRuleViolation, match="still wraps 10"):
        retire(lambda: uow, vault, "kek-1")
    with pytest.raises(BusinessRuleViolation, match="current"):
        retire(lambda: uow, vault, "kek-2")
    rewrap_all(lambda: uow, vault)
    retire(lambda: uow, vault, "kek-1")
    assert vault.retired == ["kek-1"] and vault.keks == ["kek-2"]
