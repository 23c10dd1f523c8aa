"""What secure messaging (services/messaging.py) reads of the PKI store besides what
`support.fake_accounts.FakePkiStore` answers: a client's valid, unrevoked encryption
certificates, newest first. Kept in its own module so that the shared fakes stay as they are.

The real store answers the same: tests/integration/test_store_contracts_ops.py.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from carevault.adapters.storage.pki_store import CertificateRecord
from support.fake_accounts import FakePkiStore
from support.fake_professionals import professional_unit_of_work
from support.fake_uow import FakeUnitOfWork


class FakeMessagingPkiStore(FakePkiStore):
    """`PkiStore`, in memory, with the encryption certificates of a client."""

    def encryption_certificates(self, client_id: str, now: datetime) -> list[CertificateRecord]:
        found = [
            c for c in self.certificates.values()
            if c.kind == "encryption" and c.client_id.lower() == client_id.lower()
            and c.revoked_at is None and c.not_before <= now < c.not_after
        ]
        # Newest first, then by serial: the real store's ORDER BY.
        found.sort(key=lambda c: c.serial)
        found.sort(key=lambda c: c.not_before, reverse=True)
        return found

    def encryption_certificates_of(self, practitioner_ids: Collection[str] | None, *,
                                   client_id: str | None = None) -> list[CertificateRecord]:
        found = [c for c in self.certificates.values()
                 if c.kind == "encryption" and c.practitioner_id is not None
                 and (practitioner_ids is None or c.practitioner_id in practitioner_ids)
                 and (client_id is None or c.client_id.lower() == client_id.lower())]
        # By practitioner, then newest first, then by serial: the real store's ORDER BY.
        found.sort(key=lambda c: c.serial)
        found.sort(key=lambda c: c.not_before, reverse=True)
        return sorted(found, key=lambda c: c.practitioner_id or "")


    def count_encryption_holders(self) -> int:
        return len({c.practitioner_id for c in self.certificates.values()
                    if c.kind == "encryption" and c.practitioner_id is not None})


def messaging_unit_of_work() -> FakeUnitOfWork:
    """A fake unit of work whose directory knows practitioners and their roles
    (`support.fake_professionals`) and whose PKI store knows encryption certificates."""
    uow = professional_unit_of_work()
    uow.pki = FakeMessagingPkiStore()
    return uow
