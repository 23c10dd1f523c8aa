"""The MHD use cases as the FHIR API calls them (ITI-65 provide, ITI-66/67 find, the author's
release and withdrawal), one unit of work each.

`DocumentService` holds the rules as methods of a unit of work that another use case may
share (a professional's note and its prescription, a patient's upload and its notification);
this is their transactional face for one request each, so that no handler opens a
transaction. The single-document reads the gate decided (ITI-67 read, ITI-68) need none:
the gate's snapshot travels to `DocumentService.describe` and `retrieve`.
"""

from __future__ import annotations

from carevault.domain.authorization import RecordFacts, Subject
from carevault.domain.documents import DocumentCriteria, DocumentMetadata
from carevault.domain.errors import InvalidInput
from carevault.fhirmodel.mhd import PatientRef, ProvidedSubmission
from carevault.services.document_publication import Published
from carevault.services.documents import DocumentService, SubmissionSet
from carevault.services.unit_of_work import UnitOfWork, Units


class DocumentExchange:
    def __init__(self, units: Units, documents: DocumentService) -> None:
        self.units = units
        self.documents = documents

    def submit(
        self, subject: Subject, record: RecordFacts, submission: ProvidedSubmission
    ) -> Published:
        """ITI-65: every document of the submission, or none; each resource must name the
        record the gate admitted (by id or by identifier)."""
        with self.units() as uow:
            named = [("List.subject", submission.patient)] + [
                ("DocumentReference.subject", d.patient) for d in submission.documents
            ]
            for where, patient in named:
                _check_same_patient(uow, patient, record.patient_id, where)
            published = self.documents.publisher.publish(uow, subject, record, submission)
            uow.commit()
            return published

    def release(self, subject: Subject, record: RecordFacts, document_id: str) -> None:
        """The author makes a held document visible to the patient now."""
        with self.units() as uow:
            self.documents.publisher.release(uow, subject, record, document_id)
            uow.commit()

    def withdraw(self, subject: Subject, record: RecordFacts, document_id: str) -> None:
        """The author marks a document entered-in-error."""
        with self.units() as uow:
            self.documents.publisher.withdraw(uow, subject, record, document_id)
            uow.commit()

    def read(self, subject: Subject, record: RecordFacts, document_id: str) -> DocumentMetadata:
        """One document's metadata, decided again (after a write changed it)."""
        with self.units() as uow:
            return self.documents.read(uow, subject, record, document_id)

    def find(
        self,
        subject: Subject,
        record: RecordFacts,
        criteria: DocumentCriteria,
        *,
        offset: int,
        count: int,
    ) -> tuple[int, list[DocumentMetadata]]:
        """ITI-67 search: the documents of the record the subject sees."""
        with self.units() as uow:
            return self.documents.find(uow, subject, record, criteria, offset=offset, count=count)

    def submission_set(self, subject: Subject, record: RecordFacts, set_id: str) -> SubmissionSet:
        with self.units() as uow:
            return self.documents.submission_set(uow, subject, record, set_id)

    def submission_sets(
        self, subject: Subject, record: RecordFacts, *, offset: int, count: int
    ) -> tuple[int, list[SubmissionSet]]:
        """ITI-66: the SubmissionSets with at least one document the subject sees."""
        with self.units() as uow:
            return self.documents.submission_sets(uow, subject, record, offset=offset, count=count)


def named_patient(uow: UnitOfWork, patient: PatientRef) -> str | None:
    """The patient a Bundle resource names: its id as given, or the one patient holding the
    identifier (None when nobody, or more than one entry, holds it)."""
    if patient.patient_id is not None:
        return patient.patient_id
    found = uow.directory.patients_by_identifier(patient.system or "", patient.value or "")
    return found[0] if len(found) == 1 else None


def _check_same_patient(uow: UnitOfWork, patient: PatientRef, patient_id: str, where: str) -> None:
    """A resource of the Bundle that names another patient, or an identifier nobody (or more
    than one entry) has, is refused with the same words: a submitter past the gate learns
    nothing about other people's numbers from the answer."""
    if named_patient(uow, patient) != patient_id:
        raise InvalidInput(
            "every resource of the Bundle concerns the patient of its SubmissionSet",
            expression=where,
        )
