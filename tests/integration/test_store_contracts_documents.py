"""The fakes of `support.fake_documents` answer as the real stores do: the same checks on the
fake unit of work and on the real one (SQLite and PostgreSQL), as `test_store_contracts.py`
does for the other fakes. Covered: the PKI's authorities and certificates (what an author's
signature is checked against), the purge of a record's documents and which closed records
still hold some (the retention job), the notifications' outbox (the mail chore)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from carevault.adapters.storage.account_store import AccountRecord
from carevault.adapters.storage.document_store import SealedParts
from carevault.adapters.storage.pki_store import CertificateRecord, StoredAuthority
from carevault.adapters.storage.unit_of_work import UnitOfWork
from carevault.domain.accounts import AccountKind
from carevault.domain.authorization import Confidentiality, RecordState
from carevault.domain.documents import Coding, DocumentMetadata, DocumentStatus
from carevault.services import directory as svc
from carevault.services.directory import DirectoryContext
from support.builders import patient
from support.contracts import Reused
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CONTENT = SealedParts("kek-1", b"wrapped", b"nonce-12byte", b"ciphertext")
TEXT = SealedParts("kek-2", b"wrapped", b"nonce-12byte", b"title")


def _patients(uow: Callable[[], UnitOfWork], ctx: DirectoryContext, count: int) -> list[str]:
    with uow() as unit:
        stored = svc.register_patients(unit, ctx, [patient(ctx.systems, n + 1)
                                                   for n in range(count)])
    return [s.id for s in stored]


# --- the PKI ---------------------------------------------------------------------------------


def _certificate(serial: str) -> CertificateRecord:
    return CertificateRecord(serial, "system:ORG-1", "system", None, None, "CN=x", NOW,
                             NOW + timedelta(days=365), f"PEM {serial}")


def check_pki_store(uow: Any) -> None:
    root = StoredAuthority("root", "root PEM", "root sealed key", NOW)
    issuing = StoredAuthority("issuing", "issuing PEM", "issuing sealed key", NOW)
    with uow:
        assert uow.pki.authorities() == {}
        assert uow.pki.add_authorities([root, issuing]) is True
        uow.pki.add_certificate(_certificate("1a"))
        uow.pki.add_certificate(_certificate("2b"))
        uow.commit()
    with uow:  # a second 'pki init' loses (its transaction is then rolled back)
        assert uow.pki.add_authorities([root, issuing]) is False
    with uow:
        assert uow.pki.authorities() == {"root": root, "issuing": issuing}
        assert uow.pki.certificate("1a") == _certificate("1a")
        assert uow.pki.certificate("ff") is None
        assert uow.pki.revoke("1a", NOW + timedelta(hours=1), "keyCompromise") is True
        assert uow.pki.revoke("1a", NOW + timedelta(hours=2), "superseded") is False
        assert uow.pki.revoke("ff", NOW, "superseded") is False
        uow.commit()
    with uow:
        revoked = uow.pki.certificate("1a")
        assert (revoked.revoked_at, revoked.revocation_reason) == (
            NOW + timedelta(hours=1), "keyCompromise")
        assert uow.pki.revoke("2b", NOW, "superseded") is True  # not committed
    with uow:
        assert uow.pki.certificate("2b") == _certificate("2b")


def test_the_fake_pki_store() -> None:
    check_pki_store(FakeUnitOfWork())


def test_the_real_pki_store(uow: Callable[[], UnitOfWork]) -> None:
    check_pki_store(Reused(uow))


# --- documents of closed records, and their purge ----------------------------------------------

AddDocument = Callable[[Any, str, str], None]


def _metadata(document_id: str, patient_id: str) -> DocumentMetadata:
    loinc = Coding("http://loinc.org", "11490-0")
    return DocumentMetadata(
        id=document_id, patient_id=patient_id, master_identifier=f"urn:oid:1.2.{document_id}",
        status=DocumentStatus("current"), class_code=loinc, type_code=loinc,
        format_code=Coding("urn:ihe:iti:xds:2017:mimeTypeSufficient", "urn:ihe:iti:xds"),
        practice_setting=Coding("http://snomed.info/sct", "394802001"),
        facility_type=Coding("http://snomed.info/sct", "22232009"),
        confidentiality=Confidentiality.N, engine_class="report", author_id="dr-1",
        author_organization_id="org-1", content_type="application/pdf", size=10,
        sha256="0" * 64, sha1=None, indexed=NOW)


def _add_real(unit: Any, document_id: str, patient_id: str) -> None:
    unit.documents.add([(_metadata(document_id, patient_id), CONTENT, TEXT)], NOW)


def _add_fake(unit: Any, document_id: str, patient_id: str) -> None:
    unit.documents.add_sealed(document_id, patient_id, CONTENT, TEXT)


def _set_record(unit: Any, patient_id: str, closed: bool, at: datetime) -> None:
    if isinstance(unit, FakeUnitOfWork):
        unit.records.set_record(patient_id, closed=closed, updated_at=at)
    elif closed:
        unit.records.update_record(patient_id, at, state=RecordState.CLOSED)
    else:
        unit.records.update_record(patient_id, at, state=RecordState.ACTIVE)


def check_closed_records_and_their_purge(uow: Any, add: AddDocument, patients: list[str]) -> None:
    old, later, active, empty = patients
    with uow:
        for n, owner in enumerate([old, old, later, active]):
            add(uow, f"doc{n}", owner)
        _set_record(uow, old, True, NOW)
        _set_record(uow, later, True, NOW + timedelta(seconds=1))
        _set_record(uow, active, False, NOW)
        _set_record(uow, empty, True, NOW)
        uow.commit()
    with uow:
        assert uow.records.closed_with_documents(NOW - timedelta(seconds=1), 10) == []
        assert uow.records.closed_with_documents(NOW, 10) == [old]
        due = uow.records.closed_with_documents(NOW + timedelta(seconds=1), 10)
        assert due == sorted([old, later])
        assert uow.records.closed_with_documents(NOW + timedelta(days=1), 1) == due[:1]
        assert uow.documents.kek_usage() == {"kek-1": 4, "kek-2": 4}
        assert uow.documents.purge_record(old) == ["doc0", "doc1"]
        assert uow.documents.purge_record(old) == []
        assert uow.documents.purge_record(empty) == []
        assert uow.records.closed_with_documents(NOW + timedelta(days=1), 10) == [later]
        assert uow.documents.kek_usage() == {"kek-1": 2, "kek-2": 2}
        uow.commit()
    with uow:
        assert uow.documents.kek_usage() == {"kek-1": 2, "kek-2": 2}
        assert uow.documents.purge_record(later) == ["doc2"]  # not committed
    with uow:
        assert uow.records.closed_with_documents(NOW + timedelta(days=1), 10) == [later]
        assert [i for i, _ in uow.documents.contents_not_under("kek-9", after="", limit=9)] == [
            "doc2", "doc3"]


def test_the_fake_closed_records_and_their_purge() -> None:
    check_closed_records_and_their_purge(FakeUnitOfWork(), _add_fake,
                                         ["pat-1", "pat-2", "pat-3", "pat-4"])


def test_the_real_closed_records_and_their_purge(
        uow: Callable[[], UnitOfWork], ctx: DirectoryContext) -> None:
    check_closed_records_and_their_purge(Reused(uow), _add_real, _patients(uow, ctx, 4))


# --- the notifications' outbox -------------------------------------------------------------


def check_outbox(uow: Any, patients: list[str], accounts: dict[str, str]) -> None:
    """``accounts``: the patient account's id of the first two patients (their logins: an
    address, and one that is not); the third has no account."""
    mailed, unaddressed, unknown = patients
    with uow:
        uow.records.notify(unknown, "new-document", {"n": 1}, NOW)
        late = uow.records.notify(mailed, "grant-create", {"n": 2}, NOW + timedelta(minutes=2),
                                  account_id=accounts[mailed])
        early = uow.records.notify(unaddressed, "care-event", {}, NOW + timedelta(minutes=1))
        uow.commit()
    with uow:
        waiting = uow.records.unmailed(10)
        assert [(n.id, login) for n, login in waiting] == [
            (early, "not-an-address"), (late, "anne@example.org")]
        first, second = (n for n, _ in waiting)
        assert (first.patient_id, first.kind, first.payload, first.created_at,
                first.account_id) == (unaddressed, "care-event", {}, NOW + timedelta(minutes=1),
                                      None)
        assert (second.patient_id, second.kind, second.payload, second.account_id) == (
            mailed, "grant-create", {"n": 2}, accounts[mailed])
        assert [n.id for n, _ in uow.records.unmailed(1)] == [early]
        uow.records.mark_mailed([], NOW)
        uow.records.mark_mailed([early, "unknown-id"], NOW)
        uow.commit()
    with uow:
        assert [n.id for n, _ in uow.records.unmailed(10)] == [late]
        uow.records.mark_mailed([late], NOW)  # not committed
    with uow:
        assert [n.id for n, _ in uow.records.unmailed(10)] == [late]


def test_the_fake_outbox() -> None:
    fake = FakeUnitOfWork()
    fake.records.logins.update({"pat-1": "anne@example.org", "pat-2": "not-an-address"})
    check_outbox(fake, ["pat-1", "pat-2", "pat-3"], {"pat-1": "acc-1", "pat-2": "acc-2"})


def test_the_real_outbox(uow: Callable[[], UnitOfWork], ctx: DirectoryContext) -> None:
    patients = _patients(uow, ctx, 3)
    accounts = {}
    with uow() as unit:
        for n, login in enumerate(["anne@example.org", "not-an-address"]):
            accounts[patients[n]] = f"acc-{n}"
            unit.accounts.add(AccountRecord(f"acc-{n}", AccountKind.PATIENT, login, "hash",
                                            b"sealed", None, patients[n], frozenset(), NOW))
        unit.commit()
    check_outbox(Reused(uow), patients, accounts)
