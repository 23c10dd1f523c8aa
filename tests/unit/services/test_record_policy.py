"""The patient's say over their record (`RecordPolicy`), on a unit of work in memory: who may
grant, block, name a referring physician, close, reopen or open the record, hide or relabel a
document; what each change stores, audits in its own transaction and tells the patient
when a representative made it; and that a refused or failed change leaves nothing behind.

The decisions are the engine's (`carevault.domain.authorization`), over the facts the fake
record store loads as the real one does (tests/integration/test_store_contracts_records.py);
the wired-up paths (FHIR Consent, the portal) are tested in tests/integration. Representatives
are in test_representatives.py, what professionals do (emergencies, delegations) in
test_care_access.py and test_end_delegation.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carevault.domain.authorization import (
    Action,
    Confidentiality,
    EmergencySetting,
    GrantLevel,
    MandateScope,
    Party,
    RecordFacts,
    RecordModel,
    RecordState,
    Subject,
    SubjectKind,
)
from carevault.domain.errors import BusinessRuleViolation, InvalidInput, NotFound
from carevault.services.record_policy import (
    MAX_GROUP_GRANT,
    Actor,
    RecordChange,
    RecordPolicy,
    Refused,
)
from carevault.services.representatives import Representatives
from support.fake_records import FakeRecordUnitOfWork
from support.record_world import (
    DR,
    DR2,
    LATER,
    MATRIX,
    NOW,
    OTHER_PATIENT,
    PATIENT,
    REP,
    AuditPort,
    BrokenAuditPort,
    Clock,
    entries,
    facts,
    new_uow,
    plant_mandate,
    reads,
)


@pytest.fixture
def uow() -> FakeRecordUnitOfWork:
    return new_uow()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def policy(uow: FakeRecordUnitOfWork, clock: Clock) -> RecordPolicy:
    return RecordPolicy(lambda: uow, AuditPort(), clock=clock, matrix=MATRIX)


@pytest.fixture
def representatives(policy: RecordPolicy) -> Representatives:
    return Representatives(policy)


def nothing_written(uow: FakeRecordUnitOfWork, commits: int = 0) -> None:
    assert uow.commits == commits
    assert uow.records.grant_rows == {} and uow.records.block_rows == {}
    assert uow.records.settings == {} and uow.records.notifications == []
    assert uow.audit.records == []


# --- grants ------------------------------------------------------------------------------------


def test_a_patient_grants_a_practitioner_access_that_opens_the_record_to_them(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    assert not reads(policy, uow, DR)
    grant = policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.EXTENDED,
                         end=LATER, delegable=True)
    assert uow.commits == 1
    [stored] = uow.records.grants("pat-1")
    assert stored.grant == grant and stored.created_at == NOW
    assert (grant.party_id, grant.level, grant.start, grant.end, grant.granted_by,
            grant.delegable, grant.source) == (
        "dr-1", GrantLevel.EXTENDED, NOW, LATER, "account:acc-pat", True, "patient")
    assert facts(uow).grants == (grant,)
    assert reads(policy, uow, DR) and not reads(policy, uow, DR2)
    [entry] = entries(uow)
    assert (entry.interaction, entry.action, entry.kind, entry.patient) == (
        "grant-create", "C", "policy", "pat-1")
    assert (entry.entity_type, entry.entity_id) == ("Consent", grant.id)
    assert entry.agent.who == "account:acc-pat" and entry.agent.on_behalf_of is None
    assert entry.purpose_of_use == "PATRQT" and entry.rule == "identity → record → patient"
    assert entry.detail == {"grant": grant.id, "party": "practitioner", "party_id": "dr-1",
                            "level": "extended", "start": "2026-12-01T09:00:00.000Z",
                            "end": "2026-12-31T09:00:00.000Z"}
    # The patient made the change: they are not told what they did themselves.
    assert uow.records.notifications == []


def test_a_grant_opens_the_record_row_with_its_defaults(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    assert uow.records.settings["pat-1"].updated_at == NOW
    record = facts(uow)
    assert (record.state, record.emergency_setting, record.default_confidentiality) == (
        RecordState.ACTIVE, EmergencySetting.NORMAL, Confidentiality.N)


def test_a_grant_made_by_a_representative_is_told_to_the_patient(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.MANAGE)
    grant = policy.grant(REP, "pat-1", Party.ORGANIZATION, "org-1", GrantLevel.NORMAL, end=LATER)
    assert grant.source == "representative" and grant.granted_by == "account:acc-rep"
    [entry] = entries(uow, "grant-create")
    assert entry.agent.on_behalf_of == "Patient/pat-1" and entry.purpose_of_use == "PWATRNY"
    [told] = uow.records.notifications
    assert (told.patient_id, told.kind, told.created_at) == ("pat-1", "grant-create", NOW)
    assert told.payload["en"] == (
        "Your representative gave organization org-1 normal access to your record.")
    assert told.payload["fr"].startswith("Votre représentant a donné un accès normal")
    assert told.payload["sender"] == "account:acc-rep" and told.payload["grant"] == grant.id


def test_a_grant_to_a_care_team_is_stored_without_a_directory_lookup(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    grant = policy.grant(PATIENT, "pat-1", Party.CARE_TEAM, "team-9", GrantLevel.NORMAL,
                         start=NOW + timedelta(days=1), end=LATER)
    assert facts(uow).grants == (grant,) and grant.start == NOW + timedelta(days=1)


@pytest.mark.parametrize("end", [NOW, NOW - timedelta(seconds=1)])
def test_a_grant_that_ends_before_it_starts_is_refused(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork, end: datetime) -> None:
    with pytest.raises(InvalidInput) as refused:
        policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL, end=end)
    assert refused.value.expression == "end"
    nothing_written(uow)


@pytest.mark.parametrize("party", [Party.ORGANIZATION, Party.CARE_TEAM])
def test_a_grant_to_a_group_needs_an_end_date(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork, party: Party) -> None:
    with pytest.raises(BusinessRuleViolation, match="needs an end date"):
        policy.grant(PATIENT, "pat-1", party, "org-1", GrantLevel.NORMAL)
    nothing_written(uow)


@pytest.mark.parametrize("party", [Party.ORGANIZATION, Party.CARE_TEAM])
def test_a_grant_to_a_group_ends_within_five_years(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork, party: Party) -> None:
    """"Until 9999" would be no end: refused, when given and when changed; a practitioner's
    grant, which may have no end at all, is not bounded."""
    start = NOW + timedelta(days=1)
    too_far = start + MAX_GROUP_GRANT + timedelta(seconds=1)
    with pytest.raises(BusinessRuleViolation, match="ends within five years") as refused:
        policy.grant(PATIENT, "pat-1", party, "org-1", GrantLevel.NORMAL, start=start,
                     end=too_far)
    assert refused.value.expression == "end"
    nothing_written(uow)
    grant = policy.grant(PATIENT, "pat-1", party, "org-1", GrantLevel.NORMAL, start=start,
                         end=start + MAX_GROUP_GRANT)
    commits = uow.commits
    with pytest.raises(BusinessRuleViolation, match="ends within five years"):
        policy.change_grant(PATIENT, "pat-1", grant.id, end=datetime(9999, 12, 31, tzinfo=UTC))
    with pytest.raises(BusinessRuleViolation, match="needs an end date"):
        policy.change_grant(PATIENT, "pat-1", grant.id, end=None)
    assert uow.commits == commits
    policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL,
                 end=NOW + 10 * MAX_GROUP_GRANT)


@pytest.mark.parametrize(("party", "name"), [(Party.PRACTITIONER, "Practitioner/dr-9"),
                                             (Party.ORGANIZATION, "Organization/dr-9")])
def test_no_grant_to_someone_the_directory_does_not_know(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork, party: Party, name: str) -> None:
    with pytest.raises(NotFound, match=name):
        policy.grant(PATIENT, "pat-1", party, "dr-9", GrantLevel.NORMAL, end=LATER)
    nothing_written(uow)


@pytest.mark.parametrize(
    ("who", "rule", "reason"),
    [
        (DR, "manage", "manage"),  # a professional never manages a record, even their grant
        (OTHER_PATIENT, "patient", "patient-other"),
        (REP, "mandate", "mandate-none"),  # a representative without a mandate on it
    ],
)
def test_only_the_patient_or_a_managing_representative_grants(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork, who: Actor, rule: str,
        reason: str) -> None:
    with pytest.raises(Refused) as refused:
        policy.grant(who, "pat-1", Party.PRACTITIONER, "dr-2", GrantLevel.NORMAL)
    assert (refused.value.decision.rule, refused.value.decision.reason) == (rule, reason)
    assert not refused.value.decision.permit and refused.value.issue_code == "forbidden"
    nothing_written(uow)


def test_a_page_asks_for_the_patients_own_record_in_a_read_of_its_own(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    """`permitted_now`: the record's facts for what is the patient's own (their export, their
    prescriptions' codes), to the patient; Refused to a professional, even one with access."""
    policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.EXTENDED, end=LATER)
    commits = uow.commits
    record = policy.permitted_now(PATIENT.subject, "pat-1", Action.PERSONAL)
    assert record.patient_id == "pat-1" and uow.commits == commits
    assert not policy.unopened("pat-1")  # opt-out: nothing to open
    with pytest.raises(Refused) as refused:
        policy.permitted_now(DR.subject, "pat-1", Action.PERSONAL)
    assert not refused.value.decision.permit and uow.commits == commits


def test_a_representative_who_may_only_read_does_not_grant(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.READ)
    with pytest.raises(Refused) as refused:
        policy.grant(REP, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    assert refused.value.decision.reason == "mandate-read-only"
    nothing_written(uow, commits=1)


def test_a_representative_whose_mandate_ended_no_longer_grants(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.MANAGE, starts=NOW - timedelta(days=10), ends=NOW)
    with pytest.raises(Refused) as refused:
        policy.grant(REP, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    assert refused.value.decision.reason == "mandate-none"
    nothing_written(uow, commits=1)


def test_no_grant_on_a_patient_who_has_no_record(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    nobody = Actor(Subject(SubjectKind.PATIENT, "pat-nobody"), "account:x")
    with pytest.raises(Refused) as refused:
        policy.grant(nobody, "pat-nobody", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    assert refused.value.decision.reason == "record-missing"
    nothing_written(uow)


def test_a_grant_whose_audit_entry_cannot_be_written_is_not_kept(
        uow: FakeRecordUnitOfWork, clock: Clock) -> None:
    broken = RecordPolicy(lambda: uow, BrokenAuditPort(), clock=clock, matrix=MATRIX)
    with pytest.raises(RuntimeError):
        broken.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    nothing_written(uow)
    assert uow.records.load("pat-1", NOW) == RecordFacts("pat-1")


def test_a_withdrawn_grant_closes_the_record_to_its_practitioner_at_once(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork, clock: Clock) -> None:
    grant = policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    clock.now = NOW + timedelta(hours=1)
    policy.revoke_grant(PATIENT, "pat-1", grant.id)
    assert uow.commits == 2
    assert not reads(policy, uow, DR, clock.now) and facts(uow).grants == ()
    [revoked] = uow.records.grants("pat-1", include_revoked=True)
    assert (revoked.revoked_at, revoked.revoked_by) == (clock.now, "account:acc-pat")
    [entry] = entries(uow, "grant-revoke")
    assert (entry.action, entry.entity_id, entry.detail) == ("D", grant.id, {"grant": grant.id})


def test_a_grant_is_withdrawn_once(policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    grant = policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    policy.revoke_grant(PATIENT, "pat-1", grant.id)
    with pytest.raises(NotFound, match="no active grant"):
        policy.revoke_grant(PATIENT, "pat-1", grant.id)
    assert uow.commits == 2 and len(entries(uow, "grant-revoke")) == 1


def test_a_patient_does_not_withdraw_a_grant_on_another_record(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    grant = policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    with pytest.raises(NotFound):
        policy.revoke_grant(OTHER_PATIENT, "pat-2", grant.id)
    with pytest.raises(Refused):
        policy.revoke_grant(OTHER_PATIENT, "pat-1", grant.id)
    assert facts(uow).grants == (grant,) and uow.commits == 1


def test_a_withdrawal_by_a_representative_is_told_to_the_patient(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    grant = policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    plant_mandate(uow, MandateScope.MANAGE)
    policy.revoke_grant(REP, "pat-1", grant.id)
    [told] = uow.records.notifications
    assert told.kind == "grant-revoke" and told.payload["grant"] == grant.id
    assert told.payload["en"] == "Your representative withdrew an access to your record."


def test_a_patient_changes_a_grants_level_and_end(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    grant = policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL,
                         end=LATER)
    policy.change_grant(PATIENT, "pat-1", grant.id, level=GrantLevel.EXTENDED,
                        end=LATER + timedelta(days=1))
    [changed] = facts(uow).grants
    assert (changed.level, changed.end) == (GrantLevel.EXTENDED, LATER + timedelta(days=1))
    [entry] = entries(uow, "grant-change")
    assert entry.detail == {"grant": grant.id, "level": "extended",
                            "end": "2027-01-01T09:00:00.000Z"}
    # Leaving the end out keeps it; None removes it from a practitioner's grant.
    policy.change_grant(PATIENT, "pat-1", grant.id, level=GrantLevel.NORMAL)
    assert facts(uow).grants[0].end == LATER + timedelta(days=1)
    policy.change_grant(PATIENT, "pat-1", grant.id, end=None)
    assert facts(uow).grants[0].end is None
    assert entries(uow, "grant-change")[-1].detail == {"grant": grant.id, "end": "none"}


def test_a_changed_grant_still_ends_after_it_starts(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    grant = policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL,
                         end=LATER)
    with pytest.raises(InvalidInput):
        policy.change_grant(PATIENT, "pat-1", grant.id, end=NOW)
    assert facts(uow).grants[0].end == LATER and uow.commits == 1


def test_a_group_grant_keeps_an_end_date(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    grant = policy.grant(PATIENT, "pat-1", Party.ORGANIZATION, "org-1", GrantLevel.NORMAL,
                         end=LATER)
    with pytest.raises(BusinessRuleViolation):
        policy.change_grant(PATIENT, "pat-1", grant.id, end=None)
    assert facts(uow).grants[0].end == LATER and uow.commits == 1


def test_a_withdrawn_or_unknown_grant_is_not_changed(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    grant = policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    policy.revoke_grant(PATIENT, "pat-1", grant.id)
    for grant_id in (grant.id, "nope"):
        with pytest.raises(NotFound):
            policy.change_grant(PATIENT, "pat-1", grant_id, level=GrantLevel.EXTENDED)
    stored = uow.records.grant("pat-1", grant.id)
    assert stored is not None and stored.grant.level is GrantLevel.NORMAL
    assert entries(uow, "grant-change") == []


# --- blocks ------------------------------------------------------------------------------------


def test_a_blocked_practitioner_is_refused_even_with_a_grant(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    block = policy.block(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1")
    assert facts(uow).blocks == (block,)
    decision = policy.decide(DR.subject, Action.READ, facts(uow), None, NOW)
    assert not decision.permit and decision.rule == "blacklist"
    [stored] = uow.records.blocks("pat-1")
    assert (stored.created_by, stored.created_at) == ("account:acc-pat", NOW)
    [entry] = entries(uow, "block-create")
    assert (entry.entity_type, entry.entity_id) == ("Consent", block.id)
    assert entry.detail == {"block": block.id, "party": "practitioner", "party_id": "dr-1"}


def test_a_blocked_organization_shuts_out_its_professionals(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    policy.block(PATIENT, "pat-1", Party.ORGANIZATION, "org-1")
    at_org = Subject(SubjectKind.PRACTITIONER, "dr-1", "physician",
                     organization_ids=frozenset({"org-1"}))
    assert not policy.decide(at_org, Action.READ, facts(uow), None, NOW).permit
    assert reads(policy, uow, DR)  # the same practitioner, not working there


def test_a_care_team_is_not_blocked(policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    with pytest.raises(InvalidInput) as refused:
        policy.block(PATIENT, "pat-1", Party.CARE_TEAM, "team-1")
    assert refused.value.expression == "party"
    nothing_written(uow)


def test_no_block_on_someone_the_directory_does_not_know(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    with pytest.raises(NotFound):
        policy.block(PATIENT, "pat-1", Party.PRACTITIONER, "dr-9")
    nothing_written(uow)


def test_a_professional_does_not_lift_a_block(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    block = policy.block(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1")
    with pytest.raises(Refused):
        policy.unblock(DR2, "pat-1", block.id)
    assert facts(uow).blocks == (block,)


def test_a_lifted_block_lets_the_grant_apply_again_and_is_lifted_once(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    block = policy.block(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1")
    policy.unblock(PATIENT, "pat-1", block.id)
    assert reads(policy, uow, DR) and facts(uow).blocks == ()
    [lifted] = uow.records.blocks("pat-1", include_revoked=True)
    assert (lifted.revoked_at, lifted.revoked_by) == (NOW, "account:acc-pat")
    with pytest.raises(NotFound, match="no active block"):
        policy.unblock(PATIENT, "pat-1", block.id)
    assert len(entries(uow, "block-revoke")) == 1 and uow.commits == 3


def test_a_block_by_a_representative_is_told_to_the_patient(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.MANAGE)
    block = policy.block(REP, "pat-1", Party.PRACTITIONER, "dr-2")
    policy.unblock(REP, "pat-1", block.id)
    assert [(n.kind, n.payload["en"]) for n in uow.records.notifications] == [
        ("block-create", "Your representative blocked dr-2 from your record."),
        ("block-revoke", "Your representative lifted a block on your record."),
    ]


# --- the referring physician -------------------------------------------------------------------


def test_the_referring_physician_reads_the_record_without_a_grant(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    policy.name_referring_physician(PATIENT, "pat-1", "dr-1")
    assert facts(uow).referring_physician_id == "dr-1"
    decision = policy.decide(DR.subject, Action.READ, facts(uow), None, NOW)
    assert decision.permit and decision.rule == "grant"
    [entry] = entries(uow, "referring-physician")
    assert (entry.action, entry.entity_type, entry.entity_id, entry.detail) == (
        "U", "Patient", "pat-1", {"referring_physician": "dr-1"})
    assert uow.records.notifications == [] and uow.commits == 1


def test_the_referring_physician_is_someone_the_directory_knows(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    with pytest.raises(NotFound, match="Practitioner/dr-9"):
        policy.name_referring_physician(PATIENT, "pat-1", "dr-9")
    nothing_written(uow)


def test_the_referring_physician_is_removed_with_none(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    policy.name_referring_physician(PATIENT, "pat-1", "dr-1")
    policy.name_referring_physician(PATIENT, "pat-1", None)
    assert facts(uow).referring_physician_id is None and not reads(policy, uow, DR)
    assert entries(uow)[-1].detail == {"referring_physician": ""}


def test_a_representative_naming_the_referring_physician_tells_the_patient(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.MANAGE)
    policy.name_referring_physician(REP, "pat-1", "dr-2")
    [told] = uow.records.notifications
    assert told.kind == "referring-physician" and told.payload["referring_physician"] == "dr-2"
    assert told.payload["en"] == "Your representative changed your referring physician."


def test_a_professional_does_not_name_themselves_referring_physician(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    with pytest.raises(Refused):
        policy.name_referring_physician(DR, "pat-1", "dr-1")
    nothing_written(uow)


# --- the record's other settings ---------------------------------------------------------------


def test_the_patient_sets_emergency_access_delegation_and_default_confidentiality(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    policy.set_emergency_setting(PATIENT, "pat-1", EmergencySetting.OFF)
    policy.allow_delegation(PATIENT, "pat-1", True)
    policy.set_default_confidentiality(PATIENT, "pat-1", Confidentiality.R)
    record = facts(uow)
    assert (record.emergency_setting, record.delegation_allowed,
            record.default_confidentiality) == (EmergencySetting.OFF, True, Confidentiality.R)
    assert [(e.interaction, e.detail) for e in entries(uow)] == [
        ("emergency-setting", {"emergency_setting": "off"}),
        ("delegation-setting", {"delegation_allowed": "true"}),
        ("default-confidentiality", {"default_confidentiality": "R"}),
    ]
    assert uow.commits == 3


# --- closing, reopening, opening ---------------------------------------------------------------


def test_a_closed_record_is_shut_to_professionals_and_reopened_by_the_patient(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    policy.close_record(PATIENT, "pat-1")
    assert facts(uow).state is RecordState.CLOSED
    refused = policy.decide(DR.subject, Action.READ, facts(uow), None, NOW)
    assert not refused.permit and refused.reason == "record-closed"
    # The record stays the patient's: they still read it and reopen it.
    assert reads(policy, uow, PATIENT)
    policy.reopen_record(PATIENT, "pat-1")
    assert facts(uow).state is RecordState.ACTIVE and reads(policy, uow, DR)
    assert [(e.interaction, e.detail) for e in entries(uow)][1:] == [
        ("record-close", {"state": "closed"}), ("record-reopen", {"state": "active"})]


def test_a_closed_record_is_shut_to_a_reading_representative_not_to_a_managing_one(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.READ)
    plant_mandate(uow, MandateScope.MANAGE, account_id="acc-rep-2", mandate_id="m-2")
    manager = Actor(Subject(SubjectKind.REPRESENTATIVE, "acc-rep-2"), "account:acc-rep-2")
    policy.close_record(PATIENT, "pat-1")
    assert not reads(policy, uow, REP) and reads(policy, uow, manager)
    with pytest.raises(Refused) as refused:
        policy.reopen_record(REP, "pat-1")
    assert refused.value.decision.reason == "record-closed"
    policy.reopen_record(manager, "pat-1")
    assert facts(uow).state is RecordState.ACTIVE
    [told] = uow.records.notifications
    assert told.kind == "record-reopen"
    assert told.payload["en"] == "Your representative reopened your record."


def test_several_settings_change_in_one_transaction_each_with_its_entry(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    after = policy.change_record(PATIENT, "pat-1", RecordChange(
        state=RecordState.CLOSED, referring_physician="dr-1",
        default_confidentiality=Confidentiality.V, delegation_allowed=False))
    assert after == facts(uow) and uow.commits == 1
    assert (after.state, after.referring_physician_id, after.default_confidentiality) == (
        RecordState.CLOSED, "dr-1", Confidentiality.V)
    assert [e.interaction for e in entries(uow)] == [
        "record-close", "referring-physician", "default-confidentiality", "delegation-setting"]
    assert {e.entity_id for e in entries(uow)} == {"pat-1"}


def test_asking_for_the_state_the_record_is_in_adds_no_entry_for_it(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    policy.change_record(PATIENT, "pat-1", RecordChange(
        state=RecordState.ACTIVE, emergency_setting=EmergencySetting.NORMAL_AND_RESTRICTED))
    assert [e.interaction for e in entries(uow)] == ["emergency-setting"]


def test_a_change_naming_no_setting_is_refused(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    with pytest.raises(InvalidInput, match="at least one setting"):
        policy.change_record(PATIENT, "pat-1", RecordChange())
    nothing_written(uow)


def test_a_change_naming_an_unknown_referring_physician_changes_nothing(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    with pytest.raises(NotFound):
        policy.change_record(PATIENT, "pat-1", RecordChange(
            state=RecordState.CLOSED, referring_physician="dr-9"))
    nothing_written(uow)


def test_changes_by_a_representative_are_told_one_by_one(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.MANAGE)
    policy.change_record(REP, "pat-1", RecordChange(
        state=RecordState.CLOSED, emergency_setting=EmergencySetting.OFF))
    assert [(n.kind, n.payload["en"]) for n in uow.records.notifications] == [
        ("record-close", "Your representative closed your record."),
        ("emergency-setting", "Your representative changed the emergency access setting."),
    ]


@pytest.fixture
def opt_in() -> FakeRecordUnitOfWork:
    unit = FakeRecordUnitOfWork(RecordModel.OPT_IN)
    unit.directory.add_patient("pat-1", [])
    unit.directory.add_practitioner("dr-1", "HP-1")
    return unit


def test_under_opt_in_a_record_exists_once_its_patient_opens_it(
        opt_in: FakeRecordUnitOfWork, clock: Clock) -> None:
    policy = RecordPolicy(lambda: opt_in, AuditPort(), clock=clock, matrix=MATRIX)
    assert opt_in.records.load("pat-1", NOW) is None
    assert policy.check(PATIENT, "pat-1", Action.MANAGE).permit  # only they may open it
    with pytest.raises(Refused):
        policy.check(DR, "pat-1", Action.READ)
    overview = policy.overview(PATIENT, "pat-1")
    assert not overview.opened and overview.record.state is RecordState.CLOSED
    assert policy.unopened("pat-1")
    opened = policy.change_record(PATIENT, "pat-1", RecordChange(state=RecordState.ACTIVE))
    assert opened.state is RecordState.ACTIVE and opened.model is RecordModel.OPT_IN
    assert policy.overview(PATIENT, "pat-1").opened and not policy.unopened("pat-1")
    [entry] = opt_in.audit.records
    assert (entry.interaction, entry.detail) == ("record-open", {"state": "active"})


def test_under_opt_in_nothing_is_set_on_a_record_not_opened_yet(
        opt_in: FakeRecordUnitOfWork, clock: Clock) -> None:
    policy = RecordPolicy(lambda: opt_in, AuditPort(), clock=clock, matrix=MATRIX)
    with pytest.raises(BusinessRuleViolation, match="open it first") as refused:
        policy.change_record(PATIENT, "pat-1", RecordChange(referring_physician="dr-1"))
    assert refused.value.expression == "state"
    with pytest.raises(Refused) as missing:
        policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    assert missing.value.decision.reason == "record-missing"
    assert opt_in.records.settings == {} and opt_in.audit.records == [] and opt_in.commits == 0


def test_under_opt_in_a_record_not_opened_yet_is_not_closed_again(
        opt_in: FakeRecordUnitOfWork, clock: Clock) -> None:
    """Under opt-in a record the patient has not opened is closed already: the only change
    it takes is opening it (state ``active``)."""
    policy = RecordPolicy(lambda: opt_in, AuditPort(), clock=clock, matrix=MATRIX)
    with pytest.raises(BusinessRuleViolation):
        policy.change_record(PATIENT, "pat-1", RecordChange(state=RecordState.CLOSED))
    assert opt_in.records.settings == {}


# --- what the patient sees, and checks before a change -----------------------------------------


def test_the_overview_shows_grants_and_blocks_in_force_and_every_mandate(
        representatives: Representatives,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork, clock: Clock) -> None:
    kept = policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    gone = policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-2", GrantLevel.NORMAL)
    policy.revoke_grant(PATIENT, "pat-1", gone.id)
    block = policy.block(PATIENT, "pat-1", Party.ORGANIZATION, "org-1")
    plant_mandate(uow, MandateScope.READ, ends=NOW + timedelta(hours=1))
    clock.now = NOW + timedelta(hours=2)  # the mandate has ended: still listed
    overview = policy.overview(PATIENT, "pat-1")
    assert overview.opened and [g.grant for g in overview.grants] == [kept]
    assert [b.block for b in overview.blocks] == [block]
    assert [m.id for m in overview.mandates] == ["m-1"]
    assert representatives.listing(PATIENT, "pat-1") == list(overview.mandates)


def test_a_professional_sees_no_overview(
        representatives: Representatives, policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.EXTENDED)
    with pytest.raises(Refused):
        policy.overview(DR, "pat-1")
    with pytest.raises(Refused):
        representatives.listing(DR, "pat-1")


def test_check_answers_before_a_page_prepares_a_change(
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.READ)
    assert policy.check(REP, "pat-1", Action.PERSONAL).permit
    with pytest.raises(Refused) as refused:
        policy.check(REP, "pat-1", Action.MANAGE)
    assert refused.value.decision.reason == "mandate-read-only"
    assert uow.commits == 1 and uow.audit.records == []  # asking changes nothing


# --- representatives ---------------------------------------------------------------------------


