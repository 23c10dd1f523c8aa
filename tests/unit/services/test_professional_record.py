"""The workspace's use cases on a record (`ProfessionalRecord`), on a unit of work in memory:
finding a patient (validated, recorded with the fields used and never their values), opening a
record as the engine lets a professional see it with the count of current documents they do
not see, reading a document with its author's signature checked now, publishing a document
signed with the professional's card, and whether the glass may be broken. Each access leaves
its audit entry (kind ``access``, the rule, the agent and whom an assistant acts for, the
security officer's alert beside it when the engine asks for one); each refusal leaves one with
outcome "4" and stores nothing else. Over HTTP on both databases:
tests/integration/test_workspace_record.py."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from carevault.adapters.crypto.vault import EnvelopeVault
from carevault.adapters.storage.directory_store import Stored
from carevault.domain.audit import AuditRecord
from carevault.domain.authorization import (
    Confidentiality,
    Grant,
    GrantLevel,
    Party,
    Subject,
    SubjectKind,
)
from carevault.domain.documents import DocumentStatus
from carevault.domain.errors import InvalidInput, NotFound
from carevault.fhirmodel.directory import new_practitioner, practitioner_entry
from carevault.services import directory as svc
from carevault.services import pki
from carevault.services.care_access import CareAccess
from carevault.services.documents import DocumentService
from carevault.services.patient_uploads import PatientUpload, PatientUploads
from carevault.services.professional_record import (
    MAX_FOUND,
    PUBLISH_KINDS,
    PatientSearch,
    ProfessionalRecord,
    PublishRefused,
    SignedUpload,
)
from carevault.services.record_policy import EMERGENCY_WINDOW, Actor, RecordPolicy, Refused
from carevault.services.signatures import InvalidSignature
from support.builders import HOSPITAL_SYSTEM, patient
from support.document_world import (
    AFFINITY,
    DR,
    DR2,
    MATRIX,
    NOW,
    PATIENT,
    REPORT,
    SYSTEMS,
    Audit,
    AuditPort,
    Clock,
    Signing,
    document,
    fresh_world,
    issue_signing,
    new_vault,
    publish,
    signed,
)
from support.fake_directory import directory_context
from support.fake_documents import FakeDocumentUnitOfWork

CTX = directory_context(lambda: NOW)
LETTER = b"%PDF-1.7\n% a letter MARKER-Published-3310\n%%EOF\n"

ME = Actor(DR, "Practitioner/dr-1")  # extended grant on pat-1, author of its documents
NORMAL = Actor(DR2, "Practitioner/dr-2")  # normal grant
EXTENDED = Actor(Subject(SubjectKind.PRACTITIONER, "dr-3", "physician",
                         organization_ids=frozenset({"org-3"})), "Practitioner/dr-3")
STRANGER = Actor(Subject(SubjectKind.PRACTITIONER, "dr-9", "physician",
                         organization_ids=frozenset({"org-9"})), "Practitioner/dr-9")
ASSISTANT = Actor(Subject(SubjectKind.ASSISTANT, "as-1", "medical-assistant", mandator=DR),
                  "Practitioner/as-1")


@dataclass(frozen=True)
class Keys:
    """The platform's PKI (in ``pki``), org-1's system and dr-1's card, both certified."""

    pki: FakeDocumentUnitOfWork
    system: Signing
    card: Signing
    system_serial: str


@pytest.fixture(scope="module")
def keys() -> Keys:
    uow, system = issue_signing()
    [system_serial] = uow.pki.certificates
    resource = new_practitioner(SYSTEMS, identifier="HP-DR1", family="Weber", given=["Lena"])
    with uow:
        uow.directory.write_practitioners(
            [(Stored("dr-1", 1, resource), practitioner_entry(resource, SYSTEMS))], NOW, new=True)
        uow.commit()
    ctx = pki.PkiContext(SYSTEMS, b"ca password", lambda: NOW)
    delivered: list[pki.Credentials] = []
    with uow:
        card = pki.issue_practitioner_certificate(uow, ctx, "dr-1", delivered.append)
    [credentials] = delivered
    leaf = x509.load_pem_x509_certificate(card.certificate_pem.encode("ascii"))
    issuing = x509.load_pem_x509_certificate(credentials.chain_pem.encode("ascii"))
    chain = [c.public_bytes(serialization.Encoding.DER) for c in (leaf, issuing)]
    return Keys(uow, system, Signing(credentials.private_key_pem, chain), system_serial)


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> EnvelopeVault:
    return new_vault(tmp_path_factory.mktemp("keks"))


class World:
    """pat-1 (grants: dr-1 extended, dr-2 normal, dr-3 extended), a hospital assigning
    numbers, and patients of the directory to find (Kaiser, with hospital number H-4711, and
    Stranger). The services share one clock and one unit of work."""

    def __init__(self, keys: Keys, vault: EnvelopeVault) -> None:
        self.keys = keys
        self.uow = uow = fresh_world(keys.pki)
        uow.directory.add_organization("org-h", HOSPITAL_SYSTEM)
        uow.records.add_grant("pat-1", Grant(Party.PRACTITIONER, "dr-3", GrantLevel.EXTENDED,
                                             NOW - timedelta(days=1)), NOW)
        uow.commit()
        with uow:
            self.kaiser, self.stranger = (s.id for s in svc.register_patients(uow, CTX, [
                patient(CTX.systems, 41, family="Kaiser", given=["Kurt"], local="H-4711",
                        born=date(1980, 4, 12)),
                patient(CTX.systems, 42, family="Stranger", given=["Sam"],
                        born=date(1975, 1, 2))]))
        self.kaiser_national = patient(CTX.systems, 41, born=date(1980, 4, 12))[
            "identifier"][0]["value"]
        uow.commits = 0
        assert uow.audit.records == []
        self.clock = Clock()
        self.documents = DocumentService(vault, AFFINITY, Audit(), clock=self.clock,
                                         matrix=MATRIX)
        self.policy = RecordPolicy(lambda: uow, AuditPort(), clock=self.clock, matrix=MATRIX)
        self.service = ProfessionalRecord(lambda: uow, self.policy, self.documents, AuditPort(),
                                          CTX.systems.national, max_bytes=1_000)
        self.vault = vault

    def publish(self, n: int, **changes: Any) -> str:
        """A document of pat-1 by dr-1, signed by org-1's system; its id."""
        [made] = publish(self.documents, self.uow, DR,
                         signed(self.keys.system, document(n, **changes), uid=f"urn:oid:9.9.{n}"))
        return made

    def entries(self) -> list[AuditRecord]:
        return list(self.uow.audit.records)

    def forget(self) -> None:
        """What set-up wrote is not what a test looks at."""
        self.uow.audit.records.clear()
        self.uow.commit()
        self.uow.commits = 0


@pytest.fixture
def world(keys: Keys, vault: EnvelopeVault) -> World:
    return World(keys, vault)


def upload(content: bytes = LETTER, signature: bytes = b"", **changes: Any) -> SignedUpload:
    made = SignedUpload(content, "application/pdf", signature, "Letter to the GP",
                        "consultation", "N")
    return replace(made, **changes)


# --- finding a patient ---------------------------------------------------------------------


def test_a_patient_is_found_by_name_birth_date_national_and_hospital_number(
        world: World) -> None:
    for search in (PatientSearch(family="kais"), PatientSearch(family="KÄISER", given="kurt"),
                   PatientSearch(birthdate="1980-04-12", family="Kai"),
                   PatientSearch(national_id=world.kaiser_national),
                   PatientSearch(hospital_number=" H-4711 ")):
        found = world.service.find(ME, search)
        assert [p.id for p in found.patients] == [world.kaiser], search
        assert (found.patients[0].name, found.patients[0].birthdate) == ("Kurt Kaiser",
                                                                         "1980-04-12")
        assert found.more is False
    for search in (PatientSearch(hospital_number="H-0000"), PatientSearch(birthdate="1980-04-13"),
                   PatientSearch(family="Kaiser", given="Sam"),
                   PatientSearch(national_id="H-4711")):  # a hospital number is no national one
        assert world.service.find(ME, search).patients == (), search
    assert world.uow.commits == 9  # each search recorded in its own transaction


def test_a_search_is_recorded_with_the_names_of_its_fields_never_their_values(
        world: World) -> None:
    world.service.find(ASSISTANT, PatientSearch(family="Kaiser", given="Kurt",
                                                birthdate="1980-04-12"))
    world.service.find(ME, PatientSearch(national_id=world.kaiser_national,
                                         hospital_number="H-4711"))
    first, second = world.entries()
    assert (first.kind, first.interaction, first.outcome, first.status) == (
        "access", "search-type", "0", 200)
    assert (first.entity_type, first.entity_id, first.patient) == ("Patient", None, None)
    assert first.query == "family=&given=&birthdate="
    assert (first.agent.who, first.agent.on_behalf_of) == ("Practitioner/as-1",
                                                           "Practitioner/dr-1")
    assert first.detail == {"surface": "workspace"}
    assert second.query == "national_id=&hospital_number="
    assert (second.agent.who, second.agent.on_behalf_of) == ("Practitioner/dr-1", None)
    text = json.dumps([asdict(e) for e in world.entries()], default=str)
    for value in ("Kaiser", "Kurt", "1980", world.kaiser_national, "H-4711"):
        assert value not in text


def test_more_patients_than_are_shown_ask_for_more_criteria(world: World) -> None:
    with world.uow as uow:
        svc.register_patients(uow, CTX, [patient(CTX.systems, 100 + n, family="Many")
                                          for n in range(MAX_FOUND + 1)])
    found = world.service.find(ME, PatientSearch(family="many"))
    assert (len(found.patients), found.more) == (MAX_FOUND, True)
    found = world.service.find(ME, PatientSearch(family="many", given="zz"))
    assert (found.patients, found.more) == ((), False)


@pytest.mark.parametrize(("search", "expression"), [
    (PatientSearch(), "search"),
    (PatientSearch(family="  ", given="\t", hospital_number=" "), "search"),
    # Nothing of it a name once accents and case are folded away: no criterion either, not a
    # search of every patient.
    (PatientSearch(family="´"), "search"),
    (PatientSearch(given="\u0301 ¨"), "search"),
    (PatientSearch(birthdate="12/04/1980"), "birthdate"),
    (PatientSearch(family="Kaiser", birthdate="1980-02-30"), "birthdate"),
    (PatientSearch(family="x" * 101), "length"),
    (PatientSearch(given="x" * 101), "length"),
    (PatientSearch(national_id="1" * 101), "length"),
    (PatientSearch(hospital_number="H" * 101), "length"),
])
def test_a_search_without_a_criterion_with_a_bad_date_or_too_long_searches_nothing(
        world: World, search: PatientSearch, expression: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        world.service.find(ME, search)
    assert refused.value.expression == expression
    assert world.uow.commits == 0 and world.entries() == []


def test_a_field_of_nothing_but_accents_is_no_criterion_and_not_recorded_as_one(
        world: World) -> None:
    found = world.service.find(ME, PatientSearch(family="´", given="Kurt", national_id=" ¨ "))
    assert [p.id for p in found.patients] == [world.kaiser]
    [entry] = world.entries()
    assert entry.query == "given="


def test_a_field_at_the_longest_is_searched(world: World) -> None:
    found = world.service.find(ME, PatientSearch(family="x" * 100))
    assert found.patients == () and len(world.entries()) == 1


# --- the record ----------------------------------------------------------------------------


def test_the_record_shows_what_the_engine_permits_newest_first_without_signatures(
        world: World) -> None:
    first = world.publish(1)
    world.clock.now = NOW + timedelta(minutes=5)
    world.documents.clock = world.clock
    second = world.publish(2)
    world.forget()
    view = world.service.open(ME, "pat-1")
    assert [d.id for d in view.documents] == [second, first]
    assert all(d.signs is None for d in view.documents)
    assert (view.not_visible, view.emergency_until, view.patient.id) == (0, None, "pat-1")
    [entry] = world.entries()
    assert (entry.kind, entry.interaction, entry.action, entry.outcome, entry.status) == (
        "access", "search-type", "R", "0", 200)
    assert (entry.patient, entry.entity_type, entry.entity_id, entry.query) == (
        "pat-1", "DocumentReference", None, "patient=")
    assert entry.rule and entry.rule.endswith("grant")
    assert entry.purpose_of_use == "TREAT"
    assert (entry.agent.who, entry.agent.role, entry.agent.on_behalf_of) == (
        "Practitioner/dr-1", "practitioner", None)
    assert world.uow.commits == 1


def test_an_assistant_opens_the_record_for_their_mandator_and_is_recorded_as_such(
        world: World) -> None:
    report = world.publish(1)
    world.forget()
    view = world.service.open(ASSISTANT, "pat-1")
    assert [d.id for d in view.documents] == [report]
    [entry] = world.entries()
    assert (entry.agent.who, entry.agent.role, entry.agent.on_behalf_of) == (
        "Practitioner/as-1", "assistant", "Practitioner/dr-1")


def test_the_documents_not_visible_are_counted_current_ones_only_signatures_left_out(
        world: World) -> None:
    world.publish(1)
    hidden = world.publish(2)
    restricted = world.publish(3, confidentiality=Confidentiality.R)
    world.policy.hide_document(Actor(PATIENT, "account:acc-pat"), "pat-1", hidden, True)
    world.forget()
    # dr-2 (normal) sees neither the hidden one nor the restricted one; their signatures are
    # documents of the record too, and not counted.
    assert world.service.open(NORMAL, "pat-1").not_visible == 2
    # dr-3 (extended) sees the restricted one, not the hidden one.
    view = world.service.open(EXTENDED, "pat-1")
    assert (view.not_visible, len(view.documents)) == (1, 2)
    # The author sees what they wrote, hidden or not.
    assert world.service.open(ME, "pat-1").not_visible == 0
    # A new version of the restricted one: the superseded version is counted no more.
    [new] = publish(world.documents, world.uow, DR, signed(
        world.keys.system, document(4, confidentiality=Confidentiality.R, replaces=restricted),
        uid="urn:oid:9.9.4"))
    stored = world.uow.documents.get(restricted)
    assert stored is not None and stored.metadata.status is DocumentStatus.SUPERSEDED
    assert world.service.open(NORMAL, "pat-1").not_visible == 2
    # Shown again by the patient: only the new restricted version is out of dr-2's sight.
    world.policy.hide_document(Actor(PATIENT, "account:acc-pat"), "pat-1", hidden, False)
    assert world.service.open(NORMAL, "pat-1").not_visible == 1
    assert new not in [d.id for d in world.service.open(NORMAL, "pat-1").documents]


def test_a_record_the_engine_keeps_from_them_is_refused_and_the_refusal_recorded(
        world: World) -> None:
    world.publish(1)
    world.forget()
    with pytest.raises(Refused) as refused:
        world.service.open(STRANGER, "pat-1")
    assert not refused.value.decision.permit
    [entry] = world.entries()
    assert (entry.kind, entry.interaction, entry.outcome, entry.status) == (
        "access", "search-type", "4", 403)
    assert (entry.patient, entry.entity_type, entry.query) == (
        "pat-1", "DocumentReference", "patient=")
    assert entry.rule and entry.rule.endswith("deny-by-default")
    assert entry.agent.who == "Practitioner/dr-9"
    assert world.uow.commits == 1  # the refusal's entry, nothing else


def test_an_unknown_patient_is_not_found_and_the_attempt_is_recorded(world: World) -> None:
    """Trying ids is what a scraper does: the attempt is in the log (the patient field stays
    empty, there is no such patient), and nothing else is written."""
    with pytest.raises(NotFound):
        world.service.open(ME, "no-such-patient")
    [entry] = world.entries()
    assert (entry.kind, entry.interaction, entry.outcome, entry.status) == (
        "access", "search-type", "4", 404)
    assert (entry.patient, entry.entity_type, entry.entity_id) == (
        None, "Patient", "no-such-patient")
    assert world.uow.commits == 1
    with pytest.raises(NotFound):
        world.service.patient("no-such-patient")  # a name for a page: no access, no entry
    assert world.service.patient(world.kaiser).name == "Kurt Kaiser"
    assert len(world.entries()) == 1


def test_the_glass_broken_the_record_opens_with_the_officers_alert_beside_each_access(
        world: World) -> None:
    report = world.publish(1)
    world.forget()
    assert world.service.emergency_possible(STRANGER, "pat-1") is True
    assert world.service.emergency_possible(ASSISTANT, "pat-1") is False  # not in person
    assert world.entries() == [] and world.uow.commits == 0  # asking records nothing
    CareAccess(world.policy).declare_emergency(STRANGER, "pat-1", "unconscious", alert=True)
    world.forget()
    assert world.service.emergency_possible(STRANGER, "pat-1") is False  # already open
    view = world.service.open(STRANGER, "pat-1")
    assert view.emergency_until == NOW + EMERGENCY_WINDOW
    assert [d.id for d in view.documents] == [report]
    access, alert = world.entries()
    assert (access.kind, access.outcome, access.purpose_of_use) == ("access", "0", "EMER")
    assert access.rule and access.rule.endswith("emergency")
    assert (alert.kind, alert.interaction, alert.patient, alert.query) == (
        "alert", "search-type", "pat-1", None)
    assert alert.detail == {"surface": "workspace", "decision": "permit", "rule": "emergency"}
    assert alert.agent == access.agent
    world.forget()
    reading = world.service.read(STRANGER, "pat-1", report)
    assert reading.content == REPORT
    assert [(e.kind, e.interaction, e.entity_id) for e in world.entries()] == [
        ("access", "read", report), ("alert", "read", report)]
    # Someone else's window is not theirs: dr-2 opens with their own grant, no alert.
    world.forget()
    assert world.service.open(NORMAL, "pat-1").emergency_until is None
    assert [e.kind for e in world.entries()] == ["access"]


# --- reading a document --------------------------------------------------------------------


def test_a_document_is_read_with_its_signature_verified_and_the_read_recorded(
        world: World) -> None:
    report = world.publish(1)
    world.forget()
    reading = world.service.read(ME, "pat-1", report)
    assert (reading.content, reading.content_type, reading.metadata.id) == (
        REPORT, "application/pdf", report)
    assert reading.signature is not None
    assert (reading.signature.verified, reading.signature.problem) == (True, None)
    assert reading.signature.signer == "system:ORG-H1"
    [entry] = world.entries()
    assert (entry.kind, entry.interaction, entry.action, entry.outcome) == (
        "access", "read", "R", "0")
    assert (entry.patient, entry.entity_type, entry.entity_id) == (
        "pat-1", "DocumentReference", report)
    assert entry.rule and entry.rule.endswith("author")
    assert world.uow.commits == 1


def test_a_document_is_read_with_the_title_its_author_gave_it(world: World) -> None:
    made = world.service.publish(ME, "pat-1", upload(
        signature=world.keys.card.sign(LETTER), title="  Letter   to the GP "))
    [document_id] = [d.id for d in made.documents if d.signs is None]
    # Sealed apart from the metadata; the page shows it rather than the kind's display.
    stored = world.uow.documents.get(document_id)
    assert stored is not None and stored.metadata.title is None
    reading = world.service.read(NORMAL, "pat-1", document_id)
    assert reading.metadata.title == "Letter to the GP"  # spaces folded
    assert [d.title for d in world.service.open(NORMAL, "pat-1").documents] == [
        "Letter to the GP"]


def test_a_revoked_signers_signature_no_longer_verifies(world: World) -> None:
    report = world.publish(1)
    with world.uow as uow:
        pki.revoke(uow, world.keys.system_serial, "keyCompromise", NOW + timedelta(minutes=1))
    world.clock.now = NOW + timedelta(minutes=2)
    reading = world.service.read(NORMAL, "pat-1", report)
    assert reading.content == REPORT
    assert reading.signature is not None and reading.signature.verified is False
    assert reading.signature.signer is None
    assert reading.signature.problem and "revoked" in reading.signature.problem


def test_a_document_without_a_signature_says_so(world: World) -> None:
    uploads = PatientUploads(lambda: world.uow, world.documents, world.policy, AuditPort(), 1_000)
    published = uploads.upload(Actor(PATIENT, "account:acc-pat"), "pat-1",
                               PatientUpload(LETTER, "application/pdf", "Mine", "imaging"))
    [mine] = published.documents
    reading = world.service.read(NORMAL, "pat-1", mine.id)
    assert reading.content == LETTER and reading.signature is None


def test_a_hidden_or_restricted_document_is_refused_and_the_refusal_recorded(
        world: World) -> None:
    hidden = world.publish(1)
    restricted = world.publish(2, confidentiality=Confidentiality.R)
    world.policy.hide_document(Actor(PATIENT, "account:acc-pat"), "pat-1", hidden, True)
    world.forget()
    for document_id, rule in ((hidden, "hidden"), (restricted, "confidentiality")):
        with pytest.raises(Refused):
            world.service.read(NORMAL, "pat-1", document_id)
        entry = world.entries()[-1]
        assert (entry.kind, entry.interaction, entry.outcome, entry.status) == (
            "access", "read", "4", 403)
        assert (entry.patient, entry.entity_id) == ("pat-1", document_id)
        assert entry.rule and entry.rule.endswith(rule)
    assert len(world.entries()) == 2 and world.uow.commits == 2


def test_a_document_of_another_record_or_none_is_not_found_and_the_attempt_recorded(
        world: World) -> None:
    report = world.publish(1)
    world.forget()
    # Named under a record it is not of: not found, whether the engine would let the reader
    # into that record (the author, ME) or not (NORMAL, no grant on Kaiser's record); each
    # attempt is in the log as a 404, and nothing is read.
    tried = [(world.kaiser, report), ("pat-1", "no-such-document")]
    for actor in (ME, NORMAL):
        for patient_id, document_id in tried:
            with pytest.raises(NotFound):
                world.service.read(actor, patient_id, document_id)
    entries = world.entries()
    assert [(e.status, e.outcome, e.interaction) for e in entries] == [(404, "4", "read")] * 4
    assert [(e.patient, e.entity_id) for e in entries] == tried * 2
    assert world.uow.commits == 4


# --- publishing ----------------------------------------------------------------------------


def test_a_document_signed_with_the_card_is_published_as_the_professionals(
        world: World) -> None:
    made = world.service.publish(ME, "pat-1", upload(
        signature=world.keys.card.sign(LETTER) + b"\n", title="  Letter   to the GP ",
        kind="laboratory", confidentiality="R"))
    document_id = next(d.id for d in made.documents if d.signs is None)
    signature = next(d for d in made.documents if d.signs is not None)
    assert signature.signs == document_id
    stored = world.uow.documents.get(document_id)
    assert stored is not None
    metadata = stored.metadata
    assert (metadata.author_id, metadata.patient_id, metadata.confidentiality) == (
        "dr-1", "pat-1", Confidentiality.R)
    assert (metadata.class_code.code, metadata.type_code.code) == PUBLISH_KINDS["laboratory"]
    assert metadata.created == NOW and metadata.content_type == "application/pdf"
    [entry] = world.entries()
    assert (entry.kind, entry.interaction, entry.action, entry.outcome, entry.status) == (
        "access", "create", "C", "0", 200)
    assert (entry.patient, entry.entity_type, entry.entity_id) == (
        "pat-1", "DocumentReference", document_id)
    assert entry.agent.who == "Practitioner/dr-1"
    assert world.uow.commits == 1  # the document and its entry together
    reading = world.service.read(EXTENDED, "pat-1", document_id)
    assert reading.content == LETTER
    assert reading.signature is not None
    assert (reading.signature.verified, reading.signature.signer) == (True, "HP-DR1")


@pytest.mark.parametrize(("changes", "reason"), [
    ({"title": " \t "}, "title"),
    ({"title": "x" * 201}, "title"),
    ({"kind": "poem"}, "kind"),
    ({"confidentiality": "Z"}, "confidentiality"),
    ({"confidentiality": "n"}, "confidentiality"),
    ({"content": b""}, "empty"),
    ({"content": LETTER + b"0" * 1_000}, "size"),
    ({"content": b"MZ\x90\x00 a program"}, "type"),
    ({"content_type": "image/gif"}, "type"),
    ({"content_type": "image/png"}, "type"),  # a PDF said to be a PNG
    ({"signature": b" \n "}, "signature"),
])
def test_a_publication_refused_before_anything_says_why_and_stores_nothing(
        world: World, changes: dict[str, Any], reason: str) -> None:
    made = upload(signature=world.keys.card.sign(LETTER))
    with pytest.raises(PublishRefused) as refused:
        world.service.publish(ME, "pat-1", replace(made, **changes))
    assert refused.value.reason == reason
    assert world.uow.commits == 0 and world.entries() == []
    assert world.uow.documents.metadata == {}


def test_plain_text_and_a_title_at_the_longest_are_taken(world: World) -> None:
    text = b"plain words"
    world.service.publish(ME, "pat-1", upload(
        text, world.keys.card.sign(text), content_type="text/plain", title="x" * 200))
    assert world.uow.commits == 1


def test_a_signature_that_is_not_the_authors_or_does_not_verify_is_refused(
        world: World) -> None:
    card = world.keys.card.sign(LETTER)
    for actor, content, signature, words in (
        # dr-1's card, but dr-3 publishes: a signature, not the author's.
        (EXTENDED, LETTER, card, "neither the author"),
        # org-1's system signs for org-1's physicians (as ITI-65 takes it), not for dr-2 (org-2).
        (NORMAL, LETTER, world.keys.system.sign(LETTER), "neither the author"),
        (ME, LETTER + b"tampered", card, "does not verify"),
        (ME, LETTER, b"not-a-jws", "compact JWS"),
    ):
        with pytest.raises(InvalidSignature) as refused:
            world.service.publish(actor, "pat-1", upload(content, signature))
        assert words in refused.value.message, actor
    assert world.uow.commits == 0 and world.entries() == []
    assert world.uow.documents.metadata == {}


@pytest.mark.parametrize(("actor", "rule", "on_behalf_of"), [
    (STRANGER, "deny-by-default", None),
    (ASSISTANT, "mandate", "Practitioner/dr-1"),  # an assistant writes nothing
])
def test_a_publication_the_engine_refuses_is_recorded_and_stores_nothing(
        world: World, actor: Actor, rule: str, on_behalf_of: str | None) -> None:
    with pytest.raises(Refused):
        world.service.publish(actor, "pat-1", upload(signature=world.keys.card.sign(LETTER)))
    [entry] = world.entries()
    assert (entry.kind, entry.interaction, entry.action, entry.outcome, entry.status) == (
        "access", "create", "C", "4", 403)
    assert (entry.patient, entry.entity_type, entry.entity_id) == (
        "pat-1", "DocumentReference", None)
    assert entry.rule and entry.rule.endswith(rule)
    assert (entry.agent.who, entry.agent.on_behalf_of) == (actor.who, on_behalf_of)
    assert world.uow.documents.metadata == {} and world.uow.commits == 1
