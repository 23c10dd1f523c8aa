"""The world the access matrix attacks (issue #12, "Attack ourselves"): one record with documents
of every confidentiality, grants of every kind, an emergency window, a block; and every kind of
caller the platform knows, each able to mint a fresh token (tokens live five minutes, the
matrix runs longer than that on a busy machine).

Everything is made the production way: certificates of the platform CA and client assertions
signed with PyJWT for professionals and hospital systems, the authorization code grant's
services for patients' and representatives' apps and operators' tools, the record policy's use
cases for the patient's choices, and ITI-65 over HTTP for the documents.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.testclient import TestClient

from carevault.adapters.keys.pki_keys import ca_key_password
from carevault.adapters.storage.document_store import DocumentCriteria, DocumentStore
from carevault.bootstrap import Platform
from carevault.domain.authorization import (
    Authority,
    Confidentiality,
    DocumentFilter,
    GrantLevel,
    MandateScope,
    Party,
    Subject,
    SubjectKind,
)
from carevault.domain.directory import Identifier
from carevault.domain.national_id import make_luxembourg_national_id
from carevault.domain.queries import Page, RoleQuery
from carevault.fhirmodel.directory import new_organization, new_patient, new_practitioner
from carevault.services import directory as svc
from carevault.services import pki
from carevault.services.record_policy import Actor as PolicyActor
from carevault.services.record_policy import practitioner_subject
from carevault.services.tokens import ASSERTION_TYPE, issue_backend_token
from support.authorities import REGISTRAR_SCOPE, authorize, presence_code, with_presence
from support.backend import Holder, assertion, holder
from support.documents import FHIR_JSON, PDF, detached_jws, provide_bundle
from support.tokens import account_token

H1_SYSTEM = "https://carevault.lu/fhir/sid/local/matrix-hospital"
IDS_SYSTEM = "https://carevault.lu/fhir/sid/local/matrix-identity-source"
CARD_SCOPE = "system/*.cruds"  # a professional's client asks for everything; it is narrowed
PATIENT_SCOPE = "launch/patient patient/*.cruds"
READ_ONLY_SCOPE = "launch/patient patient/*.rs"
PASSWORD = "matrix people keep long passphrases 7"
SIGNATURE_FORMAT = "urn:ihe:iti:dsg:detached:2014"

# (class code, type code) of the documents, from the affinity domain.
CONSULTATION = ("11488-4", "11488-4")  # engine class consultation-report
PSYCHIATRIC = ("11488-4", "34788-0")  # psychiatric: physicians only
MEDICATION = ("56445-0", "56445-0")  # medication: a pharmacist reads it
SUMMARY = ("60591-5", "60591-5")  # patient-summary
LABORATORY = ("26436-6", "11502-2")  # laboratory
EVENT = ("http://snomed.info/sct", "73761001")  # an event code, for the `event` search


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Caller:
    """One caller of the matrix (a column): who calls, and how they get a token.

    ``mint`` returns a fresh bearer token (None: no token at all). ``practitioner_id`` is whom a
    professional's token speaks for (a system's: the professional it acts for), so that bodies
    which must name the caller (an Encounter's participant, a document's author) do; ``signer``
    signs the documents they publish (their own key, or their organization system's).
    ``assistant`` marks the caller the documented policy refuses by rule 1 whatever the
    directory says of them (docs/authorization.md: assistants have no mandate link yet).
    """

    name: str
    mint: Callable[[], str | None]
    kind: str  # practitioner | system | patient | representative | operator | none
    practitioner_id: str | None = None
    signer: tuple[bytes | str, list[bytes]] | None = None
    patient_id: str | None = None  # a patient's or representative's token context
    account_id: str | None = None
    session_kind: str | None = None  # the portal session such a person opens
    assistant: bool = False
    token: str | None = None  # the token of the current run, set by `mint_all`


@dataclass
class Documents:
    """The record's documents by role, and every document id of the record (signatures too)."""

    by_name: dict[str, str] = field(default_factory=dict)
    signatures: dict[str, str] = field(default_factory=dict)  # signed id -> signature id
    submission_set: str = ""  # the SubmissionSet of the first publication (N, R, V…)


@dataclass
class World:
    platform: Platform
    http: TestClient
    callers: dict[str, Caller]
    patient_id: str
    other_patient_id: str
    patient_national_id: str
    patient_family: str
    patient_birth: date
    h1_id: str
    role_id: str  # a PractitionerRole of the normal-grant physician
    encounter_id: str
    notification_id: str
    consent_id: str  # the normal-grant physician's grant
    sacrificial_consent_id: str  # a grant the matrix's updates may change
    sacrificial_practitioner_id: str
    documents: Documents
    author_signer: tuple[bytes | str, list[bytes]]
    # Portal sessions of the current run, by caller: (cookie, CSRF token).
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next(self) -> int:
        return next(self._counter)

    def caller(self, name: str) -> Caller:
        return self.callers[name]

    def mint_all(self) -> None:
        for caller in self.callers.values():
            caller.token = caller.mint()

    # --- things the matrix's writes may change, made fresh for each cell ----------------------

    def identity_source_patient(self, *, register: bool = True) -> dict[str, Any]:
        """A patient known only by the identity source's number (and a national one): what the
        identity source may write. Registered unless ``register`` is False (a body to create)."""
        n = self.next()
        resource = new_patient(
            self.platform.directory.systems,
            national_id=make_luxembourg_national_id(
                date(1950, 1, 1) + timedelta(days=n), n % 1000
            ),
            family=f"Sacrifice{n}",
            given=["Matrix"],
            birth_date=date(1950, 1, 1) + timedelta(days=n),
            gender="male",
            local_ids=[Identifier(IDS_SYSTEM, f"I-{n}")],
        )
        if not register:
            return resource
        with self.platform.unit_of_work() as uow:
            return svc.create_patient(uow, self.platform.directory, resource).resource

    def merged_pair(self) -> tuple[str, str]:
        """Two identity-source patients, the first merged into the second."""
        source = self.identity_source_patient()["id"]
        survivor = self.identity_source_patient()["id"]
        with self.platform.unit_of_work() as uow:
            svc.merge_patients(uow, self.platform.directory, source, survivor)
        return source, survivor

    def new_practitioner(self, *, register: bool = True,
                         profession: str = "physician") -> dict[str, Any]:
        n = self.next()
        resource = new_practitioner(
            self.platform.directory.systems,
            identifier=f"HP-SAC-{n}",
            family=f"Sacrifice{n}",
            given=["Matrix"],
        )
        if not register:
            return resource
        ctx = self.platform.directory
        with self.platform.unit_of_work() as uow:
            (stored, _), = svc.register_professionals(
                uow, ctx, [svc.NewProfessional(resource, profession, None, None)])
        return stored.resource

    def publish(self, name: str, *, held: bool = False) -> str:
        """A fresh document by the author (for a cell that would use one up)."""
        key, chain = self.author_signer
        bundle = provide_bundle(
            self.patient_id, f"Practitioner/{self.caller('author').practitioner_id}",
            signature=detached_jws(PDF, key, chain), held=True if held else None,
            title=f"Matrix {name}")
        return _published(self.http, self.caller("author"), bundle)


def _published(http: TestClient, author: Caller, bundle: dict[str, Any]) -> str:
    answer = http.post("/fhir", json=bundle, headers=bearer(author.mint()))
    assert answer.status_code == 200, answer.text
    locations = [e["response"]["location"] for e in answer.json()["entry"]]
    return next(loc.split("/")[-3] for loc in locations if "/DocumentReference/" in loc)


def bearer(token: str | None) -> dict[str, str]:
    return {**FHIR_JSON, **({"Authorization": f"Bearer {token}"} if token else {})}


def tampered(token: str) -> str:
    """The same token with one character of its signature changed."""
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1:]}"


# --- building it ----------------------------------------------------------------------------


def build_world(platform: Platform, http: TestClient) -> World:
    ctx = platform.directory
    systems = ctx.systems
    pki_ctx = pki.PkiContext(systems=systems,
                             ca_password=ca_key_password(platform.settings.key_source),
                             clock=now)
    with platform.unit_of_work() as uow:
        pki.init_pki(uow, pki_ctx)

    def organization(identifier: str, name: str, patient_system: str | None = None) -> str:
        with platform.unit_of_work() as uow:
            return svc.create_organization(uow, ctx, new_organization(
                systems, identifier=identifier, name=name, kind="hospital",
                patient_id_system=patient_system)).id

    h1 = organization("ORG-MX-H1", "Matrix Hospital", H1_SYSTEM)
    ids_org = organization("ORG-MX-IDS", "Matrix Identity Source", IDS_SYSTEM)
    registry = organization("ORG-MX-REG", "Matrix Provider Registry")
    admission = organization("ORG-MX-ADM", "Matrix Admissions")
    group = organization("ORG-MX-GRP", "Matrix Group Practice")
    pharmacy = organization("ORG-MX-PHA", "Matrix Pharmacy")  # the pharmacist dispenses there
    authorize(platform, ids_org, Authority.IDENTITY_SOURCE)
    authorize(platform, registry, Authority.PROVIDER_REGISTRY)
    authorize(platform, admission, Authority.ADMISSION_SYSTEM)

    # Professionals: (caller name, identifier, profession, specialty, organization).
    people = [
        ("author", "HP-MX-AUTHOR", "physician", "general-practice", h1),
        ("normal-grant", "HP-MX-NORMAL", "physician", "cardiology", h1),
        ("extended-grant", "HP-MX-EXTENDED", "physician", "internal-medicine", None),
        ("expired-grant", "HP-MX-EXPIRED", "physician", "cardiology", None),
        ("delegated", "HP-MX-DELEGATE", "physician", "cardiology", None),
        ("blocked", "HP-MX-BLOCKED", "physician", "cardiology", None),
        ("referring", "HP-MX-REFERRING", "physician", "general-practice", None),
        ("emergency", "HP-MX-ER", "physician", "emergency-medicine", None),
        ("assistant", "HP-MX-ASSISTANT", "medical-assistant", None, None),
        ("pharmacist", "HP-MX-PHARMA", "pharmacist", None, pharmacy),
        ("stranger", "HP-MX-STRANGER", "physician", "cardiology", None),
        ("organization-grant", "HP-MX-GROUP", "physician", "general-practice", group),
        ("identity-clerk", "HP-MX-IDS", "physician", None, ids_org),
        ("registry-clerk", "HP-MX-REG", "physician", None, registry),
        ("admitting", "HP-MX-ADM", "physician", "emergency-medicine", admission),
    ]
    with platform.unit_of_work() as uow:
        svc.register_professionals(uow, ctx, [
            svc.NewProfessional(new_practitioner(systems, identifier=identifier,
                                                 family=f"Matrix{name.title()}",
                                                 given=["Theo"]),
                                profession, specialty, org)
            for name, identifier, profession, specialty, org in people])
    with platform.unit_of_work() as uow:
        practitioner_ids = uow.directory.practitioner_ids_by_identifier(
            [identifier for _, identifier, *_ in people])

    def certificate(issue: Callable[..., object], subject_id: str) -> Holder:
        issued: list[pki.Credentials] = []
        with platform.unit_of_work() as uow:
            issue(uow, pki_ctx, subject_id, issued.append)
        return holder(issued[0])

    def backend_mint(who: Holder, **claims: Any) -> Callable[[], str]:
        def mint() -> str:
            with platform.unit_of_work() as uow:
                return issue_backend_token(
                    uow, platform.tokens, assertion_type=ASSERTION_TYPE,
                    assertion=assertion(who, platform, **claims), scope=CARD_SCOPE).access_token
        return mint

    callers: dict[str, Caller] = {}
    cards: dict[str, Holder] = {}
    for name, identifier, *_ in people:
        if name in ("identity-clerk", "registry-clerk", "admitting"):
            continue  # they work through their organization's system
        card = cards[name] = certificate(pki.issue_practitioner_certificate,
                                         practitioner_ids[identifier])
        callers[name] = Caller(name, backend_mint(card), "practitioner",
                               practitioner_ids[identifier], (card.key_pem, card.chain_der),
                               assistant=name == "assistant")
    for name, org, acts_for in (("organization-system", h1, "HP-MX-NORMAL"),
                                ("identity-source", ids_org, "HP-MX-IDS"),
                                ("provider-registry", registry, "HP-MX-REG"),
                                ("admission-system", admission, "HP-MX-ADM")):
        system = certificate(pki.issue_system_certificate, org)
        callers[name] = Caller(name, backend_mint(system, act={"sub": acts_for}), "system",
                               practitioner_ids[acts_for], (system.key_pem, system.chain_der))

    # Patients: the record under attack, and another patient with a record of their own.
    family, born = "Matrixpatient", date(1981, 5, 17)
    national = make_luxembourg_national_id(born, 421)
    with platform.unit_of_work() as uow:
        patient_id = svc.create_patient(uow, ctx, new_patient(
            systems, national_id=national, family=family, given=["Zoé", "Ann"],
            birth_date=born, gender="female", postal_code="L-1210", city="Luxembourg",
            local_ids=[Identifier(H1_SYSTEM, "MX-1")])).id
        other_id = svc.create_patient(uow, ctx, new_patient(
            systems, national_id=make_luxembourg_national_id(born, 422), family="Matrixother",
            given=["Paul"], birth_date=born, gender="male",
            local_ids=[Identifier(H1_SYSTEM, "MX-2")])).id

    accounts = platform.accounts

    def person(login: str, patient: str | None) -> str:
        if patient is None:
            return accounts.add_representative(login, PASSWORD).account_id
        return accounts.enrol_patient(login, PASSWORD, patient_id=patient).account_id

    def app_mint(account: str, patient: str | None, kind: str, scope: str) -> Callable[[], str]:
        return lambda: account_token(platform, account, patient, kind=kind, scope=scope)

    mine = person("matrix-patient@example.lu", patient_id)
    theirs = person("matrix-other@example.lu", other_id)
    callers["patient"] = Caller("patient", app_mint(mine, patient_id, "patient", PATIENT_SCOPE),
                                "patient", patient_id=patient_id, account_id=mine,
                                session_kind="patient")
    callers["patient-app-read-only"] = Caller(
        "patient-app-read-only", app_mint(mine, patient_id, "patient", READ_ONLY_SCOPE),
        "patient", patient_id=patient_id, account_id=mine)
    callers["other-patient"] = Caller(
        "other-patient", app_mint(theirs, other_id, "patient", PATIENT_SCOPE), "patient",
        patient_id=other_id, account_id=theirs, session_kind="patient")

    me = PolicyActor(Subject(SubjectKind.PATIENT, patient_id), f"Patient/{patient_id}")
    policy = platform.policy
    t0 = now()
    for name, scope, start, end in (
            ("representative-read", MandateScope.READ, None, None),
            ("representative-manage", MandateScope.MANAGE, None, None),
            ("representative-expired", MandateScope.READ, t0 - timedelta(days=60),
             t0 - timedelta(days=1))):
        account = person(f"matrix-{name}@example.lu", None)
        platform.representatives.add(me, patient_id, account, scope, start=start, end=end)
        callers[name] = Caller(name, app_mint(account, patient_id, "representative",
                                              PATIENT_SCOPE),
                               "representative", patient_id=patient_id, account_id=account,
                               session_kind="representative")

    def operator(name: str, *, officer: bool = False, registrar: bool = False,
                 kind: str, scope: str) -> None:
        account = accounts.register_operator(f"matrix-{name}", PASSWORD,
                                             security_officer=officer, registrar=registrar,
                                             by="os-user:test").account_id
        callers[name] = Caller(name, app_mint(account, None, kind, scope), "operator",
                               account_id=account, session_kind=kind)

    operator("operator", kind="operator", scope="system/*.cruds")
    operator("registrar", registrar=True, kind="registrar", scope=REGISTRAR_SCOPE)
    operator("security-officer", officer=True, kind="security-officer",
             scope="system/AuditEvent.rs system/Patient.r system/DetectedIssue.rus")
    normal_mint = callers["normal-grant"].mint
    callers["anonymous"] = Caller("anonymous", lambda: None, "none")
    callers["bad-signature"] = Caller("bad-signature", lambda: tampered(normal_mint() or ""),
                                      "none")

    # The patient's choices.
    def pid(name: str) -> str:
        found = callers[name].practitioner_id
        assert found is not None
        return found

    policy.grant(me, patient_id, Party.PRACTITIONER, pid("normal-grant"), GrantLevel.NORMAL)
    policy.grant(me, patient_id, Party.PRACTITIONER, pid("extended-grant"),
                 GrantLevel.EXTENDED, delegable=True)
    policy.grant(me, patient_id, Party.PRACTITIONER, pid("expired-grant"), GrantLevel.EXTENDED,
                 start=t0 - timedelta(days=60), end=t0 - timedelta(days=30))
    for name in ("blocked", "assistant", "pharmacist"):
        policy.grant(me, patient_id, Party.PRACTITIONER, pid(name), GrantLevel.NORMAL)
    policy.grant(me, patient_id, Party.ORGANIZATION, group, GrantLevel.NORMAL,
                 end=t0 + timedelta(days=30))
    policy.block(me, patient_id, Party.PRACTITIONER, pid("blocked"))
    policy.name_referring_physician(me, patient_id, pid("referring"))
    policy.allow_delegation(me, patient_id, True)
    with platform.unit_of_work() as uow:
        delegator = practitioner_subject(uow, pid("extended-grant"))
    platform.care.delegate(PolicyActor(delegator, f"Practitioner/{delegator.id}"), patient_id,
                    pid("delegated"), GrantLevel.NORMAL, t0 + timedelta(days=7))
    with platform.unit_of_work() as uow:
        er = practitioner_subject(uow, pid("emergency"))
    platform.care.declare_emergency(PolicyActor(er, f"Practitioner/{er.id}"), patient_id,
                             "unconscious on arrival (access matrix)")
    sacrificial = new_practitioner(systems, identifier="HP-MX-SACRIFICE", family="Sacrifice",
                                   given=["Consent"])
    with platform.unit_of_work() as uow:
        (sacrifice, _), = svc.register_professionals(
            uow, ctx, [svc.NewProfessional(sacrificial, "physician", None, None)])
    sacrificial_grant = policy.grant(me, patient_id, Party.PRACTITIONER, sacrifice.id,
                                     GrantLevel.NORMAL)
    with platform.unit_of_work() as uow:
        consent_id = next(g.grant.id for g in uow.records.grants(patient_id)
                          if g.grant.party_id == pid("normal-grant"))

    # The author saw the patient (proved by the patient's presence code): a care event.
    author = callers["author"]
    seen = http.post("/fhir/Encounter", headers=bearer(author.mint()), json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{pid('author')}"}}],
        "period": {"start": (t0 - timedelta(hours=2)).isoformat()}},
        presence_code(platform, patient_id)))
    assert seen.status_code == 201, seen.text
    encounter_id = str(seen.json()["id"])

    # The documents: one of each confidentiality, one to hide, one a pharmacist may not see
    # (psychiatric: physicians only), one a pharmacist sees, one held from the patient, the
    # patient's own upload, and one by another author (the referring physician) with an event.
    assert author.signer is not None
    key, chain = author.signer
    documents = Documents()

    def signed_bundle(who: Caller, name: str, codes: tuple[str, str], confidentiality: str,
                      **extra: Any) -> dict[str, Any]:
        assert who.signer is not None
        return provide_bundle(patient_id, f"Practitioner/{who.practitioner_id}",
                              class_code=codes[0], type_code=codes[1],
                              confidentiality=confidentiality, title=f"Matrix {name}",
                              signature=detached_jws(PDF, *who.signer), **extra)

    first = signed_bundle(author, "N", CONSULTATION, "N")
    answer = http.post("/fhir", json=first, headers=bearer(author.mint()))
    assert answer.status_code == 200, answer.text
    locations = [e["response"]["location"] for e in answer.json()["entry"]]
    documents.by_name["N"] = next(loc.split("/")[-3] for loc in locations
                                  if "/DocumentReference/" in loc)
    documents.submission_set = next(loc.split("/")[-3] for loc in locations if "/List/" in loc)
    for name, codes, level, extra in (
            ("R", CONSULTATION, "R", {}),
            ("V", CONSULTATION, "V", {}),
            ("hidden", CONSULTATION, "N", {}),
            ("psychiatric", PSYCHIATRIC, "N", {}),
            ("medication", MEDICATION, "N", {}),
            ("held", CONSULTATION, "N", {"held": True})):
        documents.by_name[name] = _published(
            http, author, signed_bundle(author, name, codes, level, **extra))
    documents.by_name["by-referring"] = _published(
        http, callers["referring"],
        signed_bundle(callers["referring"], "by-referring", LABORATORY, "R", event=EVENT))
    upload = provide_bundle(patient_id, f"Patient/{patient_id}", class_code=SUMMARY[0],
                            type_code=SUMMARY[1], title="Matrix upload")
    documents.by_name["patient-upload"] = _published(http, callers["patient"], upload)
    policy.hide_document(me, patient_id, documents.by_name["hidden"], True)
    with platform.unit_of_work() as uow:
        store = DocumentStore(uow.directory.connection)
        for document_id in list(documents.by_name.values()):
            _total, found = store.search(patient_id, EVERYTHING,
                                         DocumentCriteria(related=[(document_id,)]),
                                         offset=0, count=10)
            for stored in found:
                if stored.metadata.signs == document_id:
                    documents.signatures[document_id] = stored.metadata.id
        role_id = uow.directory.search_roles(
            RoleQuery(practitioner=[(pid("normal-grant"),)]), Page(0, 10)).items[0].id
        _total, notices = uow.records.notifications(patient_id, 0, 1)
        notification_id = notices[0].id

    world = World(
        platform=platform, http=http, callers=callers, patient_id=patient_id,
        other_patient_id=other_id, patient_national_id=national, patient_family=family,
        patient_birth=born, h1_id=h1, role_id=role_id,
        encounter_id=encounter_id, notification_id=notification_id, consent_id=consent_id,
        sacrificial_consent_id=sacrificial_grant.id, sacrificial_practitioner_id=sacrifice.id,
        documents=documents, author_signer=(key, chain))
    return world


EVERYTHING = DocumentFilter(confidentiality=frozenset(Confidentiality), classes=None,
                             include_hidden=True, include_not_yet_visible=True)
