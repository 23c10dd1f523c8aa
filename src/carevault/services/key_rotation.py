"""Rotating the documents' key-encryption key without decrypting a single document.

``rotate`` makes a new KEK current, then re-wraps every data key still wrapped by an older one,
in batches, each batch its own transaction: an interruption loses nothing and running it again
carries on where it stopped (rows already under the current KEK are skipped). A row is only
changed if it is still under the KEK it was read with, so a concurrent writer never loses an
update. Servers seal with the new KEK once they re-read the key ring (within their
``recheck`` period), so the last pass waits for stragglers until no row uses an old KEK.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from carevault.adapters.storage.document_store import SealedParts
from carevault.domain.errors import BusinessRuleViolation
from carevault.services.unit_of_work import UnitOfWork

Progress = Callable[[int, int], None]  # (done, still to do when last counted)


class KeyVault(Protocol):
    @property
    def current_kek(self) -> str: ...

    def kek_ids(self) -> list[str]: ...

    def new_kek(self) -> str: ...

    def refresh(self) -> None: ...

    def retire(self, kek_id: str) -> None: ...

    def rewrap(self, sealed: SealedParts) -> SealedParts: ...


@dataclass(frozen=True)
class RotationReport:
    kek_id: str
    rewrapped: int
    passes: int


def usage(units: Callable[[], UnitOfWork]) -> dict[str, int]:
    with units() as uow:
        return uow.documents.kek_usage()


def rewrap_all(
    units: Callable[[], UnitOfWork],
    vault: KeyVault,
    *,
    batch: int = 500,
    progress: Progress | None = None,
    max_passes: int = 10,
) -> RotationReport:
    """Re-wrap every data key under the current KEK (resumable; see the module docstring)."""
    target = vault.current_kek
    done = passes = 0
    while passes < max_passes:
        passes += 1
        moved = 0
        for kind in ("content", "text"):
            after = ""
            while True:
                with units() as uow:
                    store = uow.documents
                    rows = (
                        store.contents_not_under(target, after=after, limit=batch)
                        if kind == "content"
                        else store.texts_not_under(target, after=after, limit=batch)
                    )
                    if not rows:
                        break
                    for document_id, sealed in rows:
                        fresh = vault.rewrap(sealed)
                        changed = (
                            store.set_content_key(
                                document_id, sealed.kek_id, fresh.kek_id, fresh.wrapped_key
                            )
                            if kind == "content"
                            else store.set_text(document_id, sealed.kek_id, fresh)
                        )
                        moved += int(changed)
                    after = rows[-1][0]
                    uow.commit()
                done += len(rows)
                if progress is not None:
                    progress(done, remaining(units, target))
        if moved == 0 and remaining(units, target) == 0:
            break
    return RotationReport(target, done, passes)


def remaining(units: Callable[[], UnitOfWork], kek_id: str) -> int:
    return sum(count for kek, count in usage(units).items() if kek != kek_id)


def rotate(
    units: Callable[[], UnitOfWork],
    vault: KeyVault,
    *,
    batch: int = 500,
    progress: Progress | None = None,
) -> RotationReport:
    """Create a new KEK, make it current, and re-wrap everything under it."""
    vault.new_kek()
    vault.refresh()
    return rewrap_all(units, vault, batch=batch, progress=progress)


def retire(units: Callable[[], UnitOfWork], vault: KeyVault, kek_id: str) -> None:
    """Destroy a KEK nothing uses any more; refuse while any document still needs it."""
    if kek_id == vault.current_kek:
        raise BusinessRuleViolation(f"{kek_id} is the current key-encryption key")
    still = usage(units).get(kek_id, 0)
    if still:
        raise BusinessRuleViolation(
            f"{kek_id} still wraps {still} data key(s): run 'carevault keys rotate' to finish"
        )
    vault.retire(kek_id)
