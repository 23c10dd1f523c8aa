"""The fakes the unit tests of messaging, the chores, backups and the audit log use answer as
the real stores do: the same checks run on them and on the real ones (SQLite and PostgreSQL),
as tests/integration/test_store_contracts.py does for the other fakes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from carevault.adapters.storage.pki_store import CertificateRecord
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from support.contracts import Reused
from support.fake_messaging import messaging_unit_of_work

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _certificate(serial: str, client_id: str, kind: str = "encryption", *, days: int = 0,
                 lifetime: int = 365) -> CertificateRecord:
    start = NOW + timedelta(days=days)
    return CertificateRecord(serial, client_id, kind, "pr-1", None, f"CN={client_id}", start,
                             start + timedelta(days=lifetime), f"PEM {serial}")


# --- encryption certificates (services/messaging.py) -------------------------------------------


def check_encryption_certificates(uow: Any) -> None:
    with uow:
        for record in (
            _certificate("a1", "HP-1", days=-10),
            _certificate("a3", "HP-1", days=-2),
            _certificate("a2", "HP-1", days=-2),  # as new as a3: by serial
            _certificate("b1", "hp-1", days=-1),  # the client_id in another case is the same
            _certificate("c1", "HP-1", "practitioner", days=-1),  # a card, not for messages
            _certificate("d1", "HP-1", days=-400),  # expired
            _certificate("e1", "HP-1", days=1),  # not valid yet
            _certificate("f1", "HP-1", days=-3),  # revoked below
            _certificate("g1", "HP-2", days=-1),  # another professional
        ):
            uow.pki.add_certificate(record)
        uow.commit()
    with uow:
        assert uow.pki.revoke("f1", NOW, "keyCompromise") is True
        uow.commit()
    with uow:
        found = uow.pki.encryption_certificates("Hp-1", NOW)
        assert [c.serial for c in found] == ["b1", "a2", "a3", "a1"]
        assert found[1] == _certificate("a2", "HP-1", days=-2)
        assert [c.serial for c in uow.pki.encryption_certificates("HP-2", NOW)] == ["g1"]
        assert uow.pki.encryption_certificates("HP-3", NOW) == []
        # Valid from not_before included to not_after excluded.
        at_start = uow.pki.encryption_certificates("HP-1", NOW + timedelta(days=1))
        assert "e1" in {c.serial for c in at_start}
        at_end = uow.pki.encryption_certificates("HP-1", NOW + timedelta(days=355))
        assert "a1" not in {c.serial for c in at_end} and "a2" in {c.serial for c in at_end}


def check_encryption_certificates_of(uow: Any) -> None:
    """Every encryption certificate of the practitioners named (revoked and expired too), by
    practitioner, then newest first: what the directory publishes of their mailboxes."""
    def of(serial: str, practitioner: str | None, kind: str = "encryption",
           days: int = 0) -> CertificateRecord:
        client_id = "HP-3" if practitioner == "pr-3" else "HP-X"
        return replace(_certificate(serial, client_id, kind, days=days),
                       practitioner_id=practitioner)

    with uow:
        for record in (
            of("p2-old", "pr-2", days=-30),
            of("p1-new", "pr-1", days=-1),
            of("p1-old", "pr-1", days=-400),  # expired: still listed
            of("p1-b", "pr-1", days=-1),  # as new as p1-new: by serial
            of("p1-card", "pr-1", "practitioner"),  # a card is no mailbox
            of("org", None),  # no practitioner's
            of("p3", "pr-3", days=-5),
        ):
            uow.pki.add_certificate(record)
        uow.commit()
    with uow:
        assert uow.pki.revoke("p2-old", NOW, "keyCompromise") is True
        uow.commit()
    with uow:
        found = uow.pki.encryption_certificates_of(["pr-1", "pr-2", "pr-9"])
        assert [c.serial for c in found] == ["p1-b", "p1-new", "p1-old", "p2-old"]
        assert found[3].revoked_at == NOW and found[3].revocation_reason == "keyCompromise"
        assert uow.pki.encryption_certificates_of([]) == []
        every = uow.pki.encryption_certificates_of(None)
        assert [c.serial for c in every] == ["p1-b", "p1-new", "p1-old", "p2-old", "p3"]
        # By directory identifier, in any case; with practitioners, both must hold.
        assert [c.serial for c in uow.pki.encryption_certificates_of(None, client_id="hp-3")] \
            == ["p3"]
        assert uow.pki.encryption_certificates_of(["pr-1"], client_id="HP-3") == []


def test_the_fake_encryption_certificates_of() -> None:
    check_encryption_certificates_of(messaging_unit_of_work())


def test_the_real_encryption_certificates_of(uow: Callable[[], SqlUnitOfWork]) -> None:
    check_encryption_certificates_of(Reused(uow))


def test_the_fake_encryption_certificates() -> None:
    check_encryption_certificates(messaging_unit_of_work())


def test_the_real_encryption_certificates(uow: Callable[[], SqlUnitOfWork]) -> None:
    check_encryption_certificates(Reused(uow))
