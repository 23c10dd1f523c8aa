"""E-prescriptions over HTTP, on both databases (issue #18): the prescriber creates and
activates a Task with a signed prescription; forgeries and the wrong people are refused, each
with its reason; a pharmacy accepts, returns and completes it with a receipt the platform signs
and anyone verifies offline; abuse of the codes is refused, counted and reported."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.adapters.keys.log_signer import platform_signer_from_key_source
from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.domain.prescriptions import valid_number
from carevault.services import pki
from carevault.verifier import VerificationError, verify_receipt
from support.documents import Pro, grant
from support.erezept import (
    ACCESS_CODE,
    CREATE,
    PRESCRIPTION_ID,
    SECRET,
    Pharmacist,
    Scene,
    dispense,
    identifier,
    sign,
    tampered,
)


@pytest.fixture
def scene(platform: Platform, client: TestClient, registrar: TestClient) -> Scene:
    return Scene(platform, client, registrar)


def reason(answer: Any) -> str:
    return str(answer.json()["issue"][0]["diagnostics"])


def entries_since(platform: Platform, before: int) -> list[AuditRecord]:
    rows = platform.audit.entries("clinical", before, platform.audit.size("clinical"))
    return [AuditRecord.from_canonical(data) for _, data in rows]


# --- prescribing -------------------------------------------------------------------------------


def test_create_then_activate_a_signed_prescription(scene: Scene, platform: Platform) -> None:
    task_id, code, task = scene.create()
    assert task["status"] == "draft"
    number = identifier(task, PRESCRIPTION_ID)
    assert number is not None and valid_number(number)
    assert len(code) == 64  # 256 bits

    answer = scene.activate(task_id, sign(scene.bundle(task_id), scene.gp.key_pem,
                                          scene.gp.chain))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ready"
    assert answer.json()["for"] == {"reference": f"Patient/{scene.patient_id}"}
    assert identifier(answer.json(), ACCESS_CODE) is None  # shown once, at creation

    # The patient is told, in their notifications.
    notices = scene.client.get("/fhir/Communication", params={"patient": scene.patient_id},
                               headers=scene.patient_headers).json()
    assert any(number in e["resource"]["payload"][0]["contentString"]
               for e in notices.get("entry", []))
    # Activating twice is a conflict with the status.
    again = scene.activate(task_id, sign(scene.bundle(task_id), scene.gp.key_pem, scene.gp.chain))
    assert again.status_code == 409 and "(ready)" in reason(again)


def test_the_access_code_is_stored_only_as_a_hash(scene: Scene, platform: Platform) -> None:
    task_id, code, _ = scene.create()
    from sqlalchemy import text
    with platform.engine.connect() as connection:
        row = connection.execute(text("SELECT * FROM prescription_task WHERE id = :id"),
                                 {"id": task_id}).mappings().one()
    assert code not in " ".join(str(v) for v in row.values())


FORGERIES = ["modified", "re-signed", "unsigned", "someone-else"]


def test_a_forged_prescription_is_refused(scene: Scene, platform: Platform) -> None:
    task_id, _code, _ = scene.create()
    for forgery in FORGERIES:
        forged(scene, platform, task_id, forgery)


def forged(scene: Scene, platform: Platform, task_id: str, forgery: str) -> None:
    jws = sign(scene.bundle(task_id), scene.gp.key_pem, scene.gp.chain)
    if forgery == "modified":  # the quantity raised after signing
        def more(bundle: dict[str, Any]) -> dict[str, Any]:
            request = bundle["entry"][1]["resource"]
            request["dispenseRequest"]["quantity"]["value"] = 200
            return bundle
        jws = tampered(jws, more)
    elif forgery == "re-signed":  # signed again by another physician's valid card
        other = Pro(platform, "HP-ERX-OTHER")
        jws = sign(scene.bundle(task_id), other.key_pem, other.chain)
    elif forgery == "unsigned":
        header, payload, _ = jws.split(".")
        jws = f"{header}.{payload}."
    elif forgery == "someone-else":  # a key that is not the one of the certificate
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()
        jws = sign(scene.bundle(task_id), key, scene.gp.chain)
    answer = scene.activate(task_id, jws)
    assert answer.status_code in (400, 422), (forgery, answer.text)
    assert "signature" in reason(answer) or "signed" in reason(answer), forgery
    task = scene.client.get(f"/fhir/Task/{task_id}", headers=scene.gp.headers)
    assert task.json()["status"] == "draft"


def test_a_revoked_card_does_not_sign(scene: Scene, platform: Platform) -> None:
    """The GP's second card (the token came with the first) is revoked: its signature is
    refused, as the CRL says."""
    from support.tokens import professional_credentials
    _token, key, chain = professional_credentials(platform, identifier="HP-ERX-GP")
    from cryptography import x509
    serial = format(x509.load_der_x509_certificate(chain[0]).serial_number, "x")
    with platform.unit_of_work() as uow:
        pki.revoke(uow, serial, "keyCompromise", datetime.now(UTC))
        uow.commit()
    task_id, _code, _ = scene.create()
    answer = scene.activate(task_id, sign(scene.bundle(task_id), key, chain))
    assert answer.status_code in (400, 422), answer.text
    assert "revoked" in reason(answer), reason(answer)


def test_a_suspended_prescriber_is_refused(scene: Scene, platform: Platform) -> None:
    task_id, _code, _ = scene.create()
    jws = sign(scene.bundle(task_id), scene.gp.key_pem, scene.gp.chain)
    from carevault.fhirmodel.directory import new_practitioner
    from carevault.services import directory as svc
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        svc.update_practitioner(uow, ctx, scene.gp.id, {
            **new_practitioner(ctx.systems, identifier="HP-ERX-GP", family="HP-ERX-GP",
                               given=["Theo"], licence_status="suspended"),
            "id": scene.gp.id})
        uow.commit()
    answer = scene.activate(task_id, jws)
    assert answer.status_code == 401, answer.text
    assert "licence" in reason(answer)


def test_who_may_not_prescribe_does_not(scene: Scene, platform: Platform) -> None:
    for profession in ("pharmacist", "nurse"):
        other = Pro(platform, f"HP-ERX-{profession.upper()}", profession=profession,
                    specialty=None)
        answer = scene.client.post("/fhir/Task/$create", json=CREATE, headers=other.headers)
        assert answer.status_code == 403, answer.text
        assert "prescription" in reason(answer)


def test_a_midwife_prescribes_but_only_for_whom_she_may(scene: Scene,
                                                        platform: Platform) -> None:
    """The profile matrix lets midwives write prescriptions; the record still needs her to
    have access (a grant), like any write."""
    midwife = Pro(platform, "HP-ERX-MIDWIFE", profession="midwife", specialty=None)
    task_id, _code, _ = scene.create(midwife)
    bundle = scene.bundle(task_id, who=midwife)
    bundle["entry"][4]["resource"]["identifier"][0]["value"] = "HP-ERX-MIDWIFE"
    refused = scene.activate(task_id, sign(bundle, midwife.key_pem, midwife.chain), midwife)
    assert refused.status_code == 403, refused.text
    grant(scene.client, scene.patient_headers, scene.patient_id, midwife.id)
    done = scene.activate(task_id, sign(bundle, midwife.key_pem, midwife.chain), midwife)
    assert done.status_code == 200, done.text


def test_only_its_prescriber_activates_a_task(scene: Scene, platform: Platform) -> None:
    task_id, _code, _ = scene.create()
    other = Pro(platform, "HP-ERX-COLLEAGUE")
    grant(scene.client, scene.patient_headers, scene.patient_id, other.id)
    bundle = scene.bundle(task_id)
    bundle["entry"][4]["resource"]["identifier"][0]["value"] = "HP-ERX-COLLEAGUE"
    answer = scene.activate(task_id, sign(bundle, other.key_pem, other.chain), other)
    assert answer.status_code == 403, answer.text


def test_an_incomplete_prescription_is_refused(scene: Scene) -> None:
    task_id, _code, _ = scene.create()
    for problem in ("product", "atc", "dosage", "quantity", "expired"):
        incomplete(scene, task_id, problem)


def incomplete(scene: Scene, task_id: str, problem: str) -> None:
    bundle = scene.bundle(task_id, valid_days=-1 if problem == "expired" else 28)
    request, medication = bundle["entry"][1]["resource"], bundle["entry"][2]["resource"]
    if problem == "product":
        medication["code"]["coding"][0]["code"] = "9999999"
    elif problem == "atc":
        medication["code"]["coding"][1]["code"] = "N02BE01"
    elif problem == "dosage":
        del request["dosageInstruction"][0]["doseAndRate"]
    elif problem == "quantity":
        del request["dispenseRequest"]["quantity"]
    answer = scene.activate(task_id, sign(bundle, scene.gp.key_pem, scene.gp.chain))
    assert answer.status_code in (400, 422), (problem, answer.text)


# --- dispensing --------------------------------------------------------------------------------


def accept(scene: Scene, task_id: str, code: str, who: Pharmacist | None = None) -> Any:
    return scene.client.post(f"/fhir/Task/{task_id}/$accept", params={"ac": code},
                             headers=(who or scene.pharmacist).headers)


def test_accept_close_and_a_receipt_verified_offline(scene: Scene, platform: Platform) -> None:
    task_id, code = scene.ready()
    before = platform.audit.size("clinical")
    answer = accept(scene, task_id, code)
    assert answer.status_code == 200, answer.text
    task, binary = (e["resource"] for e in answer.json()["entry"])
    assert task["status"] == "in-progress"
    secret = identifier(task, SECRET)
    assert secret is not None
    assert binary["contentType"] == "application/jose"
    signed = base64.b64decode(binary["data"]).decode()
    assert signed.count(".") == 2
    # Neither the code nor the secret is in the audit log.
    for record in entries_since(platform, before):
        assert code not in str(record) and secret not in str(record)

    second = accept(scene, task_id, code, Pharmacist(platform, "HP-ERX-PHARMA-2",
                                                     scene.pharmacy_id))
    assert second.status_code == 409, second.text
    assert "(in-progress)" in reason(second)

    closed = scene.client.post(f"/fhir/Task/{task_id}/$close", params={"secret": secret},
                               json=dispense(task_id, scene.national_id, scene.patient_system),
                               headers=scene.pharmacist.headers)
    assert closed.status_code == 200, closed.text
    receipt = base64.b64decode(closed.json()["signature"]["data"]).decode()
    platform_key = platform_signer_from_key_source(platform.settings.key_source).public_key_pem()
    claims = verify_receipt(receipt, platform_key, platform.audit.public_key_pem("clinical"))
    assert claims["task"] == task_id
    forged = receipt[:-6] + ("AAAAAA" if not receipt.endswith("AAAAAA") else "BBBBBB")
    with pytest.raises(VerificationError):
        verify_receipt(forged, platform_key, platform.audit.public_key_pem("clinical"))

    again = accept(scene, task_id, code)
    assert again.status_code == 409 and "(completed)" in reason(again)
    notices = scene.client.get("/fhir/Communication", params={"patient": scene.patient_id},
                               headers=scene.patient_headers).json()
    assert any("dispensed" in e["resource"]["payload"][0]["contentString"]
               for e in notices["entry"])


def test_reject_gives_it_back_and_the_secret_is_needed(scene: Scene,
                                                       platform: Platform) -> None:
    task_id, code = scene.ready()
    task = accept(scene, task_id, code).json()["entry"][0]["resource"]
    secret = identifier(task, SECRET)
    wrong = scene.client.post(f"/fhir/Task/{task_id}/$reject", params={"secret": "0" * 64},
                              headers=scene.pharmacist.headers)
    assert wrong.status_code == 403, wrong.text
    back = scene.client.post(f"/fhir/Task/{task_id}/$reject", params={"secret": secret},
                             headers=scene.pharmacist.headers)
    assert back.status_code == 204, back.text
    # The old secret is spent; another pharmacy may now take it.
    replay = scene.client.post(f"/fhir/Task/{task_id}/$close", params={"secret": secret},
                               json=dispense(task_id, scene.national_id, scene.patient_system),
                               headers=scene.pharmacist.headers)
    assert replay.status_code == 409, replay.text
    other = Pharmacist(platform, "HP-ERX-PHARMA-3", scene.pharmacy_id)
    assert accept(scene, task_id, code, other).status_code == 200


def test_a_cancelled_prescription_is_never_accepted(scene: Scene) -> None:
    task_id, code = scene.ready()
    cancelled = scene.client.post(f"/fhir/Task/{task_id}/$abort", params={"ac": code},
                                  headers=scene.gp.headers)
    assert cancelled.status_code == 204, cancelled.text
    answer = accept(scene, task_id, code)
    assert answer.status_code == 409 and "(cancelled)" in reason(answer)


def test_the_patient_cancels_their_own(scene: Scene) -> None:
    task_id, code = scene.ready()
    answer = scene.client.post(f"/fhir/Task/{task_id}/$abort", headers=scene.patient_headers)
    assert answer.status_code == 204, answer.text
    assert accept(scene, task_id, code).status_code == 409


def test_an_expired_prescription_is_not_accepted(scene: Scene, platform: Platform) -> None:
    task_id, code = scene.ready()
    from sqlalchemy import text
    with platform.engine.begin() as connection:
        connection.execute(text("UPDATE prescription_task SET expires_at = :t WHERE id = :id"),
                           {"t": datetime(2026, 1, 1, tzinfo=UTC), "id": task_id})
    answer = accept(scene, task_id, code)
    assert answer.status_code == 409, answer.text


def test_wrong_codes_are_limited_and_reported(scene: Scene, platform: Platform) -> None:
    task_id, code = scene.ready()
    before = platform.audit.size("clinical")
    attempts = [accept(scene, task_id, "f" * 64), accept(scene, "0" * 32, code),
                accept(scene, task_id, "not-a-code")]
    attempts += [accept(scene, task_id, format(n, "064x")) for n in range(2)]
    assert [a.status_code for a in attempts] == [403] * 5, [a.text for a in attempts]
    # An unknown number is answered as a wrong code: nothing tells whether it exists.
    assert reason(attempts[0]) == reason(attempts[1])
    blocked = accept(scene, task_id, code)  # even the right code, for a while
    assert blocked.status_code == 429, blocked.text
    alerts = [r for r in entries_since(platform, before) if r.kind == "alert"]
    assert len(alerts) == 1 and alerts[0].agent.who == f"Practitioner/{scene.pharmacist.id}"
    # Another pharmacist is not blocked by this one's mistakes.
    other = Pharmacist(platform, "HP-ERX-PHARMA-4", scene.pharmacy_id)
    assert accept(scene, task_id, code, other).status_code == 200


def test_who_may_not_dispense_does_not(scene: Scene, platform: Platform) -> None:
    task_id, code = scene.ready()
    assert accept(scene, task_id, code, None).status_code  # the pharmacist is set up
    # A physician, a patient, a pharmacist of no pharmacy.
    assert scene.client.post(f"/fhir/Task/{task_id}/$accept", params={"ac": code},
                             headers=scene.gp.headers).status_code == 403
    assert scene.client.post(f"/fhir/Task/{task_id}/$accept", params={"ac": code},
                             headers=scene.patient_headers).status_code == 403
    alone = Pro(platform, "HP-ERX-ALONE", profession="pharmacist", specialty=None)
    answer = scene.client.post(f"/fhir/Task/{task_id}/$accept", params={"ac": code},
                               headers=alone.headers)
    assert answer.status_code == 403 and "pharmacy" in reason(answer)


def test_the_patient_sees_their_prescriptions(scene: Scene, platform: Platform) -> None:
    task_id, _code = scene.ready()
    mine = scene.client.get("/fhir/Task", params={"patient": scene.patient_id},
                            headers=scene.patient_headers)
    assert mine.status_code == 200, mine.text
    assert [e["resource"]["id"] for e in mine.json()["entry"]] == [task_id]
    stranger = Pro(platform, "HP-ERX-STRANGER")
    assert scene.client.get("/fhir/Task", params={"patient": scene.patient_id},
                            headers=stranger.headers).status_code == 403
