"""The fakes of `support.fake_documents` answer as the real stores do: the same checks on the
fake unit of work and on the real one (SQLite and PostgreSQL), as `test_store_contracts.py`
does for the other fakes. Covered: the PKI's authorities and certificates (what an author's
signature is checked against), the purge of a record's documents and which closed records
still hold some (the retention job), the notifications' outbox (the mail chore), and the
documents themselves as the document services store and read them (metadata as read back,
content rows, searches under the engine's filter and the criteria, statuses, held documents,
SubmissionSets, the constraints)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from carevault.adapters.storage.account_store import AccountRecord
from carevault.adapters.storage.document_store import DocumentCriteria, SealedParts, StoredContent
from carevault.adapters.storage.pki_store import CertificateRecord, StoredAuthority
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.domain.accounts import AccountKind
from carevault.domain.authorization import Confidentiality, DocumentFilter, RecordState
from carevault.domain.documents import Coding, DocumentMetadata, DocumentStatus
from carevault.domain.errors import Conflict
from carevault.services import directory as svc
from carevault.services.directory import DirectoryContext
from support.builders import patient
from support.contracts import Reused
from support.fake_documents import FakeDocumentUnitOfWork
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CONTENT = SealedParts("kek-1", b"wrapped", b"nonce-12byte", b"ciphertext")
TEXT = SealedParts("kek-2", b"wrapped", b"nonce-12byte", b"title")


def _patients(uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext, count: int) -> list[str]:
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


def test_the_real_pki_store(uow: Callable[[], SqlUnitOfWork]) -> None:
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
        assert [p for p in patients if uow.records.due_for_purge(p, NOW)] == [old]
        assert not uow.records.due_for_purge(later, NOW)  # changed after the cut-off
        assert uow.records.due_for_purge(later, NOW + timedelta(seconds=1))
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
        uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
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


def test_the_real_outbox(uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    patients = _patients(uow, ctx, 3)
    accounts = {}
    with uow() as unit:
        for n, login in enumerate(["anne@example.org", "not-an-address"]):
            accounts[patients[n]] = f"acc-{n}"
            unit.accounts.add(AccountRecord(f"acc-{n}", AccountKind.PATIENT, login, "hash",
                                            b"sealed", None, patients[n], frozenset(), NOW))
        unit.commit()
    check_outbox(Reused(uow), patients, accounts)


# --- the documents themselves -----------------------------------------------------------------


def _document(document_id: str, patient_id: str, minutes: int, **changes: Any) -> DocumentMetadata:
    """A document indexed ``minutes`` after NOW, as the service would store it."""
    values: dict[str, Any] = {
        "master_identifier": f"urn:oid:7.{document_id}", "submission_set_id": "set-1",
        "indexed": NOW + timedelta(minutes=minutes),
        "class_code": Coding("http://loinc.org", "11490-0", "display, not kept"),
        "events": (Coding("http://snomed.info/sct", "27113001"),), **changes}
    return replace(_metadata(document_id, patient_id), **values)


def check_documents(uow: Any, patients: list[str]) -> None:
    mine, other = patients
    report = _document("d-report", mine, 1, title="Title", description="Description")
    signature = _document("d-sig", mine, 1, signs="d-report", content_type="application/jose")
    secret = _document("d-secret", mine, 2, confidentiality=Confidentiality.R,
                       author_id="dr-2", engine_class="psychiatric")
    held = _document("d-held", mine, 3, not_yet_visible_to_patient=True,
                     release_at=NOW + timedelta(days=1), submission_set_id="set-2")
    theirs = _document("d-theirs", other, 4, submission_set_id="set-3")
    with uow:
        assert uow.documents.identifiers_taken("urn:oid:set-1", ["urn:oid:7.d-report"]) == (
            False, frozenset())
        uow.documents.add([(report, CONTENT, TEXT), (signature, CONTENT, None),
                           (secret, CONTENT, None), (held, CONTENT, None)], NOW)
        uow.documents.add([(theirs, CONTENT, None)], NOW)
        uow.documents.add_submission_set("set-1", mine, "urn:oid:set-1", "urn:oid:src", "dr-1",
                                         ["d-report", "d-sig", "d-secret"], NOW, {"title": "T"})
        uow.documents.add_submission_set("set-2", mine, "urn:oid:set-2", "urn:oid:src", None,
                                         ["d-held"], NOW + timedelta(minutes=3))
        uow.commit()
    with uow:
        assert uow.documents.identifiers_taken(
            "urn:oid:set-1", ["urn:oid:7.d-report", "urn:oid:7.d-new"]) == (
            True, frozenset({"urn:oid:7.d-report"}))
        stored = uow.documents.get("d-report")
        assert stored.metadata == replace(report, title=None, description=None,
                                          class_code=Coding("http://loinc.org", "11490-0"))
        assert stored.sealed_text == TEXT
        assert uow.documents.get("d-none") is None
        assert uow.documents.of_patient(mine, "d-report") == stored
        assert uow.documents.of_patient(other, "d-report") is None  # not theirs
        assert uow.documents.of_patient(mine, "d-theirs") is None
        assert uow.documents.of_patient(other, "d-theirs") is not None
        found, content = uow.documents.get_with_content("d-sig")
        assert found.sealed_text is None and found.metadata.signs == "d-report"
        assert content == StoredContent(CONTENT.kek_id, CONTENT.wrapped_key, CONTENT.nonce,
                                        CONTENT.ciphertext)
        assert uow.documents.get_with_content("d-none") is None
        assert uow.documents.referenced(["d-report", "d-none"]) == {"d-report"}
        # The engine's filter: normal only, held ones out unless released by then.
        normal = DocumentFilter(confidentiality=frozenset({Confidentiality.N}), classes=None)
        total, page = uow.documents.search(mine, normal, DocumentCriteria(), offset=0, count=10)
        assert (total, [s.metadata.id for s in page]) == (2, ["d-report", "d-sig"])
        patient = DocumentFilter(confidentiality=frozenset(Confidentiality), classes=None,
                                 include_hidden=True, released_by=NOW + timedelta(days=1))
        total, page = uow.documents.search(mine, patient, DocumentCriteria(), offset=1, count=2)
        assert (total, [s.metadata.id for s in page]) == (4, ["d-secret", "d-report"])
        author = DocumentFilter(author_id="dr-2")
        assert [s.metadata.id for s in uow.documents.search(
            mine, author, DocumentCriteria(), offset=0, count=9)[1]] == ["d-secret"]
        classes = DocumentFilter(confidentiality=frozenset(Confidentiality),
                                 classes=frozenset({"psychiatric"}), include_not_yet_visible=True)
        assert uow.documents.search(mine, classes, DocumentCriteria(), offset=0, count=9)[0] == 1
        assert uow.documents.search(mine, DocumentFilter(), DocumentCriteria(), offset=0,
                                    count=9) == (0, [])
        everyone = DocumentFilter(confidentiality=frozenset(Confidentiality), classes=None,
                                  include_not_yet_visible=True)
        for criteria, expected in [
            (DocumentCriteria(security_label=[("R",)]), ["d-secret"]),
            (DocumentCriteria(author=[("dr-2", "dr-9")]), ["d-secret"]),
            (DocumentCriteria(category=[("11490-0",)], type=[("http://loinc.org|11490-0",)]),
             ["d-held", "d-secret", "d-report", "d-sig"]),
            (DocumentCriteria(category=[("http://other|11490-0",)]), []),
            (DocumentCriteria(event=[("27113001",)], related=[("d-report",)]), ["d-sig"]),
            (DocumentCriteria(date=[("ge", NOW + timedelta(minutes=2),
                                     NOW + timedelta(minutes=3))]), ["d-held", "d-secret"]),
            # Seen by both: the held one and the R one are not the normal filter's.
            (DocumentCriteria(also_visible_to=normal), ["d-report", "d-sig"]),
            (DocumentCriteria(also_visible_to=author), ["d-secret"]),  # its author's, R
            (DocumentCriteria(also_visible_to=DocumentFilter()), []),
        ]:
            total, page = uow.documents.search(mine, everyone, criteria, offset=0, count=9)
            assert (total, [s.metadata.id for s in page]) == (len(expected), expected), criteria
        assert uow.documents.visible_among(mine, normal, ["d-report", "d-secret", "d-theirs"]
                                           ) == {"d-report"}
        assert uow.documents.submission_sets(mine, normal, offset=0, count=9)[0] == 1
        total, rows = uow.documents.submission_sets(mine, everyone, offset=0, count=9)
        assert (total, [r["id"] for r in rows]) == (2, ["set-2", "set-1"])
        row = uow.documents.submission_set("set-1")
        assert (row["patient_id"], row["document_ids"], row["details"], row["author_id"]) == (
            mine, ["d-report", "d-sig", "d-secret"], {"title": "T"}, "dr-1")
        assert uow.documents.submission_set("set-2")["details"] == {}
        assert uow.documents.submission_set("set-9") is None
        # Statuses follow to the signatures; another patient's document is not changed.
        assert uow.documents.set_status(other, "d-report", DocumentStatus.SUPERSEDED) is False
        assert uow.documents.set_status(mine, "d-report", DocumentStatus.SUPERSEDED) is True
        assert uow.documents.get("d-sig").metadata.status is DocumentStatus.SUPERSEDED
        # Held documents.
        assert uow.documents.due_for_release(NOW + timedelta(hours=23)) == []
        assert uow.documents.due_for_release(NOW + timedelta(days=1)) == [(mine, "d-held")]
        assert uow.documents.release(other, "d-held") is False
        assert uow.documents.release(mine, "d-held") is True
        assert uow.documents.release(mine, "d-held") is False
        released = uow.documents.get("d-held").metadata
        assert (released.not_yet_visible_to_patient, released.release_at) == (False, None)
        assert uow.documents.due_for_release(NOW + timedelta(days=1)) == []
        # Not committed: all of it goes.
    with uow:
        assert uow.documents.get("d-report").metadata.status is DocumentStatus.CURRENT
        assert uow.documents.get("d-held").metadata.not_yet_visible_to_patient is True
    with pytest.raises(Conflict), uow:  # a uniqueId twice
        uow.documents.add([(replace(theirs, id="d-again"), CONTENT, None)], NOW)
    with pytest.raises(Conflict), uow:
        uow.documents.add_submission_set("set-9", mine, "urn:oid:set-1", "s", None, [], NOW)
    with uow:
        assert uow.documents.get("d-again") is None


def test_the_fake_documents() -> None:
    uow = FakeUnitOfWork()
    check_documents(uow, ["pat-1", "pat-2"])


def test_the_real_documents(uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    check_documents(Reused(uow), _patients(uow, ctx, 2))


def check_count_current(uow: Any, patients: list[str]) -> None:
    """How many current documents a filter lets through, signatures and superseded versions
    left out (the workspace's count of what a professional does not see)."""
    mine, other = patients
    with uow:
        uow.documents.add([
            (_document("c-report", mine, 1), CONTENT, None),
            (_document("c-sig", mine, 1, signs="c-report"), CONTENT, None),
            (_document("c-secret", mine, 2, confidentiality=Confidentiality.R, author_id="dr-2"),
             CONTENT, None),
            (_document("c-hidden", mine, 3, hidden=True), CONTENT, None),
            (_document("c-old", mine, 4, status=DocumentStatus.SUPERSEDED), CONTENT, None),
            (_document("c-held", mine, 5, not_yet_visible_to_patient=True,
                       release_at=NOW + timedelta(days=1)), CONTENT, None),
            (_document("c-theirs", other, 6), CONTENT, None),
        ], NOW)
        uow.commit()
    every = DocumentFilter(confidentiality=frozenset(Confidentiality), classes=None,
                           include_hidden=True, include_not_yet_visible=True)
    normal = DocumentFilter(confidentiality=frozenset({Confidentiality.N}), classes=None)
    with uow:
        assert uow.documents.count_current(mine, every) == 4  # not c-sig, c-old, c-theirs
        assert uow.documents.count_current(other, every) == 1
        assert uow.documents.count_current(mine, normal) == 1  # c-report
        assert uow.documents.count_current(
            mine, replace(normal, include_hidden=True, released_by=NOW + timedelta(days=1))) == 3
        assert uow.documents.count_current(mine, DocumentFilter(author_id="dr-2")) == 1
        assert uow.documents.count_current(mine, DocumentFilter()) == 0
        assert uow.documents.count_current("no-such-patient", every) == 0
        assert uow.documents.set_status(mine, "c-report", DocumentStatus.SUPERSEDED) is True
        assert uow.documents.count_current(mine, every) == 3


def test_the_fake_count_current() -> None:
    check_count_current(FakeDocumentUnitOfWork(), ["pat-1", "pat-2"])


def test_the_real_count_current(uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    check_count_current(Reused(uow), _patients(uow, ctx, 2))


def check_patient_authored_usage(uow: Any, patients: list[str]) -> None:
    """What the patient added themselves takes room in their quota, whatever its status;
    professionals' documents and another record's do not."""
    mine, other = patients
    with uow:
        assert uow.documents.patient_authored_usage(mine) == (0, 0)
        uow.documents.add([
            (_document("u-letter", mine, 1, patient_authored=True, size=300), CONTENT, None),
            (_document("u-scan", mine, 2, patient_authored=True, size=4_000, hidden=True,
                       status=DocumentStatus.SUPERSEDED), CONTENT, None),
            (_document("u-report", mine, 3, size=70_000), CONTENT, None),
            (_document("u-theirs", other, 4, patient_authored=True, size=9), CONTENT, None),
        ], NOW)
        uow.commit()
    with uow:
        assert uow.documents.patient_authored_usage(mine) == (2, 4_300)
        assert uow.documents.patient_authored_usage(other) == (1, 9)
        assert uow.documents.patient_authored_usage("no-such-patient") == (0, 0)


def test_the_fake_patient_authored_usage() -> None:
    check_patient_authored_usage(FakeDocumentUnitOfWork(), ["pat-1", "pat-2"])


def test_the_real_patient_authored_usage(
        uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    check_patient_authored_usage(Reused(uow), _patients(uow, ctx, 2))


def test_counting_the_usage_locks_the_record_until_the_upload_commits(
        database_url: str, uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    # Two uploads racing would both count the quota's last place free: the second to count
    # waits for the first's commit. PostgreSQL: with a lock timeout, it gives up instead.
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serializes writers with BEGIN IMMEDIATE: no row lock to see")
    mine, other = _patients(uow, ctx, 2)
    with uow() as first:
        first.documents.patient_authored_usage(mine)
        with uow() as second:
            second.documents.connection.exec_driver_sql("SET LOCAL lock_timeout = '50ms'")
            assert second.documents.patient_authored_usage(other) == (0, 0)  # not that one
            with pytest.raises(OperationalError, match="lock timeout"):
                second.documents.patient_authored_usage(mine)


def check_document_facts_the_patient_manages(uow: Any, patients: list[str]) -> None:
    mine, other = patients
    with uow:
        uow.documents.add([(_document("d-report", mine, 1), CONTENT, None),
                           (_document("d-sig", mine, 1, signs="d-report"), CONTENT, None)], NOW)
        uow.commit()
    with uow:
        assert uow.records.document(other, "d-report") is None
        assert uow.records.set_document_hidden(other, "d-report", True) is False
        assert uow.records.set_document_hidden(mine, "d-report", True) is True
        assert uow.records.set_document_confidentiality(mine, "d-report", Confidentiality.R)
        for document_id in ("d-report", "d-sig"):  # the signature follows
            facts = uow.records.document(mine, document_id)
            assert (facts.hidden, facts.confidentiality) == (True, Confidentiality.R)
            assert uow.documents.get(document_id).metadata.hidden is True
        assert uow.records.touched_patients == [other, mine]  # as asked, changed or not
        uow.commit()
    with uow:
        assert uow.records.touched_patients == []
        assert uow.records.document(mine, "d-report").hidden is True


def test_the_fake_document_facts_the_patient_manages() -> None:
    check_document_facts_the_patient_manages(FakeDocumentUnitOfWork(), ["pat-1", "pat-2"])


def test_the_real_document_facts_the_patient_manages(
        uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    check_document_facts_the_patient_manages(Reused(uow), _patients(uow, ctx, 2))
