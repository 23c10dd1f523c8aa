"""The patient index (PDQm, PIXm, the identity feed) and the professional directory (mCSD), on a
unit of work in memory (no database): what each use case refuses, writes and versions; a refused
request writes nothing. The store is faked (`support.fake_directory`), checked against the real
one in tests/integration/test_store_contracts_directory.py."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

import pytest

from carevault.domain.directory import Identifier, IdentityDomain
from carevault.domain.errors import (
    BusinessRuleViolation,
    Conflict,
    InvalidInput,
    NotFound,
    NotPermitted,
    VersionConflict,
)
from carevault.domain.queries import Page, PatientQuery, PractitionerQuery
from carevault.fhirmodel.directory import new_practitioner, new_role
from carevault.services import directory as svc
from carevault.services.directory import NewProfessional
from support.builders import HOSPITAL_SYSTEM, hospital, patient
from support.fake_directory import directory_context
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CLINIC_SYSTEM = "https://carevault.lu/fhir/sid/local/test-clinic"
HOSPITAL = IdentityDomain(HOSPITAL_SYSTEM)
CTX = directory_context(lambda: NOW)
NATIONAL = CTX.systems.national
PAGE = Page(0, 50)


@pytest.fixture
def uow() -> FakeUnitOfWork:
    """A directory with two organizations that assign patient numbers: the hospital's and the
    clinic's."""
    unit = FakeUnitOfWork()
    with unit:
        svc.register_organizations(unit, CTX, [
            hospital(CTX.systems),
            {**hospital(CTX.systems, "ORG-C1"), "name": "Clinique",
             "extension": [{"url": "https://carevault.lu/fhir/StructureDefinition/"
                                   "patient-identifier-system", "valueUri": CLINIC_SYSTEM}]}])
    unit.commits = 0
    return unit


def national(stored: svc.Stored) -> str:
    return next(str(i["value"]) for i in stored.resource["identifier"]
                if i["system"] == NATIONAL)


def identifiers(stored: svc.Stored) -> set[tuple[str, str]]:
    return {(i["system"], i["value"]) for i in stored.resource["identifier"]}


def create(uow: FakeUnitOfWork, seq: int, **details: Any) -> svc.Stored:
    with uow:
        return svc.create_patient(uow, CTX, patient(CTX.systems, seq, **details))


# --- patients -------------------------------------------------------------------------------


def test_a_registered_patient_gets_a_random_id_a_first_version_and_a_history_row(
        uow: FakeUnitOfWork) -> None:
    resource = patient(CTX.systems, 1)
    resource["identifier"][0]["value"] = " " + resource["identifier"][0]["value"] + " "
    with uow:
        stored = svc.create_patient(uow, CTX, resource)
        assert uow.directory.touched_patients == [stored.id]
    assert uow.commits == 1
    assert len(stored.id) == 32 and stored.version_id == 1
    assert stored.resource["meta"] == {"versionId": "1", "lastUpdated": "2026-12-01T09:00:00.000Z"}
    assert national(stored) == national(stored).strip()  # written back in its canonical form
    with uow:
        assert svc.read_patient(uow, stored.id) == stored
        assert svc.history(uow, "Patient", stored.id) == [stored]
    assert "id" not in resource  # the caller's resource is left as it was
    # A page's heading reads it through a unit of work of its own, committing nothing.
    assert svc.patient_resource(lambda: uow, stored.id) == stored.resource
    assert uow.commits == 1
    with pytest.raises(NotFound):
        svc.patient_resource(lambda: uow, "nobody")


def test_a_batch_with_one_bad_patient_stores_none_of_them(uow: FakeUnitOfWork) -> None:
    bad = patient(CTX.systems, 2)
    bad["identifier"][0]["value"] = "1980041200200"  # wrong check digits
    with pytest.raises(BusinessRuleViolation), uow:
        svc.register_patients(uow, CTX, [patient(CTX.systems, 1), bad])
    assert uow.commits == 0
    assert uow.directory.tables["patient"] == {}
    assert uow.directory.history_rows.keys() == {
        ("Organization", i, 1) for i in uow.directory.tables["organization"]}


def test_a_batch_cannot_give_one_identifier_to_two_patients(uow: FakeUnitOfWork) -> None:
    one = patient(CTX.systems, 1, local="H-1")
    two = patient(CTX.systems, 2, local="H-1")
    given_twice = re.escape(f"identifier {HOSPITAL_SYSTEM}|H-1 is given to two patients")
    with pytest.raises(Conflict, match=given_twice), uow:
        svc.register_patients(uow, CTX, [one, two])
    assert uow.directory.tables["patient"] == {}


def test_a_national_or_local_identifier_already_held_names_its_holder(
        uow: FakeUnitOfWork) -> None:
    first = create(uow, 1, local="H-1")
    with pytest.raises(Conflict, match=f"already identifies Patient/{first.id}") as refused, uow:
        svc.create_patient(uow, CTX, patient(CTX.systems, 1, family="Other"))
    assert refused.value.expression == "Patient.identifier"
    with pytest.raises(Conflict, match=f"already identifies Patient/{first.id}"), uow:
        svc.create_patient(uow, CTX, patient(CTX.systems, 2, local="H-1"))
    assert list(uow.directory.tables["patient"]) == [first.id]
    assert uow.commits == 1


def test_local_identifiers_come_from_a_registered_authority_one_each(
        uow: FakeUnitOfWork) -> None:
    unknown = patient(CTX.systems, 1)
    unknown["identifier"].append({"system": "urn:oid:9.9", "value": "X"})
    not_assigned = re.escape("'urn:oid:9.9' is not the assigning authority")
    with pytest.raises(BusinessRuleViolation, match=not_assigned), uow:
        svc.create_patient(uow, CTX, unknown)
    twice = patient(CTX.systems, 1, local="H-1")
    twice["identifier"].append({"system": HOSPITAL_SYSTEM, "value": "H-2"})
    with pytest.raises(BusinessRuleViolation, match="two local identifiers from the same"), uow:
        svc.create_patient(uow, CTX, twice)
    both = patient(CTX.systems, 1, local="H-1")
    both["identifier"].append({"system": CLINIC_SYSTEM, "value": "C-1"})
    stored = create_from(uow, both)
    assert {(HOSPITAL_SYSTEM, "H-1"), (CLINIC_SYSTEM, "C-1")} <= identifiers(stored)


def create_from(uow: FakeUnitOfWork, resource: dict[str, Any]) -> svc.Stored:
    with uow:
        return svc.create_patient(uow, CTX, resource)


def test_a_patient_that_is_not_a_fhir_patient_is_refused_as_invalid(uow: FakeUnitOfWork) -> None:
    with pytest.raises(InvalidInput, match="expected a Patient resource"), uow:
        svc.create_patient(uow, CTX, {"resourceType": "Practitioner"})
    with pytest.raises(BusinessRuleViolation, match="exactly one identifier with system"), uow:
        svc.create_patient(uow, CTX, {**patient(CTX.systems, 1), "identifier": []})
    assert uow.commits == 0


def test_an_identity_source_creates_only_patients_of_its_own(uow: FakeUnitOfWork) -> None:
    with pytest.raises(NotPermitted, match="must carry an identifier of your own"), uow:
        svc.create_patient(uow, CTX, patient(CTX.systems, 1), HOSPITAL)
    foreign = patient(CTX.systems, 1, local="H-1")
    foreign["identifier"].append({"system": CLINIC_SYSTEM, "value": "C-1"})
    with pytest.raises(NotPermitted, match="only your own local identifier"), uow:
        svc.create_patient(uow, CTX, foreign, HOSPITAL)
    with uow:
        mine = svc.create_patient(uow, CTX, patient(CTX.systems, 1, local="H-1"), HOSPITAL)
    assert (HOSPITAL_SYSTEM, "H-1") in identifiers(mine)


def test_an_update_needs_the_current_version_and_keeps_the_old_one(uow: FakeUnitOfWork) -> None:
    first = create(uow, 1)
    with pytest.raises(VersionConflict, match="If-Match names version 2"), uow:
        svc.update_patient(uow, CTX, first.id, patient(CTX.systems, 1, family="Schmit"), 2)
    with uow:
        second = svc.update_patient(uow, CTX, first.id,
                                    patient(CTX.systems, 1, family="Schmit"), if_match=1)
        assert uow.directory.touched_patients == [first.id]
    assert second.version_id == 2 and second.resource["meta"]["versionId"] == "2"
    with uow:
        assert [s.version_id for s in svc.history(uow, "Patient", first.id)] == [2, 1]
        assert svc.read_version(uow, "Patient", first.id, 1).resource == first.resource
        assert svc.read_patient(uow, first.id).resource["name"][0]["family"] == "Schmit"
        with pytest.raises(NotFound, match=f"Patient/{first.id} has no version 3"):
            svc.read_version(uow, "Patient", first.id, 3)
    assert uow.commits == 2


def test_an_unknown_patient_is_not_found(uow: FakeUnitOfWork) -> None:
    with uow:
        with pytest.raises(NotFound, match="Patient/nobody is not known"):
            svc.read_patient(uow, "nobody")
        with pytest.raises(NotFound, match="Patient/nobody is not known"):
            svc.update_patient(uow, CTX, "nobody", patient(CTX.systems, 1))
        with pytest.raises(NotFound, match="Patient/nobody is not known"):
            svc.history(uow, "Patient", "nobody")
    assert uow.commits == 0


def test_an_update_cannot_take_another_patients_identifier(uow: FakeUnitOfWork) -> None:
    first = create(uow, 1, local="H-1")
    second = create(uow, 2)
    with pytest.raises(Conflict, match=f"already identifies Patient/{first.id}"), uow:
        svc.update_patient(uow, CTX, second.id, patient(CTX.systems, 2, local="H-1"))
    with uow:
        assert svc.read_patient(uow, second.id) == second


def test_an_identity_source_keeps_the_other_authorities_numbers_and_the_national_one(
        uow: FakeUnitOfWork) -> None:
    resource = patient(CTX.systems, 1, local="H-1")
    resource["identifier"].append({"system": CLINIC_SYSTEM, "value": "C-1"})
    shared = create_from(uow, resource)  # by a registrar
    with uow:
        updated = svc.update_patient(uow, CTX, shared.id,
                                     patient(CTX.systems, 1, family="Neu", local="H-1"),
                                     domain=HOSPITAL)
    assert (CLINIC_SYSTEM, "C-1") in identifiers(updated)
    assert updated.resource["name"][0]["family"] == "Neu"
    with pytest.raises(NotPermitted, match="national identifier may not change"), uow:
        svc.update_patient(uow, CTX, shared.id, patient(CTX.systems, 2, local="H-1"),
                           domain=HOSPITAL)
    other = create(uow, 3)
    with pytest.raises(NotPermitted, match="not known by one of your identifiers"), uow:
        svc.update_patient(uow, CTX, other.id, patient(CTX.systems, 3, local="H-3"),
                           domain=HOSPITAL)
    with uow:
        assert svc.read_patient(uow, shared.id) == updated


def test_a_merge_links_both_entries_and_the_duplicate_answers_for_the_survivor(
        uow: FakeUnitOfWork) -> None:
    survivor = create(uow, 1)
    duplicate = create(uow, 2, family="Gonçalves")
    with uow:
        merged = svc.merge_patients(uow, CTX, duplicate.id, survivor.id)
        assert sorted(uow.directory.touched_patients) == sorted([survivor.id, duplicate.id])
    assert merged.version_id == 2 and merged.resource["active"] is False
    assert merged.resource["link"] == [
        {"other": {"reference": f"Patient/{survivor.id}"}, "type": "replaced-by"}]
    with uow:
        kept = svc.read_patient(uow, survivor.id)
        assert kept.version_id == 2 and kept.resource["link"] == [
            {"other": {"reference": f"Patient/{duplicate.id}"}, "type": "replaces"}]
        assert svc.search_patients(uow, PatientQuery(family=[("gonc",)]), PAGE).total == 0
        by_old = PatientQuery(identifier=[(Identifier(NATIONAL, national(duplicate)),)])
        assert [s.id for s in svc.search_patients(uow, by_old, PAGE).items] == [survivor.id]
    [record] = uow.directory.merges
    assert (record.patient_id, record.survivor_id, record.merged_at, record.unmerged_at) == (
        duplicate.id, survivor.id, NOW, None)


def test_merges_are_one_level_deep_and_never_into_oneself(uow: FakeUnitOfWork) -> None:
    one, two, three = create(uow, 1), create(uow, 2), create(uow, 3)
    with pytest.raises(BusinessRuleViolation, match="cannot be merged into itself"), uow:
        svc.merge_patients(uow, CTX, one.id, one.id)
    with uow:
        svc.merge_patients(uow, CTX, two.id, one.id)
    with pytest.raises(Conflict, match=f"already merged into Patient/{one.id}"), uow:
        svc.merge_patients(uow, CTX, two.id, three.id)
    with pytest.raises(Conflict, match="merge into that one"), uow:
        svc.merge_patients(uow, CTX, three.id, two.id)
    with pytest.raises(NotFound, match="Patient/nobody is not known"), uow:
        svc.merge_patients(uow, CTX, three.id, "nobody")
    with uow:
        assert svc.read_patient(uow, three.id) == three
    assert uow.commits == 4 and len(uow.directory.merges) == 1


def test_an_update_of_a_merged_entry_keeps_its_link_and_it_stays_inactive(
        uow: FakeUnitOfWork) -> None:
    survivor, duplicate = create(uow, 1), create(uow, 2)
    with uow:
        svc.merge_patients(uow, CTX, duplicate.id, survivor.id)
    sent = {**patient(CTX.systems, 2, family="Neu"), "active": True,
            "link": [{"other": {"reference": "Patient/elsewhere"}, "type": "seealso"}]}
    with uow:
        updated = svc.update_patient(uow, CTX, duplicate.id, sent)
    assert updated.resource["active"] is False
    assert updated.resource["link"] == [
        {"other": {"reference": f"Patient/{survivor.id}"}, "type": "replaced-by"}]
    assert uow.directory.patient_merge_state(duplicate.id).merged_into == survivor.id


def test_an_unmerge_restores_both_entries_and_keeps_every_version(uow: FakeUnitOfWork) -> None:
    survivor, duplicate = create(uow, 1), create(uow, 2)
    with pytest.raises(Conflict, match=f"Patient/{duplicate.id} is not merged"), uow:
        svc.unmerge_patient(uow, CTX, duplicate.id)
    with uow:
        svc.merge_patients(uow, CTX, duplicate.id, survivor.id)
    with uow:
        restored = svc.unmerge_patient(uow, CTX, duplicate.id)
    assert restored.version_id == 3 and restored.resource["active"] is True
    assert "link" not in restored.resource
    with uow:
        kept = svc.read_patient(uow, survivor.id)
        assert "link" not in kept.resource and kept.version_id == 3
        assert [s.version_id for s in svc.history(uow, "Patient", duplicate.id)] == [3, 2, 1]
        assert svc.search_patients(uow, PatientQuery(), PAGE).total == 2
    assert uow.directory.merges[0].unmerged_at == NOW
    assert uow.directory.patient_merge_state(duplicate.id).merged_into is None


def test_an_identity_source_merges_and_splits_only_entries_that_are_its_alone(
        uow: FakeUnitOfWork) -> None:
    survivor = create(uow, 1, local="H-1")
    shared = patient(CTX.systems, 2, local="H-2")
    shared["identifier"].append({"system": CLINIC_SYSTEM, "value": "C-2"})
    duplicate = create_from(uow, shared)
    with pytest.raises(NotPermitted, match="another assigning authority's identifiers"), uow:
        svc.merge_patients(uow, CTX, duplicate.id, survivor.id, HOSPITAL)
    with uow:  # a registrar may
        svc.merge_patients(uow, CTX, duplicate.id, survivor.id)
    with pytest.raises(NotPermitted, match="another assigning authority's identifiers"), uow:
        svc.unmerge_patient(uow, CTX, duplicate.id, HOSPITAL)
    assert uow.directory.patient_merge_state(duplicate.id).merged_into == survivor.id


def test_the_identity_feed_creates_then_updates_the_patient_its_identifier_names(
        uow: FakeUnitOfWork) -> None:
    named = Identifier(HOSPITAL_SYSTEM, "H-1")
    with uow:
        created, was_new = svc.feed_patient(uow, CTX, named, patient(CTX.systems, 1, local="H-1"),
                                            HOSPITAL)
    assert was_new and created.version_id == 1
    with uow:
        updated, was_new = svc.feed_patient(
            uow, CTX, named, patient(CTX.systems, 1, local="H-1", family="Neu"), HOSPITAL)
    assert not was_new and (updated.id, updated.version_id) == (created.id, 2)
    assert uow.commits == 2


def test_the_identity_feed_refuses_what_it_cannot_name(uow: FakeUnitOfWork) -> None:
    named = Identifier(HOSPITAL_SYSTEM, "H-1")
    with pytest.raises(NotPermitted, match=re.escape(f"the identifier {CLINIC_SYSTEM}|")), uow:
        svc.feed_patient(uow, CTX, Identifier(CLINIC_SYSTEM, "C-1"),
                         patient(CTX.systems, 1, local="H-1"), HOSPITAL)
    with pytest.raises(BusinessRuleViolation, match="must carry the identifier named"), uow:
        svc.feed_patient(uow, CTX, named, patient(CTX.systems, 1, local="H-2"))
    duplicate = {**patient(CTX.systems, 1, local="H-1"), "active": False, "link": [
        {"type": "replaced-by", "other": {"reference": "Patient/someone"}}]}
    with pytest.raises(BusinessRuleViolation, match="does not exist yet"), uow:
        svc.feed_patient(uow, CTX, named, duplicate)
    assert uow.directory.tables["patient"] == {} and uow.commits == 0


def test_a_feed_naming_its_survivor_by_identifier_updates_and_merges_in_one_commit(
        uow: FakeUnitOfWork) -> None:
    survivor = create(uow, 1, local="H-1")
    duplicate = create(uow, 2, local="H-2")
    sent = {**patient(CTX.systems, 2, local="H-2", family="Doublon"), "active": False,
            "link": [{"type": "replaced-by",
                      "other": {"identifier": {"system": HOSPITAL_SYSTEM, "value": "H-1"}}}]}
    before = uow.commits
    with uow:
        merged, was_new = svc.feed_patient(uow, CTX, Identifier(HOSPITAL_SYSTEM, "H-2"), sent,
                                           HOSPITAL)
    assert not was_new and uow.commits == before + 1
    assert merged.version_id == 3  # the update, then the merge
    assert merged.resource["name"][0]["family"] == "Doublon"
    assert uow.directory.patient_merge_state(duplicate.id).merged_into == survivor.id


@pytest.mark.parametrize(("link", "message"), [
    ({"identifier": {"system": HOSPITAL_SYSTEM, "value": "H-9"}},
     re.escape(f"the surviving patient {HOSPITAL_SYSTEM}|H-9 is not known")),
    ({"identifier": {"value": "H-1"}}, "needs a system and a value"),
    ({"reference": "Organization/o1"}, re.escape("reference it as 'Patient/id'")),
])
def test_a_feed_whose_survivor_cannot_be_found_changes_nothing(
        uow: FakeUnitOfWork, link: dict[str, Any], message: str) -> None:
    create(uow, 1, local="H-1")
    duplicate = create(uow, 2, local="H-2")
    sent = {**patient(CTX.systems, 2, local="H-2", family="Doublon"), "active": False,
            "link": [{"type": "replaced-by", "other": link}]}
    with pytest.raises(BusinessRuleViolation, match=message), uow:
        svc.feed_patient(uow, CTX, Identifier(HOSPITAL_SYSTEM, "H-2"), sent)
    with uow:
        assert svc.read_patient(uow, duplicate.id) == duplicate


def test_a_cross_reference_lists_every_number_of_the_survivor_and_its_duplicates(
        uow: FakeUnitOfWork) -> None:
    survivor = create(uow, 1, local="H-1")
    duplicate = create_from(uow, {**patient(CTX.systems, 2), "identifier": [
        *patient(CTX.systems, 2)["identifier"], {"system": CLINIC_SYSTEM, "value": "C-2"}]})
    with uow:
        svc.merge_patients(uow, CTX, duplicate.id, survivor.id)
    with uow:
        found = svc.cross_reference(uow, Identifier(CLINIC_SYSTEM, "C-2"), [])
        assert found.patient_id == survivor.id
        assert set(found.identifiers) == {
            Identifier(NATIONAL, national(survivor)), Identifier(NATIONAL, national(duplicate)),
            Identifier(HOSPITAL_SYSTEM, "H-1")}
        narrowed = svc.cross_reference(uow, Identifier(NATIONAL, national(survivor)),
                                       [HOSPITAL_SYSTEM, CLINIC_SYSTEM])
        assert narrowed.identifiers == [Identifier(CLINIC_SYSTEM, "C-2"),
                                        Identifier(HOSPITAL_SYSTEM, "H-1")]
        with pytest.raises(NotFound, match=re.escape(
                f"no patient is known by {HOSPITAL_SYSTEM}|H-9")) as unknown:
            svc.cross_reference(uow, Identifier(HOSPITAL_SYSTEM, "H-9"), [])
    assert unknown.value.expression == "sourceIdentifier"


# --- professionals and organizations --------------------------------------------------------


def professional(identifier: str, family: str = "Weber", profession: str = "physician",
                 specialty: str | None = None, organization_id: str | None = None
                 ) -> NewProfessional:
    return NewProfessional(
        new_practitioner(CTX.systems, identifier=identifier, family=family, given=["Jean"]),
        profession, specialty, organization_id)


def organization_id(uow: FakeUnitOfWork) -> str:
    return uow.directory.organization_ids_by_identifier(["ORG-H1"])["ORG-H1"]


def test_an_organization_identifier_names_one_organization(uow: FakeUnitOfWork) -> None:
    first = organization_id(uow)
    with pytest.raises(Conflict, match=f"'ORG-H1' already names Organization/{first}"), uow:
        svc.register_organizations(uow, CTX, [hospital(CTX.systems, "ORG-H2"),
                                              hospital(CTX.systems, "ORG-H1")])
    assert uow.directory.organization_ids_by_identifier(["ORG-H2"]) == {}
    assert uow.commits == 0


def test_two_organizations_cannot_assign_the_same_patient_numbers(uow: FakeUnitOfWork) -> None:
    """The service checks the identifier; the database's constraint keeps the numbering
    system to one organization, and the unit of work says so."""
    with pytest.raises(Conflict, match="duplicate identifier"), uow:
        svc.create_organization(uow, CTX, hospital(CTX.systems, "ORG-H2"))  # same system
    assert uow.directory.organization_ids_by_identifier(["ORG-H2"]) == {}


def test_a_professional_is_registered_with_the_role_that_says_what_they_are(
        uow: FakeUnitOfWork) -> None:
    org = organization_id(uow)
    with uow:
        [(practitioner, role)] = svc.register_professionals(
            uow, CTX, [professional("HP-1", specialty="cardiology", organization_id=org)])
        assert uow.directory.touched_professionals == [practitioner.id]
    assert uow.commits == 1
    assert role.resource["practitioner"] == {"reference": f"Practitioner/{practitioner.id}"}
    assert role.resource["organization"] == {"reference": f"Organization/{org}"}
    assert [r.profession for r in uow.directory.active_roles(practitioner.id)] == ["physician"]
    with uow:
        assert svc.read_resource(uow, "PractitionerRole", role.id) == role
        assert svc.read_resource(uow, "Practitioner", practitioner.id) == practitioner


@pytest.mark.parametrize(("item", "error", "message"), [
    (professional("HP-2", profession="astrologer"), BusinessRuleViolation,
     "unknown profession 'astrologer'"),
    (professional("HP-2", specialty="cardiology", profession="nurse"), BusinessRuleViolation,
     "specialty 'cardiology' is not a specialty of 'nurse'"),
    (professional("HP-2", organization_id="nowhere"), BusinessRuleViolation,
     "Organization/nowhere is not known"),
    (professional("HP-1"), Conflict, "'HP-1' already names Practitioner/"),
    (professional("HP-3"), Conflict, "duplicate identifier"),  # HP-3 twice in the batch
])
def test_a_batch_of_professionals_with_one_refused_stores_none(
        uow: FakeUnitOfWork, item: NewProfessional, error: type[Exception], message: str) -> None:
    with uow:
        svc.register_professionals(uow, CTX, [professional("HP-1")])
    with pytest.raises(error, match=message), uow:
        svc.register_professionals(uow, CTX, [professional("HP-3"), item])
    assert set(uow.directory.practitioner_ids_by_identifier(["HP-1", "HP-2", "HP-3"])) == {
        "HP-1"}
    assert len(uow.directory.tables["practitioner_role"]) == 1 and uow.commits == 1


def test_a_practitioner_identifier_is_registered_once(uow: FakeUnitOfWork) -> None:
    resource = new_practitioner(CTX.systems, identifier="HP-1", family="Weber", given=["Jean"])
    with uow:
        first = svc.create_practitioner(uow, CTX, resource)
    with pytest.raises(Conflict, match="'HP-1' is already registered"), uow:
        svc.create_practitioner(uow, CTX, resource)
    assert list(uow.directory.tables["practitioner"]) == [first.id]


def test_a_role_names_a_known_practitioner_and_organization(uow: FakeUnitOfWork) -> None:
    resource = new_practitioner(CTX.systems, identifier="HP-1", family="Weber", given=["Jean"])
    with uow:
        practitioner = svc.create_practitioner(uow, CTX, resource)
    orphan = new_role(CTX.professions, practitioner_id="nobody", profession="nurse")
    with pytest.raises(BusinessRuleViolation, match="Practitioner/nobody is not known"), uow:
        svc.create_role(uow, CTX, orphan)
    elsewhere = new_role(CTX.professions, practitioner_id=practitioner.id, profession="nurse",
                         organization_id="nowhere")
    with pytest.raises(BusinessRuleViolation, match="Organization/nowhere is not known"), uow:
        svc.create_role(uow, CTX, elsewhere)
    assert uow.directory.tables["practitioner_role"] == {}
    with uow:
        role = svc.create_role(uow, CTX, new_role(
            CTX.professions, practitioner_id=practitioner.id, profession="nurse",
            organization_id=organization_id(uow)))
        assert uow.directory.touched_professionals == [practitioner.id]
    assert role.version_id == 1 and uow.directory.active_roles(practitioner.id)[0].id == role.id


def test_suspending_a_licence_is_a_new_version_of_the_practitioner(uow: FakeUnitOfWork) -> None:
    resource = new_practitioner(CTX.systems, identifier="HP-1", family="Weber", given=["Jean"])
    with uow:
        first = svc.create_practitioner(uow, CTX, resource)
        other = svc.create_practitioner(uow, CTX, new_practitioner(
            CTX.systems, identifier="HP-2", family="Klein", given=["Eva"]))
    suspended = new_practitioner(CTX.systems, identifier="HP-1", family="Weber", given=["Jean"],
                                 licence_status="suspended")
    with pytest.raises(VersionConflict), uow:
        svc.update_practitioner(uow, CTX, first.id, suspended, if_match=2)
    taken = new_practitioner(CTX.systems, identifier="HP-2", family="Weber", given=["Jean"])
    with pytest.raises(Conflict, match="'HP-2' names another practitioner"), uow:
        svc.update_practitioner(uow, CTX, first.id, taken)
    with pytest.raises(NotFound, match="Practitioner/nobody is not known"), uow:
        svc.update_practitioner(uow, CTX, "nobody", suspended)
    with uow:
        second = svc.update_practitioner(uow, CTX, first.id, suspended, if_match=1)
        assert uow.directory.touched_professionals == [first.id]
    assert second.version_id == 2
    with uow:
        assert [s.version_id for s in svc.history(uow, "Practitioner", first.id)] == [2, 1]
        assert svc.read_resource(uow, "Practitioner", other.id) == other
        found = svc.search_practitioners(uow, PractitionerQuery(identifier=[("HP-1",)]), PAGE)
        assert found.items == [second]


def test_directory_reads_of_unknown_resources_are_not_found(uow: FakeUnitOfWork) -> None:
    with uow:
        for kind in ("Practitioner", "PractitionerRole", "Organization", "CareTeam"):
            with pytest.raises(NotFound, match=f"{kind}/nobody is not known"):
                svc.read_resource(uow, kind, "nobody")
        with pytest.raises(NotFound, match="Organization/nobody has no version 1"):
            svc.read_version(uow, "Organization", "nobody", 1)


def test_searches_read_the_directory_as_stored(uow: FakeUnitOfWork) -> None:
    """The search use cases hand the store's answer on: a patient by a word of a name, accents
    ignored; the organizations by name."""
    muller = create(uow, 1, family="Müller", given=["Anne", "Marie"])
    create(uow, 2, family="Weber", given=["Paul"])
    with uow:
        found = svc.search_patients(uow, PatientQuery(name=[("mar",)]), PAGE)
        assert (found.total, [s.id for s in found.items]) == (1, [muller.id])
        assert svc.search_patients(uow, PatientQuery(birthdate=[]), Page(1, 1)).total == 2
        orgs = svc.search_organizations(uow, svc.OrganizationQuery(name=[("clin",)]), PAGE)
        assert [s.resource["name"] for s in orgs.items] == ["Clinique"]
        roles = svc.search_roles(uow, svc.RoleQuery(role=[("nurse",)]), PAGE)
        assert roles.total == 0


def test_a_patient_born_on_another_day_than_their_number_says_is_refused(
        uow: FakeUnitOfWork) -> None:
    wrong = patient(CTX.systems, 1)
    wrong["birthDate"] = date(1980, 4, 13).isoformat()
    with pytest.raises(BusinessRuleViolation, match="does not match the birth date"), uow:
        svc.create_patient(uow, CTX, wrong)
    assert uow.directory.tables["patient"] == {} and uow.commits == 0

