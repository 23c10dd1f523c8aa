"""The professional's home in the workspace, over HTTP on both databases: a physician sees the
patients whose grants reach them (directly, and through a care team), mandates an assistant;
the assistant chooses to act for them (a banner says so), only under a mandate in force, which
ends the acting at the next request once the physician ends it. Every form needs the
session's CSRF token."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.authorization import GrantLevel, Party, Subject, SubjectKind
from carevault.services import directory as svc
from carevault.services.professionals import create_care_team
from carevault.services.record_policy import Actor
from integration.test_workspace_signin import ORIGIN, browser, enrol, page_csrf
from support.builders import hospital, patient
from support.passkeys import SoftwareAuthenticator, issue_card

LATER = (date.today() + timedelta(days=20)).isoformat()


def signed_in(platform: Platform, folder: Path, identifier: str, family: str,
              profession: str = "physician") -> tuple[TestClient, str]:
    card = issue_card(platform, folder, identifier, family, profession, None)
    web = browser(platform)
    done = enrol(web, card, SoftwareAuthenticator(ORIGIN))
    assert done.status_code == 200, done.text
    return web, card.practitioner_id


def test_a_physician_sees_their_patients_and_an_assistant_acts_in_their_name(
        platform: Platform, tmp_path: Path) -> None:
    doctor, doctor_id = signed_in(platform, tmp_path / "doc", "HP-MINE-1", "Docteur")
    assistant, assistant_id = signed_in(platform, tmp_path / "ass", "HP-MINE-2", "Assistant",
                             "medical-assistant")
    other, other_id = signed_in(platform, tmp_path / "oth", "HP-MINE-3", "Autre")
    with platform.unit_of_work() as uow:
        [alpha, beta] = svc.register_patients(uow, platform.directory, [
            patient(platform.directory.systems, 71, family="Alphonse", given=["Ada"]),
            patient(platform.directory.systems, 72, family="Bertrand", given=["Bea"])])
        [org] = svc.register_organizations(uow, platform.directory,
                                           [hospital(platform.directory.systems, "ORG-MINE")])
    with platform.unit_of_work() as uow:
        team = create_care_team(uow, {
            "resourceType": "CareTeam", "status": "active", "name": "Équipe Mine",
            "managingOrganization": [{"reference": f"Organization/{org.id}"}],
            "participant": [{"member": {"reference": f"Practitioner/{other_id}"}}]},
            datetime.now(UTC))
    owner = Actor(Subject(SubjectKind.PATIENT, alpha.id), f"Patient/{alpha.id}")
    platform.policy.grant(owner, alpha.id, Party.PRACTITIONER, doctor_id, GrantLevel.NORMAL)
    team_owner = Actor(Subject(SubjectKind.PATIENT, beta.id), f"Patient/{beta.id}")
    platform.policy.grant(team_owner, beta.id, Party.CARE_TEAM, team.id, GrantLevel.NORMAL,
                          end=datetime.now(UTC) + timedelta(days=5))

    home = doctor.get("/workspace?lang=en")
    assert home.status_code == 200
    assert "Ada Alphonse" in home.text and f"/workspace/record/{alpha.id}" in home.text
    assert "Bea Bertrand" not in home.text
    # The care team's member sees the patient whose grant reaches the team.
    theirs = other.get("/workspace?lang=fr").text
    assert "Bea Bertrand" in theirs and "Équipe Mine" in theirs and "Ada Alphonse" not in theirs

    # Mandating needs the session's CSRF token; the mandator is always the signed-in person.
    form = {"do": "mandate", "assistant": "HP-MINE-2", "end": LATER, "mandator": other_id}
    assert doctor.post("/workspace/assistants", data=form,
                       follow_redirects=False).status_code == 400
    csrf = page_csrf(doctor, "/workspace")
    made = doctor.post("/workspace/assistants", data={**form, "csrf": csrf},
                       follow_redirects=False)
    assert made.status_code == 303, made.text
    with platform.unit_of_work() as uow:
        [mandate] = uow.directory.mandates(assistant_id=assistant_id)
    assert mandate.mandator_id == doctor_id
    assert "Clara Assistant" in doctor.get("/workspace").text
    unknown = doctor.post("/workspace/assistants", data={**form, "csrf": csrf,
                                                         "assistant": "HP-NOBODY"})
    assert unknown.status_code == 404

    # The assistant acts for nobody until they choose; never for someone who did not mandate.
    page = assistant.get("/workspace?lang=de")
    assert "acting-banner" not in page.text and "Clara Docteur" in page.text
    csrf_a = page_csrf(assistant, "/workspace")
    refused = assistant.post("/workspace/acting-for",
                             data={"csrf": csrf_a, "do": "act", "mandator": other_id})
    assert refused.status_code == 403
    assert assistant.post("/workspace/acting-for", data={"do": "act", "mandator": doctor_id},
                          follow_redirects=False).status_code == 400
    chosen = assistant.post("/workspace/acting-for",
                            data={"csrf": csrf_a, "do": "act", "mandator": doctor_id},
                            follow_redirects=False)
    assert chosen.status_code == 303
    acting = assistant.get("/workspace?lang=en").text
    assert 'id="acting-banner"' in acting and "Clara Docteur" in acting
    assert "Ada Alphonse" in acting  # the physician's patients, read in their name
    # An assistant mandates nobody.
    assert assistant.post("/workspace/assistants", data={
        "csrf": csrf_a, "do": "mandate", "assistant": "HP-MINE-2",
        "end": LATER}).status_code == 403

    # The physician ends the mandate: the assistant's very next request acts for nobody.
    ended = doctor.post("/workspace/assistants",
                        data={"csrf": csrf, "do": "end", "mandate": mandate.id},
                        follow_redirects=False)
    assert ended.status_code == 303
    after = assistant.get("/workspace?lang=en").text
    assert 'id="acting-banner"' not in after and "Ada Alphonse" not in after
    for client in (doctor, assistant, other):
        client.close()


def test_a_physician_delegates_through_the_form_and_only_the_delegator_ends_it(
        platform: Platform, tmp_path: Path) -> None:
    """``POST /workspace/delegations``: the form needs the session's CSRF token and an end
    date within range; only a practitioner holding a delegable access delegates it (a
    colleague holding none is refused); the delegate cannot end the delegation, its delegator
    can. Each effect is read back from the record."""
    doctor, doctor_id = signed_in(platform, tmp_path / "doc", "HP-DELEG-1", "Delegue")
    colleague, colleague_id = signed_in(platform, tmp_path / "col", "HP-DELEG-2", "Collegue")
    with platform.unit_of_work() as uow:
        [alpha] = svc.register_patients(uow, platform.directory, [
            patient(platform.directory.systems, 81, family="Delta", given=["Dora"])])
    owner = Actor(Subject(SubjectKind.PATIENT, alpha.id), f"Patient/{alpha.id}")
    platform.policy.grant(owner, alpha.id, Party.PRACTITIONER, doctor_id, GrantLevel.NORMAL,
                          delegable=True)
    platform.policy.allow_delegation(owner, alpha.id, True)

    def delegations() -> list[str]:
        with platform.unit_of_work() as uow:
            record = uow.records.load(alpha.id, datetime.now(UTC))
            assert record is not None
            return [d.delegate_id for d in record.delegations]

    form = {"do": "delegate", "patient": alpha.id, "colleague": "HP-DELEG-2", "end": LATER,
            "level": "normal"}
    csrf = page_csrf(doctor, "/workspace")
    assert doctor.post("/workspace/delegations", data=form,
                       follow_redirects=False).status_code == 400  # no CSRF token
    assert doctor.post("/workspace/delegations", data={**form, "csrf": "forged"},
                       follow_redirects=False).status_code == 400
    for end in ("", "2020-01-01", (date.today() + timedelta(days=5 * 366 + 2)).isoformat()):
        assert doctor.post("/workspace/delegations", data={**form, "csrf": csrf, "end": end},
                           follow_redirects=False).status_code == 400
    assert delegations() == []
    # The colleague holds no access to pass on: refused by the engine's rule, nothing made.
    csrf_c = page_csrf(colleague, "/workspace")
    theirs = colleague.post("/workspace/delegations", data={
        **form, "csrf": csrf_c, "colleague": "HP-DELEG-1"}, follow_redirects=False)
    assert theirs.status_code == 403 and delegations() == []
    made = doctor.post("/workspace/delegations", data={**form, "csrf": csrf},
                       follow_redirects=False)
    assert made.status_code == 303, made.text
    assert delegations() == [colleague_id]
    with platform.unit_of_work() as uow:
        record = uow.records.load(alpha.id, datetime.now(UTC))
        assert record is not None
        [delegation] = record.delegations
    # The delegate cannot end it; the delegator can.
    ending = {"do": "end", "patient": alpha.id, "delegation": delegation.id}
    assert colleague.post("/workspace/delegations", data={**ending, "csrf": csrf_c},
                          follow_redirects=False).status_code == 403
    assert delegations() == [colleague_id]
    ended = doctor.post("/workspace/delegations", data={**ending, "csrf": csrf},
                        follow_redirects=False)
    assert ended.status_code == 303 and delegations() == []
    for client in (doctor, colleague):
        client.close()
