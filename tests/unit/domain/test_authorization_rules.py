"""The authorization engine, rule by rule: one row per rule and per combination issue 4 names."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from carevault.adapters.package_config import builtin_profile_matrix
from carevault.domain.authorization import (
    Action,
    Authority,
    Block,
    CareProof,
    Confidentiality,
    Decision,
    Delegation,
    DirectoryArea,
    DocumentFacts,
    EmergencySetting,
    EmergencyWindow,
    Grant,
    GrantLevel,
    MandateScope,
    Obligation,
    Party,
    ProfileMatrix,
    RecordFacts,
    RecordState,
    Representative,
    Subject,
    SubjectKind,
    decide,
    decide_audit_trail,
    decide_directory,
    visible_filter,
)

BUILTIN_MATRIX = builtin_profile_matrix()
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)

GP = Subject(
    SubjectKind.PRACTITIONER,
    "dr-gp",
    "physician",
    "general-practice",
    organization_ids=frozenset({"practice-1"}),
)
CARDIO = Subject(
    SubjectKind.PRACTITIONER,
    "dr-cardio",
    "physician",
    "cardiology",
    organization_ids=frozenset({"hospital-1"}),
    care_team_ids=frozenset({"team-heart"}),
)
AUTHOR = Subject(
    SubjectKind.PRACTITIONER,
    "dr-author",
    "physician",
    "psychiatry",
    organization_ids=frozenset({"hospital-1"}),
)
PHARMACIST = Subject(
    SubjectKind.PRACTITIONER,
    "ph-1",
    "pharmacist",
    organization_ids=frozenset({"pharmacy-1"}),
)
STRANGER = Subject(SubjectKind.PRACTITIONER, "dr-stranger", "physician", "emergency-medicine")
ASSISTANT = Subject(SubjectKind.ASSISTANT, "as-1", "medical-assistant", mandator=CARDIO)
HOSPITAL_IS = Subject(
    SubjectKind.ORGANIZATION_SYSTEM, "client-his", organization_ids=frozenset({"hospital-1"})
)
PATIENT = Subject(SubjectKind.PATIENT, "pat-1")
OTHER_PATIENT = Subject(SubjectKind.PATIENT, "pat-2")
PARENT = Subject(SubjectKind.REPRESENTATIVE, "rep-manage")
READER = Subject(SubjectKind.REPRESENTATIVE, "rep-read")
FORMER = Subject(SubjectKind.REPRESENTATIVE, "rep-expired")
OPERATOR = Subject(SubjectKind.OPERATOR, "op-1")
OFFICER = Subject(SubjectKind.SECURITY_OFFICER, "so-1")
REGISTRAR = Subject(SubjectKind.REGISTRAR, "reg-1")
# A hospital's system acting for one of its professionals, registered as the hospital's
# identity source and admission system; a national provider registry's feed.
HOSPITAL_FEED = replace(
    CARDIO, authorities=frozenset({Authority.IDENTITY_SOURCE, Authority.ADMISSION_SYSTEM})
)
PROVIDER_FEED = replace(STRANGER, authorities=frozenset({Authority.PROVIDER_REGISTRY}))
# A care event proved by the admission system, or by a presence code the patient gave.
ADMITTED = replace(STRANGER, care_proof=CareProof.ADMISSION_SYSTEM)
PRESENT = replace(STRANGER, care_proof=CareProof.PRESENCE_CODE)


def grant(party: Party, party_id: str, level: GrantLevel, **kw: object) -> Grant:
    defaults: dict[str, object] = {"start": NOW - 10 * DAY, "end": NOW + 10 * DAY}
    defaults.update(kw)
    return Grant(party, party_id, level, granted_by="pat-1", **defaults)  # type: ignore[arg-type]


RECORD = RecordFacts(
    patient_id="pat-1",
    referring_physician_id="dr-gp",
    grants=(
        grant(Party.PRACTITIONER, "dr-cardio", GrantLevel.NORMAL),
        grant(Party.ORGANIZATION, "pharmacy-1", GrantLevel.NORMAL),
        grant(Party.ORGANIZATION, "hospital-1", GrantLevel.NORMAL),
    ),
    representatives=(
        Representative("rep-manage", MandateScope.MANAGE, NOW - 100 * DAY),
        Representative("rep-read", MandateScope.READ, NOW - 100 * DAY, NOW + 100 * DAY),
        Representative("rep-expired", MandateScope.MANAGE, NOW - 100 * DAY, NOW - DAY),
    ),
)


def doc(**kw: object) -> DocumentFacts:
    base = DocumentFacts(
        id="doc-1",
        author_id="dr-author",
        author_organization_id="hospital-1",
        class_code="consultation-report",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


N_DOC = doc()
R_DOC = doc(confidentiality=Confidentiality.R)
V_DOC = doc(confidentiality=Confidentiality.V)
HIDDEN = doc(hidden=True)
UNRELEASED = doc(not_yet_visible_to_patient=True)
PSY = doc(class_code="psychiatric")
MEDICATION = doc(class_code="medication")

EMERGENCY_OPEN = replace(RECORD, emergency_windows=(EmergencyWindow("dr-stranger", NOW + DAY),))
CLOSED = replace(RECORD, state=RecordState.CLOSED)


@dataclass(frozen=True)
class Row:
    name: str
    subject: Subject
    action: Action
    record: RecordFacts | None
    document: DocumentFacts | None
    permit: bool
    rule: str


ROWS = [
    # 1 identity
    Row("invalid token", replace(GP, identity_valid=False), Action.READ, RECORD, N_DOC, False,
        "identity"),
    Row("inactive licence", replace(GP, licence_active=False), Action.READ, RECORD, N_DOC, False,
        "identity"),
    Row("assistant without mandator", replace(ASSISTANT, mandator=None), Action.READ, RECORD,
        N_DOC, False, "identity"),
    Row("assistant of a struck-off practitioner",
        replace(ASSISTANT, mandator=replace(CARDIO, licence_active=False)), Action.READ, RECORD,
        N_DOC, False, "identity"),
    # operator always denied clinical content
    Row("operator reads", OPERATOR, Action.READ, RECORD, N_DOC, False, "operator"),
    Row("operator searches", OPERATOR, Action.SEARCH, RECORD, None, False, "operator"),
    Row("operator writes", OPERATOR, Action.WRITE, RECORD, N_DOC, False, "operator"),
    Row("operator breaks the glass", OPERATOR, Action.EMERGENCY, RECORD, None, False,
        "operator"),
    # 2 record exists and is active; closed record denies everyone but the patient
    Row("no record", GP, Action.READ, None, N_DOC, False, "record"),
    Row("closed: referring physician", GP, Action.READ, CLOSED, N_DOC, False, "record"),
    Row("closed: author", AUTHOR, Action.READ, CLOSED, N_DOC, False, "record"),
    Row("closed: emergency", STRANGER, Action.EMERGENCY,
        replace(EMERGENCY_OPEN, state=RecordState.CLOSED), None, False, "record"),
    Row("closed: read-only representative", READER, Action.READ, CLOSED, N_DOC, False, "record"),
    Row("closed: patient reads", PATIENT, Action.READ, CLOSED, N_DOC, True, "patient"),
    Row("closed: managing representative", PARENT, Action.READ, CLOSED, N_DOC, True,
        "representative"),
    # 3 blacklist, beating emergency, grants, author and referral
    Row("blocked practitioner", CARDIO, Action.READ,
        replace(RECORD, blocks=(Block(Party.PRACTITIONER, "dr-cardio"),)), N_DOC, False,
        "blacklist"),
    Row("blocked organization", CARDIO, Action.READ,
        replace(RECORD, blocks=(Block(Party.ORGANIZATION, "hospital-1"),)), N_DOC, False,
        "blacklist"),
    Row("blocked author", AUTHOR, Action.READ,
        replace(RECORD, blocks=(Block(Party.PRACTITIONER, "dr-author"),)), N_DOC, False,
        "blacklist"),
    Row("blacklist beats emergency declaration", STRANGER, Action.EMERGENCY,
        replace(RECORD, blocks=(Block(Party.PRACTITIONER, "dr-stranger"),)), None, False,
        "blacklist"),
    Row("blacklist beats an open emergency window", STRANGER, Action.READ,
        replace(EMERGENCY_OPEN, blocks=(Block(Party.PRACTITIONER, "dr-stranger"),)), N_DOC,
        False, "blacklist"),
    Row("blocked mandator blocks the assistant", ASSISTANT, Action.READ,
        replace(RECORD, blocks=(Block(Party.PRACTITIONER, "dr-cardio"),)), N_DOC, False,
        "blacklist"),
    # 4 author and patient always read
    Row("author reads without grant", AUTHOR, Action.READ, RECORD, N_DOC, True, "author"),
    Row("author reads V", AUTHOR, Action.READ, RECORD, V_DOC, True, "author"),
    Row("author reads hidden", AUTHOR, Action.READ, RECORD, HIDDEN, True, "author"),
    Row("patient reads V", PATIENT, Action.READ, RECORD, V_DOC, True, "patient"),
    Row("patient reads hidden", PATIENT, Action.READ, RECORD, HIDDEN, True, "patient"),
    Row("patient of another record", OTHER_PATIENT, Action.READ, RECORD, N_DOC, False,
        "patient"),
    # not yet visible hides from the patient (and representatives) only
    Row("not yet visible: patient", PATIENT, Action.READ, RECORD, UNRELEASED, False,
        "not-yet-visible"),
    Row("not yet visible: representative", PARENT, Action.READ, RECORD, UNRELEASED, False,
        "not-yet-visible"),
    Row("not yet visible: granted professional", CARDIO, Action.READ, RECORD, UNRELEASED, True,
        "grant"),
    # 5 hidden beats grant except for author and referring physician
    Row("hidden beats grant", CARDIO, Action.READ, RECORD, HIDDEN, False, "hidden"),
    Row("hidden beats emergency", STRANGER, Action.READ, EMERGENCY_OPEN, HIDDEN, False,
        "hidden"),
    Row("hidden: referring physician", GP, Action.READ, RECORD, HIDDEN, True, "grant"),
    Row("hidden: assistant of the referring physician",
        replace(ASSISTANT, mandator=GP), Action.READ, RECORD, HIDDEN, False, "hidden"),
    # 6 profile
    Row("pharmacist: medication", PHARMACIST, Action.READ, RECORD, MEDICATION, True, "grant"),
    Row("pharmacist: psychiatric", PHARMACIST, Action.READ, RECORD, PSY, False, "profile"),
    Row("pharmacist: consultation report", PHARMACIST, Action.READ, RECORD, N_DOC, False,
        "profile"),
    Row("physician: psychiatric", CARDIO, Action.READ, RECORD, PSY, True, "grant"),
    Row("pharmacist writes a consultation report", PHARMACIST, Action.WRITE, RECORD,
        doc(author_id="ph-1"), False, "profile"),
    Row("hospital system reads HIV class", HOSPITAL_IS, Action.READ, RECORD,
        doc(class_code="hiv"), False, "profile"),
    # 7 grant: active, level, referral, delegation
    Row("normal grant reads N", CARDIO, Action.READ, RECORD, N_DOC, True, "grant"),
    Row("organization grant", HOSPITAL_IS, Action.READ, RECORD, N_DOC, True, "grant"),
    Row("care team grant", CARDIO, Action.READ,
        replace(RECORD, grants=(grant(Party.CARE_TEAM, "team-heart", GrantLevel.EXTENDED),)),
        R_DOC, True, "grant"),
    Row("group grant without end date is ignored", CARDIO, Action.READ,
        replace(RECORD, grants=(grant(Party.CARE_TEAM, "team-heart", GrantLevel.NORMAL,
                                      end=None),)), N_DOC, False, "deny-by-default"),
    Row("no grant", STRANGER, Action.READ, RECORD, N_DOC, False, "deny-by-default"),
    Row("expired grant denies", CARDIO, Action.READ,
        replace(RECORD, grants=(grant(Party.PRACTITIONER, "dr-cardio", GrantLevel.EXTENDED,
                                      end=NOW - DAY),)), N_DOC, False, "deny-by-default"),
    Row("grant not started", CARDIO, Action.READ,
        replace(RECORD, grants=(grant(Party.PRACTITIONER, "dr-cardio", GrantLevel.NORMAL,
                                      start=NOW + DAY),)), N_DOC, False, "deny-by-default"),
    Row("open-ended personal grant", CARDIO, Action.READ,
        replace(RECORD, grants=(grant(Party.PRACTITIONER, "dr-cardio", GrantLevel.NORMAL,
                                      end=None),)), N_DOC, True, "grant"),
    Row("write needs a grant", CARDIO, Action.WRITE, RECORD, doc(author_id="dr-cardio"), True,
        "grant"),
    Row("write without grant", STRANGER, Action.WRITE, RECORD, doc(author_id="dr-stranger"),
        False, "deny-by-default"),
    Row("record-level search with a grant", CARDIO, Action.SEARCH, RECORD, None, True, "grant"),
    Row("record-level search without", STRANGER, Action.SEARCH, RECORD, None, False,
        "deny-by-default"),
    # 8 mandate: assistant narrowed, representatives within scope and dates
    Row("assistant reads within mandator's grant", ASSISTANT, Action.READ, RECORD, N_DOC, True,
        "grant"),
    Row("assistant never writes", ASSISTANT, Action.WRITE, RECORD, N_DOC, False, "mandate"),
    Row("assistant cannot break the glass", ASSISTANT, Action.EMERGENCY, RECORD, None, False,
        "emergency"),
    Row("assistant does not get the mandator's R beyond it", ASSISTANT, Action.READ, RECORD,
        R_DOC, False, "confidentiality"),
    Row("representative outside mandate dates denied", FORMER, Action.READ, RECORD, N_DOC, False,
        "mandate"),
    Row("representative before mandate start denied", PARENT, Action.READ,
        replace(RECORD, representatives=(
            Representative("rep-manage", MandateScope.MANAGE, NOW + DAY),)), N_DOC, False,
        "mandate"),
    Row("read mandate cannot write", READER, Action.WRITE, RECORD, N_DOC, False, "mandate"),
    Row("manage mandate writes", PARENT, Action.WRITE, RECORD, N_DOC, True, "representative"),
    Row("read mandate reads", READER, Action.READ, RECORD, R_DOC, True, "representative"),
    Row("representative reads hidden", READER, Action.READ, RECORD, HIDDEN, True,
        "representative"),
    # 9 confidentiality: V only author and patient; R needs extended
    Row("V denied to granted professional", CARDIO, Action.READ, RECORD, V_DOC, False,
        "confidentiality"),
    Row("V denied to referring physician", GP, Action.READ, RECORD, V_DOC, False,
        "confidentiality"),
    Row("V denied to representative", PARENT, Action.READ, RECORD, V_DOC, False,
        "confidentiality"),
    Row("V denied in emergency", STRANGER, Action.READ,
        replace(EMERGENCY_OPEN, emergency_setting=EmergencySetting.NORMAL_AND_RESTRICTED),
        V_DOC, False, "confidentiality"),
    Row("R needs extended", CARDIO, Action.READ, RECORD, R_DOC, False, "confidentiality"),
    Row("R with extended", CARDIO, Action.READ,
        replace(RECORD, grants=(grant(Party.PRACTITIONER, "dr-cardio", GrantLevel.EXTENDED),)),
        R_DOC, True, "grant"),
    Row("referring physician holds extended", GP, Action.READ, RECORD, R_DOC, True, "grant"),
    # delegation never exceeds the delegator
    Row("delegation from the referring physician", STRANGER, Action.READ,
        replace(RECORD, delegation_allowed=True, delegations=(
            Delegation("dr-gp", "dr-stranger", GrantLevel.EXTENDED, NOW - DAY, NOW + DAY),)),
        R_DOC, True, "grant"),
    Row("delegation capped at the delegator's normal", STRANGER, Action.READ,
        replace(RECORD, delegation_allowed=True,
                grants=(grant(Party.PRACTITIONER, "dr-cardio", GrantLevel.NORMAL,
                              delegable=True),),
                delegations=(Delegation("dr-cardio", "dr-stranger", GrantLevel.EXTENDED,
                                        NOW - DAY, NOW + DAY),)),
        R_DOC, False, "confidentiality"),
    Row("delegation of a non-delegable grant", STRANGER, Action.READ,
        replace(RECORD, delegation_allowed=True, delegations=(
            Delegation("dr-cardio", "dr-stranger", GrantLevel.NORMAL, NOW - DAY, NOW + DAY),)),
        N_DOC, False, "deny-by-default"),
    Row("delegation when the patient does not allow it", STRANGER, Action.READ,
        replace(RECORD, delegations=(
            Delegation("dr-gp", "dr-stranger", GrantLevel.NORMAL, NOW - DAY, NOW + DAY),)),
        N_DOC, False, "deny-by-default"),
    Row("expired delegation", STRANGER, Action.READ,
        replace(RECORD, delegation_allowed=True, delegations=(
            Delegation("dr-gp", "dr-stranger", GrantLevel.NORMAL, NOW - 2 * DAY, NOW - DAY),)),
        N_DOC, False, "deny-by-default"),
    Row("delegation outliving the delegator's grant", STRANGER, Action.READ,
        replace(RECORD, delegation_allowed=True,
                grants=(grant(Party.PRACTITIONER, "dr-cardio", GrantLevel.NORMAL,
                              delegable=True, end=NOW - DAY),),
                delegations=(Delegation("dr-cardio", "dr-stranger", GrantLevel.NORMAL,
                                        NOW - 2 * DAY, NOW + DAY),)),
        N_DOC, False, "deny-by-default"),
    # 10 emergency
    Row("declare emergency", STRANGER, Action.EMERGENCY, RECORD, None, True, "emergency"),
    Row("emergency turned off", STRANGER, Action.EMERGENCY,
        replace(RECORD, emergency_setting=EmergencySetting.OFF), None, False, "emergency"),
    Row("patient cannot break the glass", PATIENT, Action.EMERGENCY, RECORD, None, False,
        "emergency"),
    Row("emergency window reads N", STRANGER, Action.READ, EMERGENCY_OPEN, N_DOC, True,
        "emergency"),
    Row("emergency window: R needs the widened setting", STRANGER, Action.READ, EMERGENCY_OPEN,
        R_DOC, False, "confidentiality"),
    Row("emergency widened to R", STRANGER, Action.READ,
        replace(EMERGENCY_OPEN, emergency_setting=EmergencySetting.NORMAL_AND_RESTRICTED),
        R_DOC, True, "emergency"),
    Row("widened emergency tops up a normal grant", CARDIO, Action.READ,
        replace(RECORD, emergency_setting=EmergencySetting.NORMAL_AND_RESTRICTED,
                emergency_windows=(EmergencyWindow("dr-cardio", NOW + DAY),)),
        R_DOC, True, "emergency"),
    Row("emergency window closed", STRANGER, Action.READ,
        replace(RECORD, emergency_windows=(EmergencyWindow("dr-stranger", NOW - DAY),)), N_DOC,
        False, "deny-by-default"),
    Row("emergency window of someone else", CARDIO, Action.READ,
        replace(EMERGENCY_OPEN, grants=()), N_DOC, False, "deny-by-default"),
    Row("emergency turned off closes open windows", STRANGER, Action.READ,
        replace(EMERGENCY_OPEN, emergency_setting=EmergencySetting.OFF), N_DOC, False,
        "deny-by-default"),
    Row("emergency still needs the profile", replace(STRANGER, profession="pharmacist",
                                                     specialty=None),
        Action.READ, EMERGENCY_OPEN, PSY, False, "profile"),
    # managing the record (who sees what) is the patient's, or a managing representative's
    Row("patient manages", PATIENT, Action.MANAGE, RECORD, None, True, "patient"),
    Row("patient manages a closed record", PATIENT, Action.MANAGE, CLOSED, None, True,
        "patient"),
    Row("patient manages another record", OTHER_PATIENT, Action.MANAGE, RECORD, None, False,
        "patient"),
    Row("managing representative manages", PARENT, Action.MANAGE, RECORD, None, True,
        "representative"),
    Row("read-only representative cannot manage", READER, Action.MANAGE, RECORD, None, False,
        "mandate"),
    Row("representative outside mandate dates", FORMER, Action.MANAGE, RECORD, None, False,
        "mandate"),
    Row("referring physician cannot manage", GP, Action.MANAGE, RECORD, None, False, "manage"),
    Row("operator cannot manage", OPERATOR, Action.MANAGE, RECORD, None, False, "operator"),
    Row("security officer reads no record", OFFICER, Action.READ, RECORD, N_DOC, False,
        "operator"),
    # personal: consents, notifications, access history
    Row("patient reads their notifications", PATIENT, Action.PERSONAL, RECORD, None, True,
        "patient"),
    Row("read-only representative reads them", READER, Action.PERSONAL, RECORD, None, True,
        "representative"),
    Row("granted professional does not", CARDIO, Action.PERSONAL, RECORD, None, False,
        "personal"),
    # care events open a care relationship for professionals who are not blocked, when proved
    Row("care event from the admission system", ADMITTED, Action.CARE_EVENT, RECORD, None,
        True, "care-event"),
    Row("care event with the patient's presence code", PRESENT, Action.CARE_EVENT, RECORD,
        None, True, "care-event"),
    Row("care event declared by the professional alone", STRANGER, Action.CARE_EVENT, RECORD,
        None, False, "care-event"),
    Row("care event by a hospital system, unproved", HOSPITAL_IS, Action.CARE_EVENT, RECORD,
        None, False, "care-event"),
    Row("care event by a hospital system, proved",
        replace(HOSPITAL_IS, care_proof=CareProof.ADMISSION_SYSTEM), Action.CARE_EVENT, RECORD,
        None, True, "care-event"),
    Row("care event by a blocked practitioner", ADMITTED, Action.CARE_EVENT,
        replace(RECORD, blocks=(Block(Party.PRACTITIONER, "dr-stranger"),)), None, False,
        "blacklist"),
    Row("care event on a closed record", ADMITTED, Action.CARE_EVENT, CLOSED, None, False,
        "record"),
    Row("care event by an assistant", replace(ASSISTANT, care_proof=CareProof.PRESENCE_CODE),
        Action.CARE_EVENT, RECORD, None, False, "mandate"),
    Row("care event by the patient", PATIENT, Action.CARE_EVENT, RECORD, None, False,
        "care-event"),
    Row("care event by a representative", PARENT, Action.CARE_EVENT, RECORD, None, False,
        "care-event"),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_rule(row: Row) -> None:
    decision = decide(row.subject, row.action, row.record, row.document, NOW, BUILTIN_MATRIX)
    assert (decision.permit, decision.rule) == (row.permit, row.rule), decision.explain()
    assert decision.path[-1] == decision.rule
    assert decision.path[0] == "identity"
    assert set(decision.reasons) == {"en", "fr"}
    assert all(text.strip() for text in decision.reasons.values())
    assert decision.reasons["en"] != decision.reasons["fr"]
    assert any(o.kind == "audit" for o in decision.obligations)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_the_filter_agrees_with_every_single_read(row: Row) -> None:
    if row.document is None or row.action is not Action.READ:
        return
    expected = decide(
        row.subject, Action.READ, row.record, row.document, NOW, BUILTIN_MATRIX
    ).permit
    assert (
        visible_filter(row.subject, row.record, NOW, BUILTIN_MATRIX).matches(row.document)
        is expected
    )


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_a_refused_reader_is_not_told_the_state_of_the_document(row: Row) -> None:
    """Hidden, secret, restricted or of a category the profession may not see: the refused
    caller reads a neutral reason (`told`); the precise one stays for `explain`."""
    decision = decide(row.subject, row.action, row.record, row.document, NOW, BUILTIN_MATRIX)
    on_its_state = (
        not decision.permit
        and row.document is not None
        and row.action in (Action.READ, Action.SEARCH)
        and decision.rule in ("hidden", "confidentiality", "profile")
    )
    if on_its_state:
        assert decision.told["en"] == "You may not read this document."
        assert decision.told["fr"] == "Vous ne pouvez pas lire ce document."
        assert decision.reasons["en"] in decision.explain()
        assert decision.told["en"] not in decision.explain()
    else:
        assert decision.told == decision.reasons, decision.explain()


def test_emergency_obligations() -> None:
    declared = decide(STRANGER, Action.EMERGENCY, RECORD, None, NOW, BUILTIN_MATRIX)
    read = decide(STRANGER, Action.READ, EMERGENCY_OPEN, N_DOC, NOW, BUILTIN_MATRIX)
    for decision in (declared, read):
        assert decision.obligations == {
            Obligation("audit", "EMER"),
            Obligation("notify-patient"),
            Obligation("alert-security-officer"),
        }


def test_a_blocked_professional_breaking_the_glass_alerts_the_security_officer() -> None:
    blocked = replace(RECORD, blocks=(Block(Party.PRACTITIONER, "dr-stranger"),))
    decision = decide(STRANGER, Action.EMERGENCY, blocked, None, NOW, BUILTIN_MATRIX)
    assert Obligation("alert-security-officer") in decision.obligations
    assert Obligation("notify-patient") not in decision.obligations


def test_audit_purposes_and_on_behalf_of() -> None:
    def audit(decision: Decision) -> Obligation:
        (found,) = [o for o in decision.obligations if o.kind == "audit"]
        return found

    assert audit(decide(CARDIO, Action.READ, RECORD, N_DOC, NOW, BUILTIN_MATRIX)) == Obligation(
        "audit", "TREAT"
    )
    assert audit(decide(PATIENT, Action.READ, RECORD, N_DOC, NOW, BUILTIN_MATRIX)) == Obligation(
        "audit", "PATRQT"
    )
    assert audit(decide(ASSISTANT, Action.READ, RECORD, N_DOC, NOW, BUILTIN_MATRIX)) == Obligation(
        "audit", "TREAT", "dr-cardio"
    )
    assert audit(decide(PARENT, Action.READ, RECORD, N_DOC, NOW, BUILTIN_MATRIX)) == Obligation(
        "audit", "PWATRNY", "pat-1"
    )
    # Denials are audited too.
    assert (
        audit(decide(OPERATOR, Action.READ, RECORD, N_DOC, NOW, BUILTIN_MATRIX)).purpose_of_use
        == "HOPERAT"
    )


def test_a_representative_change_notifies_the_patient() -> None:
    decision = decide(PARENT, Action.WRITE, RECORD, N_DOC, NOW, BUILTIN_MATRIX)
    assert Obligation("notify-patient") in decision.obligations


def test_path_lists_the_rules_in_order() -> None:
    decision = decide(CARDIO, Action.READ, RECORD, N_DOC, NOW, BUILTIN_MATRIX)
    assert decision.path == (
        "identity",
        "record",
        "blacklist",
        "author",
        "hidden",
        "profile",
        "confidentiality",
        "grant",
    )
    assert "grant" in decision.explain()
    emergency = decide(STRANGER, Action.READ, EMERGENCY_OPEN, N_DOC, NOW, BUILTIN_MATRIX)
    assert emergency.path[-3:] == ("confidentiality", "grant", "emergency")


def test_the_default_matrix_keeps_sensitive_classes_for_physicians() -> None:
    for key, actions in BUILTIN_MATRIX.profiles.items():
        for action in ("read", "write"):
            for sensitive in ("psychiatric", "genetic", "hiv"):
                allowed = BUILTIN_MATRIX.permits(key, None, action, sensitive)
                if key == "physician":
                    assert allowed
                elif action == "read":
                    assert not allowed, (key, actions)
    for seen in ("medication", "prescription", "allergy", "vaccination"):
        assert BUILTIN_MATRIX.permits("pharmacist", None, "read", seen)
    assert not BUILTIN_MATRIX.permits("pharmacist", None, "read", "psychiatric")


def test_matrix_from_mapping_adds_specialty_to_profession() -> None:
    matrix = ProfileMatrix.from_mapping(
        {
            "version": "1",
            "profiles": {
                "nurse": {"read": ["nursing"]},
                "nurse/psychiatry": {"read": ["psychiatric"]},
            },
        }
    )
    assert matrix.permits("nurse", "psychiatry", "read", "psychiatric")
    assert matrix.permits("nurse", "psychiatry", "read", "nursing")
    assert not matrix.permits("nurse", None, "read", "psychiatric")
    assert not matrix.permits("nurse", None, "write", "nursing")
    assert not matrix.permits("dentist", None, "read", "nursing")
    nurse = Subject(SubjectKind.PRACTITIONER, "n-1", "nurse", "psychiatry")
    record = replace(RECORD, grants=(grant(Party.PRACTITIONER, "n-1", GrantLevel.NORMAL),))
    assert decide(nurse, Action.READ, record, PSY, NOW, matrix).permit


@pytest.mark.parametrize(
    "data",
    [
        {"profiles": {}},
        {"version": "1"},
        {"version": "1", "profiles": {"nurse": {"delete": []}}},
        {"version": "1", "profiles": {"nurse": {"read": "nursing"}}},
        {"version": "1", "profiles": {"nurse": ["nursing"]}},
        {"version": "1", "profiles": {"nurse": {"read": [""]}}},
    ],
)
def test_matrix_from_mapping_refuses_malformed_input(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"profile matrix|profile 'nurse'"):
        ProfileMatrix.from_mapping(data)


def test_filters_describe_what_they_let_through() -> None:
    assert visible_filter(OPERATOR, RECORD, NOW, BUILTIN_MATRIX).matches_nothing
    assert visible_filter(STRANGER, RECORD, NOW, BUILTIN_MATRIX).confidentiality == frozenset()
    gp = visible_filter(GP, RECORD, NOW, BUILTIN_MATRIX)
    assert gp.include_hidden
    assert gp.classes is None
    assert gp.confidentiality == {Confidentiality.N, Confidentiality.R}
    pharmacist = visible_filter(PHARMACIST, RECORD, NOW, BUILTIN_MATRIX)
    assert pharmacist.classes == frozenset({"medication", "prescription", "allergy", "vaccination"})
    assert not visible_filter(PATIENT, RECORD, NOW, BUILTIN_MATRIX).include_not_yet_visible


IDS, LINKS = DirectoryArea.IDENTITIES, DirectoryArea.IDENTITY_LINKS
PROVIDERS = DirectoryArea.PROVIDERS
ALERT = Obligation("alert-security-officer")


@pytest.mark.parametrize(
    ("subject", "action", "area", "permit", "rule", "alert"),
    [
        # everybody authenticated reads the directories (no medical content)
        (STRANGER, Action.SEARCH, PROVIDERS, True, "directory", False),
        (ASSISTANT, Action.READ, IDS, True, "directory", False),
        (PATIENT, Action.SEARCH, PROVIDERS, True, "directory", False),
        (REGISTRAR, Action.READ, IDS, True, "directory", False),
        # a professional never writes them, about themselves or anyone: refused and alerted
        (STRANGER, Action.WRITE, PROVIDERS, False, "directory-authority", True),
        (STRANGER, Action.WRITE, IDS, False, "directory-authority", True),
        (STRANGER, Action.WRITE, LINKS, False, "directory-authority", True),
        (HOSPITAL_IS, Action.WRITE, PROVIDERS, False, "directory-authority", True),
        # registered authorities write their own area only
        (HOSPITAL_FEED, Action.WRITE, IDS, True, "directory-authority", False),
        (HOSPITAL_FEED, Action.WRITE, LINKS, True, "directory-authority", False),
        (HOSPITAL_FEED, Action.WRITE, PROVIDERS, False, "directory-authority", True),
        (PROVIDER_FEED, Action.WRITE, PROVIDERS, True, "directory-authority", False),
        (PROVIDER_FEED, Action.WRITE, IDS, False, "directory-authority", True),
        # a registrar writes by hand; a change that affects access is shown to the officer
        (REGISTRAR, Action.WRITE, IDS, True, "directory-authority", False),
        (REGISTRAR, Action.WRITE, LINKS, True, "directory-authority", True),
        (REGISTRAR, Action.WRITE, PROVIDERS, True, "directory-authority", True),
        (ASSISTANT, Action.WRITE, IDS, False, "mandate", False),
        (PATIENT, Action.WRITE, IDS, False, "directory", False),
        (PARENT, Action.WRITE, IDS, False, "directory", False),
        (OPERATOR, Action.READ, IDS, False, "operator", False),
        (OPERATOR, Action.WRITE, PROVIDERS, False, "operator", False),
        (OFFICER, Action.READ, PROVIDERS, False, "operator", False),
        (replace(STRANGER, licence_active=False), Action.READ, IDS, False, "identity", False),
        (
            replace(PROVIDER_FEED, identity_valid=False),
            Action.WRITE,
            PROVIDERS,
            False,
            "identity",
            False,
        ),
    ],
)
def test_directory_decisions(
    subject: Subject, action: Action, area: DirectoryArea, permit: bool, rule: str, alert: bool
) -> None:
    decision = decide_directory(subject, action, area)
    assert (decision.permit, decision.rule) == (permit, rule), decision.explain()
    assert decision.path[0] == "identity" and decision.path[-1] == rule
    assert (ALERT in decision.obligations) is alert


def test_the_registrar_reaches_no_record() -> None:
    for action in (Action.READ, Action.SEARCH, Action.WRITE, Action.MANAGE):
        decision = decide(REGISTRAR, action, RECORD, None, NOW, BUILTIN_MATRIX)
        assert (decision.permit, decision.rule) == (False, "operator")
    assert decide_audit_trail(REGISTRAR).permit is False
    assert visible_filter(REGISTRAR, RECORD, NOW, BUILTIN_MATRIX).matches_nothing


def test_an_unproved_care_event_alerts_the_security_officer() -> None:
    decision = decide(STRANGER, Action.CARE_EVENT, RECORD, None, NOW, BUILTIN_MATRIX)
    assert decision.reasons["en"].startswith("A care event opens the record only")
    assert ALERT in decision.obligations
    assert (
        ALERT
        not in decide(ADMITTED, Action.CARE_EVENT, RECORD, None, NOW, BUILTIN_MATRIX).obligations
    )


@pytest.mark.parametrize(
    ("subject", "permit"),
    [(OFFICER, True), (OPERATOR, False), (PATIENT, False), (GP, False), (PARENT, False)],
)
def test_only_the_security_officer_reads_the_whole_audit_trail(
    subject: Subject, permit: bool
) -> None:
    decision = decide_audit_trail(subject)
    assert decision.permit is permit
    assert decision.rule == "audit-trail"
    assert decide_audit_trail(replace(OFFICER, identity_valid=False)).rule == "identity"


def test_a_care_event_notifies_the_patient() -> None:
    decision = decide(PRESENT, Action.CARE_EVENT, RECORD, None, NOW, BUILTIN_MATRIX)
    assert Obligation("notify-patient") in decision.obligations
