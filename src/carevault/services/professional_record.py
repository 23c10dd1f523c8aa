"""A professional's work with one record, in the workspace: find the patient, open the record
as the engine lets them see it, read a document with its author's signature checked, publish a
signed document, break the glass.

The FHIR API does the same through its door (gate → handler → recorder). The workspace has no
token and no FHIR request, so each use case here asks the engine itself and writes the access's
audit entry before anything is shown — the same entry the API's recorder writes (kind
``access``, the rule path, the purpose of use), so that the patient's history and the security
officer's detector read a page of the workspace exactly as they read a request of the API. A
refusal is recorded too, then raised (`Refused`, carrying the engine's decision).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from carevault.domain.audit import (
    ACTION_CREATE,
    ACTION_READ,
    AuditRecord,
    rfc3339_ms,
)
from carevault.domain.authorization import (
    ALERT_SECURITY_OFFICER,
    Action,
    Confidentiality,
    Decision,
    Party,
    RecordFacts,
)
from carevault.domain.directory import Identifier
from carevault.domain.documents import Coding, DocumentCriteria, DocumentMetadata
from carevault.domain.errors import InvalidInput, NotFound
from carevault.domain.queries import DateRange, Page, PatientQuery, Stored
from carevault.domain.text import fold
from carevault.fhirmodel.mhd import (
    PatientRef,
    ProvidedDocument,
    ProvidedSubmission,
    authored_document,
)
from carevault.services.accounts import AuditAppender
from carevault.services.document_publication import Published
from carevault.services.documents import DocumentService
from carevault.services.finder import party_names, person_name
from carevault.services.patient_uploads import FORMAT_CODES, LOINC, SIGNATURES, SNOMED
from carevault.services.record_policy import Actor, RecordPolicy, Refused, purpose_of_use
from carevault.services.signatures import InvalidSignature, verify_detached
from carevault.services.unit_of_work import UnitOfWork

MAX_FOUND = 20  # a search that matches more asks for more criteria rather than a long list
MAX_SEARCH_TEXT = 100
MAX_TITLE = 200
DSG_FORMAT = "urn:ihe:iti:dsg:detached:2014"
SOURCE_ID = "urn:carevault:workspace"

# What a professional may say their document is: (class, type), LOINC codes of the built-in
# affinity domain (the same choices as the patients' uploads, and a referral letter).
PUBLISH_KINDS: dict[str, tuple[str, str]] = {
    "consultation": ("11488-4", "11488-4"),
    "laboratory": ("26436-6", "11502-2"),
    "imaging": ("18726-0", "18748-4"),
    "discharge": ("18842-5", "18842-5"),
    "vaccination": ("11369-6", "11369-6"),
}
# Content a browser shows itself, from CareVault's own origin, in a sandbox: anything else is
# offered as a download only.
SHOWN_TYPES = frozenset({"application/pdf", "image/png", "image/jpeg", "text/plain"})


@dataclass(frozen=True)
class PatientSearch:
    """The workspace's search form: any of these, all that are given must hold."""

    family: str = ""
    given: str = ""
    birthdate: str = ""  # YYYY-MM-DD
    national_id: str = ""
    hospital_number: str = ""  # a number any hospital of the platform assigned

    def given_fields(self) -> list[str]:
        """The fields that hold a criterion: a field of nothing but spaces and accents (what
        folding leaves of "´" or "¨" is nothing) holds none, rather than matching everyone."""
        return [name for name, value in vars(self).items() if fold(value)]


@dataclass(frozen=True)
class FoundPatient:
    id: str
    name: str
    birthdate: str
    gender: str


@dataclass(frozen=True)
class Found:
    patients: tuple[FoundPatient, ...]
    more: bool  # more matched than are shown: the professional narrows the search


@dataclass(frozen=True)
class RecordView:
    """What the workspace shows of a record to one professional."""

    patient: FoundPatient
    documents: tuple[DocumentMetadata, ...]  # the documents they see, newest first
    not_visible: int  # current documents of the record they do not see
    emergency_until: datetime | None  # their own break-the-glass window, while it lasts
    authors: dict[str, str] = field(default_factory=dict)  # practitioner id -> name


@dataclass(frozen=True)
class SignatureCheck:
    """The author's signature as checked now, against the platform CA and its revocations."""

    verified: bool
    signer: str | None  # the signing practitioner's or system's identifier
    problem: str | None  # why it did not verify (English, for the page's detail)


@dataclass(frozen=True)
class DocumentReading:
    metadata: DocumentMetadata
    content_type: str
    content: bytes
    signature: SignatureCheck | None  # None: the document carries no signature
    author: str = ""  # the author's name as the directory has it


@dataclass(frozen=True)
class SignedUpload:
    """A document and its author's detached JWS (IHE DSG), made with the card's key by
    ``carevault card sign`` or any DSG-capable tool."""

    content: bytes
    content_type: str
    signature: bytes
    title: str
    kind: str  # a key of PUBLISH_KINDS
    confidentiality: str  # N, R or V


class PublishRefused(InvalidInput):
    """A publication refused before anything is stored; ``reason`` names why, for the page's
    message in the person's language."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, expression=reason)
        self.reason = reason


@dataclass(frozen=True)
class Access:
    """What one access of the workspace was, for its audit entry: the FHIR interaction it
    stands for, whose record, which resource, and the search's parameter names."""

    interaction: str
    patient: str | None = None
    entity: tuple[str, str | None] | None = None
    action: str = ACTION_READ
    query: str | None = None


def found_patient(stored: Stored) -> FoundPatient:
    resource = stored.resource
    return FoundPatient(
        stored.id,
        person_name(resource),
        str(resource.get("birthDate", "")),
        str(resource.get("gender", "")),
    )


def _on_behalf_of(actor: Actor) -> str | None:
    """An assistant acts for their mandating practitioner: the entry names both."""
    mandator = actor.subject.mandator_id
    return f"Practitioner/{mandator}" if mandator is not None else None


def _query(search: PatientSearch) -> PatientQuery:
    query = PatientQuery()
    for text in (search.family, search.given, search.national_id, search.hospital_number):
        if len(text) > MAX_SEARCH_TEXT:
            raise InvalidInput(
                f"a search field holds at most {MAX_SEARCH_TEXT} characters", expression="length"
            )
    if family := fold(search.family):
        query.family.append((family,))
    if given := fold(search.given):
        query.given.append((given,))
    if search.birthdate.strip():
        try:
            day = date.fromisoformat(search.birthdate.strip())
            query.birthdate.append(DateRange("eq", day, day + timedelta(days=1)))
        except (ValueError, OverflowError):  # not a date, or 9999-12-31 (no day after it)
            raise InvalidInput(
                "the birth date is a date (YYYY-MM-DD)", expression="birthdate"
            ) from None
    return query


class ProfessionalRecord:
    """The workspace's use cases on a record; each owns its transaction and its audit entry."""

    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        policy: RecordPolicy,
        documents: DocumentService,
        audit: AuditAppender,
        national_system: str,
        max_bytes: int,
    ) -> None:
        self.units = units
        self.policy = policy
        self.documents = documents
        self.audit = audit
        self.national_system = national_system
        self.max_bytes = max_bytes

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.documents.clock

    def _entry(
        self,
        actor: Actor,
        now: datetime,
        access: Access,
        decision: Decision | None = None,
        *,
        unknown: bool = False,
    ) -> AuditRecord:
        permit = (decision is None or decision.permit) and not unknown
        entity_type, entity_id = access.entity if access.entity else (None, None)
        return AuditRecord(
            stream="clinical",
            recorded=rfc3339_ms(now),
            kind="access",
            action=access.action,
            interaction=access.interaction,
            outcome="0" if permit else "4",
            agent=actor.agent(_on_behalf_of(actor)),
            patient=access.patient,
            entity_type=entity_type,
            entity_id=entity_id,
            query=access.query,
            status=404 if unknown else 200 if permit else 403,
            purpose_of_use=None if decision is None else purpose_of_use(decision),
            rule=None if decision is None else " → ".join(decision.path),
            detail={"surface": "workspace"},
        )

    def _entries(
        self, actor: Actor, now: datetime, access: Access, decision: Decision
    ) -> list[AuditRecord]:
        """The access's entry, and the engine's alert to the security officer beside it when
        the decision carries that obligation (as the API's recorder adds it)."""
        main = self._entry(actor, now, access, decision)
        if ALERT_SECURITY_OFFICER not in decision.obligations:
            return [main]
        alert = replace(
            main,
            kind="alert",
            query=None,
            detail={
                **main.detail,
                "decision": "permit" if decision.permit else "deny",
                "rule": decision.rule,
            },
        )
        return [main, alert]

    def _recorded(self, entries: list[AuditRecord]) -> None:
        """Entries of an access that wrote nothing else, in a transaction of their own."""
        with self.units() as uow:
            self.audit.append_with(uow.audit, entries)
            uow.commit()

    def _refuse(self, actor: Actor, now: datetime, access: Access, decision: Decision) -> Refused:
        """Record a refused access, then the error to raise."""
        self._recorded(self._entries(actor, now, access, decision))
        return Refused(decision)

    def _unknown(self, actor: Actor, now: datetime, access: Access, message: str) -> NotFound:
        """Record an attempt on a patient or document that is not there (someone trying ids
        is what the security officer's detector looks for), then the error to raise."""
        self._recorded([self._entry(actor, now, access, unknown=True)])
        return NotFound(message)

    # --- finding a patient ------------------------------------------------------------------

    def find(self, actor: Actor, search: PatientSearch) -> Found:
        """Patients of the directory matching every field given (names by prefix, accents and
        case ignored); at least one field. The search is recorded with the fields it used."""
        fields = search.given_fields()
        if not fields:
            raise InvalidInput("give a name, a birth date or an identifier", expression="search")
        query = _query(search)
        now = self.clock()
        with self.units() as uow:
            if "national_id" in fields:
                number = search.national_id.strip()
                query.identifier.append((Identifier(self.national_system, number),))
            if "hospital_number" in fields:
                number = search.hospital_number.strip()
                systems = sorted(uow.directory.assigning_authorities())
                query.identifier.append(tuple(Identifier(s, number) for s in systems))
            result = (
                uow.directory.search_patients(query, Page(0, MAX_FOUND + 1))
                if all(query.identifier)
                else None
            )
            searched = Access(
                "search-type",
                entity=("Patient", None),
                query="&".join(f"{name}=" for name in fields),
            )
            self.audit.append_with(uow.audit, [self._entry(actor, now, searched)])
            uow.commit()
        items = [] if result is None else result.items
        return Found(tuple(found_patient(s) for s in items[:MAX_FOUND]), len(items) > MAX_FOUND)

    # --- the record -------------------------------------------------------------------------

    def _decided(
        self, uow: UnitOfWork, actor: Actor, patient_id: str, action: Action, now: datetime
    ) -> tuple[RecordFacts | None, Decision]:
        record = self.policy.facts(uow, patient_id, now)
        return record, self.policy.decide(actor.subject, action, record, None, now)

    def open(self, actor: Actor, patient_id: str) -> RecordView:
        """The record as the engine lets this professional see it: the documents they see, how
        many they do not, and their emergency window if they broke the glass. Refused (and
        recorded) when the engine lets them search nothing of it."""
        now = self.clock()
        access = Access("search-type", patient_id, ("DocumentReference", None), query="patient=")
        with self.units() as uow:
            stored = uow.directory.read("Patient", patient_id)
            record, decision = self._decided(uow, actor, patient_id, Action.SEARCH, now)
            # Refused: nothing is written here, and the unit of work rolls back on leaving.
            if stored is not None and decision.permit and record is not None:
                _total, found = self.documents.find(
                    uow, actor.subject, record, DocumentCriteria(), offset=0, count=200
                )
                hidden = self.documents.not_visible(uow, actor.subject, record)
                authors = _authors(uow, [m.author_id for m in found])
                self.audit.append_with(uow.audit, self._entries(actor, now, access, decision))
                uow.commit()
                window = _open_window(actor, record, now)
                shown = tuple(
                    sorted(
                        (m for m in found if m.signs is None), key=lambda m: m.indexed, reverse=True
                    )
                )
                return RecordView(found_patient(stored), shown, hidden, window, authors)
        if stored is None:
            unknown = Access("search-type", entity=("Patient", patient_id))
            raise self._unknown(actor, now, unknown, "no such patient")
        raise self._refuse(actor, now, access, decision)

    def patient(self, patient_id: str) -> FoundPatient:
        """A patient's name and birth date as the directory has them (the professionals'
        directory search shows as much)."""
        with self.units() as uow:
            stored = uow.directory.read("Patient", patient_id)
        if stored is None:
            raise NotFound("no such patient")
        return found_patient(stored)

    def read(self, actor: Actor, patient_id: str, document_id: str) -> DocumentReading:
        """One document's bytes, decided and recorded as ITI-68 is, with its author's
        signature checked now (a revoked signer's signature no longer verifies)."""
        now = self.clock()
        access = Access("read", patient_id, ("DocumentReference", document_id))
        with self.units() as uow:
            record = self.policy.facts(uow, patient_id, now)
            loaded = self.documents.load(uow, document_id, with_content=True)
            facts = None
            if loaded is not None and loaded.stored.metadata.patient_id == patient_id:
                facts = loaded.facts
            decision = self.policy.decide(actor.subject, Action.READ, record, facts, now)
            # Refused: nothing is written here, and the unit of work rolls back on leaving.
            refused = True
            if loaded is not None and facts is not None and record is not None and decision.permit:
                refused = False
                # The bytes, and the title and description as the author gave them (sealed
                # apart from them), from the document loaded above.
                retrieved, metadata = self.documents.open_with_text(actor.subject, record, loaded)
                signature = self._signature(uow, actor, record, document_id, retrieved.content, now)
                author = _authors(uow, [metadata.author_id]).get(metadata.author_id or "", "")
                self.audit.append_with(uow.audit, self._entries(actor, now, access, decision))
                uow.commit()
        if refused:
            if facts is None:
                unknown = replace(access, patient=patient_id if record is not None else None)
                raise self._unknown(actor, now, unknown, "no such document in this record")
            raise self._refuse(actor, now, access, decision)
        return DocumentReading(
            metadata, metadata.content_type, retrieved.content, signature, author
        )

    def _signature(
        self,
        uow: UnitOfWork,
        actor: Actor,
        record: RecordFacts,
        document_id: str,
        content: bytes,
        now: datetime,
    ) -> SignatureCheck | None:
        _total, related = self.documents.find(
            uow,
            actor.subject,
            record,
            DocumentCriteria(related=[(document_id,)]),
            offset=0,
            count=10,
        )
        signature = next((m for m in related if m.signs == document_id), None)
        if signature is None:
            return None
        loaded = self.documents.load(uow, signature.id, with_content=True)
        if loaded is None:
            return SignatureCheck(False, None, "the signature's content is missing")
        jws = self.documents.open(actor.subject, record, loaded).content
        try:
            identity = verify_detached(uow, jws, content, now)
        except InvalidSignature as error:
            return SignatureCheck(False, None, error.message)
        return SignatureCheck(True, identity.client_id, None)

    # --- publishing -------------------------------------------------------------------------

    def publish(self, actor: Actor, patient_id: str, upload: SignedUpload) -> Published:
        """A document authored by this professional, with their detached signature: the
        same checks as ITI-65 (the engine decides the write; the signature must verify and be
        the author's), stored with its audit entry in one transaction."""
        title = " ".join(upload.title.split())
        if not title or len(title) > MAX_TITLE:
            raise PublishRefused(f"the title has 1 to {MAX_TITLE} characters", "title")
        if upload.kind not in PUBLISH_KINDS:
            raise PublishRefused(f"kind is one of {', '.join(PUBLISH_KINDS)}", "kind")
        try:
            confidentiality = Confidentiality(upload.confidentiality)
        except ValueError:
            raise PublishRefused("confidentiality is N, R or V", "confidentiality") from None
        if not upload.content:
            raise PublishRefused("the file is empty", "empty")
        if len(upload.content) > self.max_bytes:
            raise PublishRefused(f"the file exceeds {self.max_bytes} bytes", "size")
        starts = SIGNATURES.get(upload.content_type, ())
        if upload.content_type != "text/plain" and not any(
            upload.content.startswith(s) for s in starts
        ):
            raise PublishRefused("the file is a PDF, JPEG, PNG or plain text", "type")
        if not upload.signature.strip():
            raise PublishRefused("the author's signature is missing", "signature")
        author = actor.subject.id
        class_code, type_code = PUBLISH_KINDS[upload.kind]
        now = self.clock()
        entry, signature_entry = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"

        def provided(
            url: str, content_type: str, content: bytes, signs: str | None, format_code: str
        ) -> ProvidedDocument:
            return authored_document(
                full_url=url,
                patient_id=patient_id,
                codes=(
                    Coding(LOINC, class_code),
                    Coding(LOINC, type_code),
                    Coding(FORMAT_CODES, format_code),
                ),
                # general medicine, a hospital
                setting=(Coding(SNOMED, "394802001"), Coding(SNOMED, "22232009")),
                confidentiality=confidentiality,
                content_type=content_type,
                content=content,
                created=now.astimezone(UTC),
                title=title,
                practitioner_id=author,
                signs=signs,
            )

        submission = ProvidedSubmission(
            full_url=f"urn:uuid:{uuid.uuid4()}",
            master_identifier=f"urn:uuid:{uuid.uuid4()}",
            source_id=SOURCE_ID,
            patient=PatientRef(patient_id),
            documents=(
                provided(
                    entry,
                    upload.content_type,
                    upload.content,
                    None,
                    "urn:ihe:iti:xds:2017:mimeTypeSufficient",
                ),
                provided(
                    signature_entry,
                    "application/jose",
                    upload.signature.strip(),
                    entry,
                    DSG_FORMAT,
                ),
            ),
            entry_order=(entry, signature_entry),
        )
        written = Access("create", patient_id, ("DocumentReference", None), ACTION_CREATE)
        with self.units() as uow:
            record, decision = self._decided(uow, actor, patient_id, Action.WRITE, now)
            if decision.permit and record is not None:
                published = self.documents.publisher.publish(uow, actor.subject, record, submission)
                created = replace(written, entity=("DocumentReference", published.ids[entry]))
                self.audit.append_with(uow.audit, self._entries(actor, now, created, decision))
                uow.commit()
                return published
        raise self._refuse(actor, now, written, decision)  # nothing was written

    # --- emergency --------------------------------------------------------------------------

    def emergency_possible(self, actor: Actor, patient_id: str) -> bool:
        """Whether the engine would let this professional break the glass on the record now,
        and they have no emergency window open on it already (asked before the warning is
        shown; nothing is recorded by asking)."""
        now = self.clock()
        with self.units() as uow:
            record, decision = self._decided(uow, actor, patient_id, Action.EMERGENCY, now)
        return decision.permit and _open_window(actor, record, now) is None


def _authors(uow: UnitOfWork, ids: Sequence[str | None]) -> dict[str, str]:
    """The names of the practitioners who wrote these documents (a patient's own document
    names no practitioner)."""
    return party_names(uow, [(Party.PRACTITIONER, i) for i in dict.fromkeys(ids) if i])


def _open_window(actor: Actor, record: RecordFacts | None, now: datetime) -> datetime | None:
    """The end of this professional's own emergency window on the record, while it lasts."""
    windows = () if record is None else record.emergency_windows
    return next(
        (w.until for w in windows if w.practitioner_id == actor.subject.id and w.until > now),
        None,
    )


__all__ = [
    "MAX_FOUND",
    "PUBLISH_KINDS",
    "SHOWN_TYPES",
    "DocumentReading",
    "Found",
    "FoundPatient",
    "PatientSearch",
    "ProfessionalRecord",
    "PublishRefused",
    "RecordView",
    "SignatureCheck",
    "SignedUpload",
]
