"""The patient's e-prescriptions and their access codes, over HTTP on both databases (issue #18,
"the patient sees their prescriptions and codes in the portal and through their SMART app"):

- the access code is kept sealed beside its hash: the patient (their app, their portal page)
  gets it back while the prescription waits for a pharmacy; the prescriber, a pharmacist and
  any other professional never do; the database does not hold it in clear;
- a signed prescription is bound to the task it was signed for (its Bundle's identifier):
  replayed onto another task, or without that identifier, it is refused with the reason;
- the portal page and its printout, and every refusal of the printout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pytest
import zxingcpp
from sqlalchemy import text
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.domain.prescriptions import code_hash
from support.accounts import enrol_registered
from support.documents import Pro, grant
from support.erezept import (
    ACCESS_CODE,
    Scene,
    dispense,
    identifier,
    prescription_bundle,
    sign,
)
from support.portal import signed_in


@pytest.fixture
def scene(platform: Platform, client: TestClient, registrar: TestClient) -> Scene:
    return Scene(platform, client, registrar, seq=61, login="rx.patient@example.lu")


def portal_of(scene: Scene, port: int) -> TestClient:
    assert scene.account is not None
    return signed_in(scene.platform, scene.account, port=port)


def reason(answer: Any) -> str:
    return str(answer.json()["issue"][0]["diagnostics"])


def task_as(scene: Scene, task_id: str, headers: dict[str, str]) -> Any:
    return scene.client.get(f"/fhir/Task/{task_id}", headers=headers)


def accept(scene: Scene, task_id: str, code: str) -> Any:
    return scene.client.post(f"/fhir/Task/{task_id}/$accept", params={"ac": code},
                             headers=scene.pharmacist.headers)


def database_bytes(database_url: str) -> bytes:
    """Every byte of a SQLite database: its file and its write-ahead log."""
    path = Path(database_url.removeprefix("sqlite:///"))
    found = b""
    for part in (path, path.with_name(path.name + "-wal")):
        if part.exists():
            found += part.read_bytes()
    return found


# --- the sealed code ---------------------------------------------------------------------------


def test_the_patient_gets_the_code_back_and_no_professional_does(
        scene: Scene, platform: Platform) -> None:
    task_id, code = scene.ready()
    # The patient's app: the Task, and their prescriptions.
    read = task_as(scene, task_id, scene.patient_headers)
    assert read.status_code == 200, read.text
    assert identifier(read.json(), ACCESS_CODE) == code
    listed = scene.client.get("/fhir/Task", params={"patient": scene.patient_id},
                              headers=scene.patient_headers)
    assert listed.status_code == 200, listed.text
    [entry] = listed.json()["entry"]
    assert identifier(entry["resource"], ACCESS_CODE) == code
    # The prescriber, another physician the patient gave access to, the pharmacist: no code.
    colleague = Pro(platform, "HP-ERX-CODES-OTHER")
    grant(scene.client, scene.patient_headers, scene.patient_id, colleague.id)
    for who, headers in (("prescriber", scene.gp.headers), ("colleague", colleague.headers),
                         ("pharmacist", scene.pharmacist.headers)):
        seen = task_as(scene, task_id, headers)
        if seen.status_code == 200:
            assert identifier(seen.json(), ACCESS_CODE) is None, who
            assert code not in seen.text, who
        else:
            assert seen.status_code in (403, 404), (who, seen.text)
        found = scene.client.get("/fhir/Task", params={"patient": scene.patient_id},
                                 headers=headers)
        assert code not in found.text, who
    # Once a pharmacy holds it, the code opens nothing: the patient is not shown it either.
    assert accept(scene, task_id, code).status_code == 200
    held = task_as(scene, task_id, scene.patient_headers)
    assert held.json()["status"] == "in-progress"
    assert identifier(held.json(), ACCESS_CODE) is None


def test_the_database_holds_the_code_sealed_never_in_clear(
        scene: Scene, platform: Platform, database_url: str) -> None:
    task_id, code = scene.ready()
    platform.engine.dispose()  # SQLite: every connection's writes are in the files
    with platform.engine.connect() as connection:
        row = connection.execute(
            text("SELECT access_code_hash, access_code_sealed FROM prescription_task "
                 "WHERE id = :id"), {"id": task_id}).one()
    assert row.access_code_hash == code_hash(code)
    sealed = bytes(row.access_code_sealed)
    assert len(sealed) > len(code) // 2 and code.encode() not in sealed
    assert bytes.fromhex(code) not in sealed
    if database_url.startswith("sqlite"):
        stored = database_bytes(database_url)
        assert code_hash(code).encode() in stored  # the search does find what is there
        assert code.encode() not in stored
        assert bytes.fromhex(code) not in stored
    else:
        with platform.engine.connect() as connection:
            whole = connection.execute(
                text("SELECT t::text FROM prescription_task t WHERE id = :id"),
                {"id": task_id}).scalar_one()
        assert code_hash(code) in whole and code not in whole
    # Moved onto another task's row, the sealed code does not open there.
    other_id, other_code = scene.ready()
    with platform.engine.begin() as connection:
        connection.execute(text("UPDATE prescription_task SET access_code_sealed = :s "
                                "WHERE id = :id"), {"s": sealed, "id": other_id})
    moved = task_as(scene, other_id, scene.patient_headers)
    assert moved.status_code == 200, moved.text
    assert identifier(moved.json(), ACCESS_CODE) is None
    assert code not in moved.text and other_code not in moved.text


# --- a signed prescription is bound to its task ------------------------------------------------


def test_a_prescription_signed_for_one_task_is_refused_on_another(
        scene: Scene, platform: Platform) -> None:
    first, _code, _ = scene.create()
    second, _code2, _ = scene.create()
    signed_for_first = sign(scene.bundle(first), scene.gp.key_pem, scene.gp.chain)
    replayed = scene.activate(second, signed_for_first)
    assert replayed.status_code in (400, 422), replayed.text
    assert "signed for prescription number" in reason(replayed)
    assert scene.number(first) in reason(replayed)
    assert task_as(scene, second, scene.gp.headers).json()["status"] == "draft"
    # On its own task it is accepted; then replaying it once more is refused all the same.
    assert scene.activate(first, signed_for_first).status_code == 200
    again = scene.activate(second, signed_for_first)
    assert again.status_code in (400, 422) and "signed for prescription number" in reason(again)


def test_a_prescription_without_its_number_is_refused(scene: Scene, platform: Platform) -> None:
    task_id, _code, _ = scene.create()
    for change in ("none", "other-system"):
        bundle = scene.bundle(task_id)
        if change == "none":
            del bundle["identifier"]
        else:
            bundle["identifier"]["system"] = "https://example.org/prescription-id"
        answer = scene.activate(task_id, sign(bundle, scene.gp.key_pem, scene.gp.chain))
        assert answer.status_code in (400, 422), (change, answer.text)
        assert "identifier must be this task's prescription number" in reason(answer), change
    assert task_as(scene, task_id, scene.gp.headers).json()["status"] == "draft"


# --- the portal --------------------------------------------------------------------------------


def read_codes(pdf: bytes) -> list[str]:
    image = pdfium.PdfDocument(pdf)[0].render(scale=4).to_pil()
    return [found.text for found in zxingcpp.read_barcodes(image)]


def print_link(task_id: str) -> str:
    return f"/me/prescriptions/print?lang=en&amp;prescription={task_id}"


def test_the_patient_sees_their_prescriptions_and_prints_a_ready_one(
        scene: Scene, platform: Platform) -> None:
    portal = portal_of(scene, 50061)
    done, _done_code = scene.ready()
    ready, code = scene.ready()
    taken = accept(scene, done, _done_code)
    secret = identifier(taken.json()["entry"][0]["resource"],
                        "https://carevault.lu/fhir/NamingSystem/Secret")
    closed = scene.client.post(f"/fhir/Task/{done}/$close", params={"secret": secret},
                               json=dispense(done, scene.national_id, scene.patient_system),
                               headers=scene.pharmacist.headers)
    assert closed.status_code == 200, closed.text

    page = portal.get("/me/prescriptions?lang=en")
    assert page.status_code == 200, page.text
    assert page.headers["cache-control"] == "no-store"
    assert 'id="nav-prescriptions"' in page.text
    assert "Amoxicillin 1 g" in page.text and "1 tablet, 3 times every 1 day" in page.text
    assert "Anna Arzt" in page.text
    assert scene.number(ready) in page.text and code in page.text
    assert print_link(ready) in page.text
    # The dispensed one: its status and date, neither its code nor a printout.
    assert 'data-status="completed"' in page.text and "Dispensed on" in page.text
    assert _done_code not in page.text and print_link(done) not in page.text
    # In French and German, the dosage in words too.
    assert "3 fois par jour" in portal.get("/me/prescriptions?lang=fr").text
    assert "3-mal pro Tag" in portal.get("/me/prescriptions?lang=de").text

    pdf = portal.get(f"/me/prescriptions/print?prescription={ready}")
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["cache-control"] == "no-store"
    access = next(json.loads(c) for c in read_codes(pdf.content) if c.startswith("{"))
    assert access == {"urls": [f"Task/{ready}/$accept?ac={code}"]}
    # Seeing the page and printing are recorded in the patient's trail.
    entries = [AuditRecord.from_canonical(d)
               for _, d in platform.audit.patient_entries(scene.patient_id, limit=500)]
    assert {"prescriptions", "prescription-print"} <= {e.interaction for e in entries}


def another_patients_prescription(scene: Scene, platform: Platform,
                                  registrar: TestClient) -> str:
    """A ready prescription of the same GP for another patient (who gave the GP access)."""
    from support.builders import patient
    from support.tokens import patient_headers
    someone = patient(platform.directory.systems, 62, family="Autre")
    created = registrar.post("/fhir/Patient", json=someone,
                             headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201, created.text
    national = identifier(someone, scene.patient_system)
    assert national is not None
    theirs = {**patient_headers(platform, created.json()["id"]),
              "Content-Type": "application/fhir+json"}
    grant(scene.client, theirs, created.json()["id"], scene.gp.id)
    task_id, _code, _ = scene.create()
    bundle = prescription_bundle(
        patient_system=scene.patient_system, patient_id_value=national,
        practitioner_system=platform.settings.professional_id_system,
        practitioner_id_value="HP-ERX-GP", number=scene.number(task_id))
    answer = scene.activate(task_id, sign(bundle, scene.gp.key_pem, scene.gp.chain))
    assert answer.status_code == 200, answer.text
    return task_id


def test_every_refused_printout_says_why(scene: Scene, platform: Platform,
                                         registrar: TestClient) -> None:
    portal = portal_of(scene, 50062)
    ready, code = scene.ready()
    theirs = another_patients_prescription(scene, platform, registrar)
    refusals = [
        (f"/me/prescriptions/print?prescription={theirs}", 404),
        (f"/me/prescriptions/print?prescription={'0' * 32}", 404),
        ("/me/prescriptions/print?prescription=../../Task", 404),
        ("/me/prescriptions/print", 404),
    ]
    for path, status in refusals:
        answer = portal.get(path + "&lang=fr" if "?" in path else path + "?lang=fr")
        assert answer.status_code == status, (path, answer.text)
        assert "Aucune ordonnance de votre dossier" in answer.text, path
        assert answer.headers["content-type"].startswith("text/html")
    # Once a pharmacy holds it, it is not printed again.
    assert accept(scene, ready, code).status_code == 200
    held = portal.get(f"/me/prescriptions/print?prescription={ready}")
    assert held.status_code == 409 and "no longer waits" in held.text
    # Without a session: to the sign-in page, nothing printed.
    anonymous = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                           client=("127.0.0.1", 50063))
    for path in ("/me/prescriptions", f"/me/prescriptions/print?prescription={theirs}"):
        away = anonymous.get(path, follow_redirects=False)
        assert away.status_code == 303 and away.headers["location"].startswith("/login")


def test_another_patient_sees_none_of_these_prescriptions(
        scene: Scene, platform: Platform) -> None:
    """A patient's session acts on their own record only: another patient's page lists none
    of these prescriptions, and no code."""
    _task, code = scene.ready()
    _account_id, someone = enrol_registered(platform, _other_patient(platform),
                                            "rx.someone@example.lu")
    portal = signed_in(platform, someone, port=50064)
    page = portal.get("/me/prescriptions")
    assert page.status_code == 200
    assert code not in page.text and 'id="no-prescriptions"' in page.text


def _other_patient(platform: Platform) -> str:
    from carevault.services import directory as svc
    from support.builders import patient
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        made = svc.register_patients(uow, ctx, [patient(ctx.systems, 63, family="Autre")])
        return made[0].id

