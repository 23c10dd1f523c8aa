"""IHE MHD end to end through the HTTP API, on both databases: publish (ITI-65), find (ITI-67,
ITI-66), retrieve (ITI-68), replace — with hand-built Bundles, as a third-party system sends
them, and the engine deciding every step. Integrity failures are caught, one byte at a time."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import jwt as pyjwt
import pytest
from cryptography import x509
from sqlalchemy import select, update
from starlette.testclient import TestClient

from carevault.adapters.storage import schema as t
from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.settings import Settings
from support.authorities import presence_code, with_presence
from support.builders import patient
from support.documents import (
    FHIR_JSON,
    FORMATS,
    PDF,
    Pro,
    created_id,
    grant,
    provide_bundle,
    publish,
)
from support.tokens import patient_headers


@pytest.fixture(params=["database", "filesystem"])
def settings(settings: Settings, request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Every test runs with both backends of the document storage port."""
    return settings.model_copy(update={"document_storage": request.param,
                                       "document_storage_path": tmp_path / "blobs"})


@pytest.fixture
def setting(registrar: TestClient,
        client: TestClient, platform: Platform) -> tuple[str, dict[str, str], Pro]:
    """A patient, their app's headers, and a GP who saw them (a care relationship)."""
    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 5),
                          headers=FHIR_JSON)
    patient_id = str(created.json()["id"])
    gp = Pro(platform, "HP-DOC-GP")
    seen = client.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"}}, presence_code(platform, patient_id)))
    assert seen.status_code == 201, seen.text
    return patient_id, {**patient_headers(platform, patient_id), **FHIR_JSON}, gp








def find(client: TestClient, headers: dict[str, str], patient_id: str, **params: str) -> Any:
    return client.get("/fhir/DocumentReference",
                      params={"patient": f"Patient/{patient_id}", **params}, headers=headers)


def test_publish_find_retrieve_the_exact_bytes(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    published = publish(client, gp, provide_bundle(patient_id, gp))
    assert published.status_code == 200, published.text
    assert published.json()["type"] == "transaction-response"
    assert all(e["response"]["status"] == "201 Created" for e in published.json()["entry"])
    document_id = created_id(published)

    found = find(client, gp.headers, patient_id, format=f"{FORMATS}|urn:ihe:iti:xds-sd:pdf:2008")
    assert found.status_code == 200 and found.json()["total"] == 1
    reference = found.json()["entry"][0]["resource"]
    assert reference["id"] == document_id and reference["status"] == "current"
    assert reference["content"][0]["attachment"]["title"] == "Consultation MARKER-Title-9931"
    url = reference["content"][0]["attachment"]["url"]
    assert url.endswith(f"/Binary/{document_id}")

    retrieved = client.get(f"/fhir/Binary/{document_id}", headers=gp.headers)
    assert retrieved.status_code == 200
    assert retrieved.content == PDF
    assert retrieved.headers["content-type"] == "application/pdf"
    assert retrieved.headers["x-content-type-options"] == "nosniff"
    assert retrieved.headers["content-disposition"].startswith("attachment")
    assert retrieved.headers["etag"] == f'"{hashlib.sha256(PDF).hexdigest()}"'

    # The author's signature is a document too: anyone reading it can check the author with
    # the platform CA alone (here with PyJWT and cryptography, not CareVault).
    signatures = find(client, gp.headers, patient_id,
                      related=f"DocumentReference/{document_id}").json()
    signature_ref = next(e["resource"] for e in signatures["entry"]
                         if e["resource"]["id"] != document_id)
    assert signature_ref["relatesTo"] == [
        {"code": "signs", "target": {"reference": f"DocumentReference/{document_id}"}}]
    jws = client.get(f"/fhir/Binary/{signature_ref['id']}", headers=gp.headers).content
    header_segment, _, signature_segment = jws.decode().split(".")
    header = json.loads(base64.urlsafe_b64decode(header_segment + "=="))
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    ca = x509.load_pem_x509_certificate(client.get("/pki/ca").content)
    leaf.verify_directly_issued_by(ca)
    attached = f"{header_segment}.{pyjwt.utils.base64url_encode(PDF).decode()}.{signature_segment}"
    assert pyjwt.api_jws.PyJWS().decode(attached, leaf.public_key(),
                                        algorithms=["ES256"]) == PDF

    # The patient sees it, and is told of it.
    assert find(client, mine, patient_id).json()["total"] == 2  # the report and its signature
    assert client.get(f"/fhir/Binary/{document_id}", headers=mine).content == PDF
    notices = client.get("/fhir/Communication", params={"patient": f"Patient/{patient_id}"},
                         headers=mine).json()
    assert any(e["resource"]["category"][0]["text"] == "new-document" for e in notices["entry"])
    # The SubmissionSet lists it.
    lists = client.get("/fhir/List", params={"patient": f"Patient/{patient_id}"},
                       headers=gp.headers).json()
    assert lists["total"] == 1
    assert lists["entry"][0]["resource"]["entry"][0]["item"]["reference"].endswith(document_id)


def test_the_engine_decides_who_finds_and_reads(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    document_id = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    stranger = Pro(platform, "HP-DOC-STRANGER")
    assert find(client, stranger.headers, patient_id).status_code == 403
    refused = client.get(f"/fhir/Binary/{document_id}", headers=stranger.headers)
    assert refused.status_code == 403 and refused.headers["content-type"].startswith(
        "application/fhir+json")
    # A pharmacist with a grant sees medication, not a psychiatric report.
    pharmacist = Pro(platform, "HP-DOC-PHARMA", "pharmacist", None)
    grant(client, mine, patient_id, pharmacist.id)
    seen = find(client, pharmacist.headers, patient_id)
    assert seen.status_code == 200, seen.text
    assert seen.json()["total"] == 0
    assert client.get(f"/fhir/Binary/{document_id}",
                      headers=pharmacist.headers).status_code == 403
    # The patient hides it: the GP (not author? the GP is the author) still reads it; a
    # colleague with a grant does not find it, and the total does not count it.
    colleague = Pro(platform, "HP-DOC-COLLEAGUE")
    grant(client, mine, patient_id, colleague.id)
    assert find(client, colleague.headers, patient_id).json()["total"] == 2
    from carevault.domain.authorization import Subject, SubjectKind
    from carevault.services.record_policy import Actor
    platform.policy.hide_document(Actor(Subject(SubjectKind.PATIENT, patient_id), "me"),
                                  patient_id, document_id, True)
    # Hidden with its signature, which would otherwise tell it exists.
    assert find(client, colleague.headers, patient_id).json()["total"] == 0
    assert client.get(f"/fhir/Binary/{document_id}",
                      headers=colleague.headers).status_code == 403
    assert client.get(f"/fhir/Binary/{document_id}", headers=gp.headers).status_code == 200


def test_a_replacement_supersedes_and_keeps_the_old_version(
        client: TestClient, setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, _, gp = setting
    first = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    corrected = PDF.replace(b"consultation", b"CONSULTATION")
    second = publish(client, gp, provide_bundle(patient_id, gp, corrected, replaces=first))
    assert second.status_code == 200, second.text
    second_id = created_id(second)
    current = find(client, gp.headers, patient_id, status="current",
                   format=f"{FORMATS}|urn:ihe:iti:xds-sd:pdf:2008").json()
    assert [e["resource"]["id"] for e in current["entry"]] == [second_id]
    every_current = find(client, gp.headers, patient_id, status="current").json()
    assert every_current["total"] == 2  # the new report and its signature; the old pair is not
    old = client.get(f"/fhir/DocumentReference/{first}", headers=gp.headers).json()
    assert old["status"] == "superseded"
    assert client.get(f"/fhir/Binary/{first}", headers=gp.headers).content == PDF
    related = find(client, gp.headers, patient_id, related=f"DocumentReference/{first}").json()
    assert second_id in [e["resource"]["id"] for e in related["entry"]]
    again = publish(client, gp, provide_bundle(patient_id, gp, corrected, replaces=first))
    assert again.status_code == 409


@pytest.mark.parametrize(("change", "status", "expression"), [
    ({"sha1": base64.b64encode(b"x" * 20).decode()}, 400, "attachment.hash"),
    ({"content": b"plain text, not a PDF"}, 415, None),
    ({"type_code": "99999-9", "class_code": "99999-9"}, 400, "DocumentReference.category"),
    ({"confidentiality": "X"}, 400, "DocumentReference.securityLabel"),
    ({"content_type": "text/html", "content": b"<html><script>x</script></html>"}, 415, None),
])
def test_bad_submissions_name_what_is_wrong_and_store_nothing(
        client: TestClient, platform: Platform, setting: tuple[str, dict[str, str], Pro],
        change: dict[str, Any], status: int, expression: str | None) -> None:
    patient_id, _, gp = setting
    answer = publish(client, gp, provide_bundle(patient_id, gp, **change))
    assert answer.status_code == status, answer.text
    issue = answer.json()["issue"][0]
    if expression is not None:
        assert expression in issue["expression"][0]
    assert find(client, gp.headers, patient_id).json()["total"] == 0
    with platform.unit_of_work() as uow:
        assert uow.directory.connection.execute(select(t.document_content)).first() is None


def test_a_document_naming_another_patient_or_nobody_is_refused_alike(
        client: TestClient, registrar: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    """A DocumentReference naming another patient's number and one naming a number nobody has
    get the same answer (the Bundle names one patient, checked before any lookup): the
    submitter learns nothing about who is in the index; nothing is stored. (Past the gate,
    `DocumentExchange` checks every resolved subject again: tests/unit/services.)"""
    patient_id, _, gp = setting
    other = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 6),
                           headers=FHIR_JSON)
    assert other.status_code == 201, other.text
    national = platform.directory.systems.national
    others_number = next(i["value"] for i in other.json()["identifier"]
                         if i["system"] == national)
    answers = []
    for number in (others_number, "1900010100000"):
        bundle = provide_bundle(patient_id, gp)
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "DocumentReference":
                entry["resource"]["subject"] = {
                    "identifier": {"system": national, "value": number}}
        answer = publish(client, gp, bundle)
        assert answer.status_code == 400, answer.text
        answers.append(answer.json()["issue"][0])
    assert answers[0] == answers[1]
    assert answers[0]["expression"] == ["DocumentReference.subject"]
    assert "concerns the SubmissionSet's patient" in answers[0]["diagnostics"]
    assert find(client, gp.headers, patient_id).json()["total"] == 0


def test_a_bundle_that_is_not_a_transaction_is_refused(
        client: TestClient, setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, _, gp = setting
    bundle = provide_bundle(patient_id, gp)
    duplicate = publish(client, gp, bundle)
    assert duplicate.status_code == 200
    assert publish(client, gp, bundle).status_code == 409  # the same uniqueIds again
    batch = {**provide_bundle(patient_id, gp), "type": "batch"}
    refused = publish(client, gp, batch)
    assert refused.status_code == 400 and "transaction" in refused.json()["issue"][0][
        "diagnostics"]


def test_a_documents_unique_id_is_never_taken_twice(
        client: TestClient, platform: Platform, setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, _, gp = setting
    first = provide_bundle(patient_id, gp)
    assert publish(client, gp, first).status_code == 200
    unique_id = first["entry"][1]["resource"]["masterIdentifier"]["value"]
    # A new SubmissionSet, carrying a document whose uniqueId was already received.
    again = provide_bundle(patient_id, gp)
    again["entry"][1]["resource"]["masterIdentifier"]["value"] = unique_id
    refused = publish(client, gp, again)
    assert refused.status_code == 409, refused.text
    assert f"uniqueId {unique_id} already exists" in refused.json()["issue"][0]["diagnostics"]
    # Two documents of one Bundle (here, the signature) under the same, new uniqueId.
    twice = provide_bundle(patient_id, gp)
    twice["entry"][3]["resource"]["masterIdentifier"] = dict(
        twice["entry"][1]["resource"]["masterIdentifier"])
    refused = publish(client, gp, twice)
    assert refused.status_code == 409, refused.text
    assert "already exists" in refused.json()["issue"][0]["diagnostics"]
    assert find(client, gp.headers, patient_id).json()["total"] == 2  # the first pair only


@pytest.mark.parametrize("column", ["ciphertext", "wrapped_key", "sha256"])
def test_one_flipped_byte_is_detected_and_nothing_is_served(
        client: TestClient, platform: Platform, setting: tuple[str, dict[str, str], Pro],
        column: str) -> None:
    patient_id, _, gp = setting
    document_id = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    table = t.document_metadata if column == "sha256" else t.document_content
    on_disk = platform.settings.document_storage_path / document_id[:2] / document_id
    if column == "ciphertext" and on_disk.exists():  # the filesystem backend
        data = bytearray(on_disk.read_bytes())
        data[len(data) // 2] ^= 0x01
        on_disk.write_bytes(bytes(data))
    with platform.engine.begin() as connection:
        value = connection.execute(
            select(table.c[column]).where(table.c.document_id == document_id)).scalar_one()
        if value is None:  # the ciphertext is in the file, flipped above
            pass
        elif column == "sha256":
            flipped: Any = ("0" if value[0] != "0" else "1") + value[1:]
        else:
            data = bytearray(value)
            data[len(data) // 2] ^= 0x01
            flipped = bytes(data)
        if value is not None:
            connection.execute(update(table).where(table.c.document_id == document_id)
                               .values({column: flipped}))
    answer = client.get(f"/fhir/Binary/{document_id}", headers=gp.headers)
    assert answer.status_code == 500
    assert PDF not in answer.content
    assert "integrity" in answer.json()["issue"][0]["diagnostics"]
    alerts = [AuditRecord.from_canonical(data) for _, data in
              platform.audit.patient_entries(patient_id, limit=200)]
    assert [a.entity_id for a in alerts if a.kind == "alert"] == [document_id]


def test_no_plaintext_reaches_the_database(
        client: TestClient, platform: Platform, setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, _, gp = setting
    assert publish(client, gp, provide_bundle(patient_id, gp)).status_code == 200
    with platform.engine.connect() as connection:
        for table in (t.document_content, t.document_metadata, t.document):
            for row in connection.execute(select(table)):
                for value in row:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    assert b"MARKER-Zo" not in raw and b"MARKER-Title" not in raw


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


def test_a_patient_uploads_their_own_document(
        client: TestClient, setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    upload = provide_bundle(patient_id, f"Patient/{patient_id}", PNG, content_type="image/png",
                            title="Photo of my rash")
    sent = client.post("/fhir", json=upload, headers=mine)
    assert sent.status_code == 200, sent.text
    document_id = created_id(sent)
    reference = client.get(f"/fhir/DocumentReference/{document_id}", headers=mine).json()
    assert reference["author"] == [{"reference": f"Patient/{patient_id}"}]
    seen = client.get(f"/fhir/Binary/{document_id}", headers=gp.headers)  # a granted GP
    assert seen.content == PNG and seen.headers["content-type"] == "image/png"
    assert seen.headers["content-disposition"].startswith("attachment")
    # Someone else's name as author, active content and lying content types are refused.
    other = provide_bundle(patient_id, gp, PNG, content_type="image/png")
    assert client.post("/fhir", json=other, headers=mine).status_code == 422
    svg = provide_bundle(patient_id, f"Patient/{patient_id}",
                         b"<svg><script>alert(1)</script></svg>", content_type="image/svg+xml")
    assert client.post("/fhir", json=svg, headers=mine).status_code == 415
    fake = provide_bundle(patient_id, f"Patient/{patient_id}", b"MZ\x90\x00 an executable",
                          content_type="image/png")
    assert client.post("/fhir", json=fake, headers=mine).status_code == 415


def test_the_authors_signature_is_required_and_checked(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    from support.documents import detached_jws

    patient_id, _, gp = setting
    colleague = Pro(platform, "HP-DOC-SIGNER")
    unsigned = provide_bundle(patient_id, gp)
    unsigned["entry"] = unsigned["entry"][:3]
    unsigned["entry"][0]["resource"]["entry"] = unsigned["entry"][0]["resource"]["entry"][:1]
    cases = {
        "missing": unsigned,
        "someone else": provide_bundle(
            patient_id, gp, signature=detached_jws(PDF, colleague.key_pem, colleague.chain)),
        "other bytes": provide_bundle(
            patient_id, gp, signature=detached_jws(PDF + b"x", gp.key_pem, gp.chain)),
        "attached payload": provide_bundle(
            patient_id, gp, signature=pyjwt.api_jws.PyJWS().encode(
                PDF, gp.key_pem, algorithm="ES256",
                headers={"x5c": [base64.b64encode(d).decode() for d in gp.chain]}).encode()),
        "no chain": provide_bundle(
            patient_id, gp, signature=detached_jws(PDF, gp.key_pem, [])),
    }
    for name, bundle in cases.items():
        answer = publish(client, gp, bundle)
        assert answer.status_code == 422, (name, answer.text)
        assert "sign" in answer.json()["issue"][0]["diagnostics"], name
    assert find(client, gp.headers, patient_id).json()["total"] == 0


def test_a_held_document_reaches_the_patient_when_released(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    from datetime import UTC, datetime, timedelta

    patient_id, mine, gp = setting
    held = created_id(publish(client, gp, provide_bundle(patient_id, gp, held=True)))
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    later = created_id(publish(client, gp, provide_bundle(patient_id, gp, held=soon)))
    assert find(client, mine, patient_id).json()["total"] == 0  # nor their signatures
    assert client.get(f"/fhir/Binary/{held}", headers=mine).status_code == 403
    assert find(client, gp.headers, patient_id).json()["total"] == 4  # the author sees all
    notices = client.get("/fhir/Communication", params={"patient": f"Patient/{patient_id}"},
                         headers=mine).json()
    assert not any(e["resource"]["category"][0]["text"] == "new-document"
                   for e in notices["entry"])
    # The author releases one; the other is released by the platform when its time comes.
    colleague = Pro(platform, "HP-DOC-NOT-AUTHOR")
    grant(client, mine, patient_id, colleague.id)
    assert client.post(f"/fhir/DocumentReference/{held}/$release", json={},
                       headers=colleague.headers).status_code == 403
    released = client.post(f"/fhir/DocumentReference/{held}/$release", json={},
                           headers=gp.headers)
    assert released.status_code == 200, released.text
    assert client.get(f"/fhir/Binary/{held}", headers=mine).content == PDF
    assert find(client, mine, patient_id).json()["total"] == 2
    documents = platform.documents
    original = documents.clock
    documents.clock = lambda: original() + timedelta(hours=2)  # type: ignore[method-assign]
    try:
        assert documents.publisher.release_due(platform.unit_of_work) == 1
    finally:
        documents.clock = original  # type: ignore[method-assign]
    assert client.get(f"/fhir/Binary/{later}", headers=mine).status_code == 200
    kinds = [e["resource"]["category"][0]["text"] for e in client.get(
        "/fhir/Communication", params={"patient": f"Patient/{patient_id}"},
        headers=mine).json()["entry"]]
    assert kinds.count("document-released") == 2
    refused = publish(client, gp, provide_bundle(patient_id, gp, held="2001-01-01T00:00:00Z"))
    assert refused.status_code == 400


def test_a_held_document_is_released_at_its_time_without_the_chore(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    """The release time is a fact the engine compares with the request's own time: the
    document is the patient's from that instant, whether the chore ran or not (a fixed clock,
    moved past the time, and no `release_due`)."""
    from datetime import UTC, datetime, timedelta

    patient_id, mine, gp = setting
    now = datetime.now(UTC).replace(microsecond=0)
    until = now + timedelta(minutes=1)
    held = created_id(publish(client, gp, provide_bundle(patient_id, gp, held=until.isoformat())))
    tokens, documents = platform.tokens, platform.documents
    real_tokens, real_documents = tokens.clock, documents.clock

    def at(moment: datetime) -> None:
        object.__setattr__(tokens, "clock", lambda: moment)  # the gate's clock
        documents.clock = lambda: moment  # type: ignore[method-assign]

    try:
        at(until - timedelta(milliseconds=1))
        assert client.get(f"/fhir/Binary/{held}", headers=mine).status_code == 403
        assert find(client, mine, patient_id).json()["total"] == 0
        at(until)
        assert client.get(f"/fhir/Binary/{held}", headers=mine).content == PDF
        found = find(client, mine, patient_id).json()
        assert found["total"] == 2  # the document and its signature
    finally:
        object.__setattr__(tokens, "clock", real_tokens)
        documents.clock = real_documents  # type: ignore[method-assign]
    # The chore still tells the patient, once; the document stays visible.
    later = real_documents() + timedelta(minutes=2)
    documents.clock = lambda: later  # type: ignore[method-assign]
    try:
        assert documents.publisher.release_due(platform.unit_of_work) == 1
    finally:
        documents.clock = real_documents  # type: ignore[method-assign]
    with platform.unit_of_work() as uow:
        facts = uow.records.document(patient_id, held)
    assert facts is not None and not facts.held(None)


def test_the_patient_hides_a_document_and_changes_its_confidentiality(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    document_id = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    colleague = Pro(platform, "HP-DOC-PRIVACY")
    grant(client, mine, patient_id, colleague.id)

    def privacy(headers: dict[str, str], **values: Any) -> Any:
        parameters = [{"name": "hidden", "valueBoolean": values["hidden"]}] if (
            "hidden" in values) else []
        if "confidentiality" in values:
            parameters.append({"name": "confidentiality",
                               "valueCode": values["confidentiality"]})
        return client.post(f"/fhir/DocumentReference/{document_id}/$privacy", headers=headers,
                           json={"resourceType": "Parameters", "parameter": parameters})

    assert privacy(gp.headers, hidden=True).status_code == 403  # not the author's to decide
    assert privacy(mine, hidden=True).status_code == 200
    assert client.get(f"/fhir/Binary/{document_id}", headers=colleague.headers).status_code == 403
    assert privacy(mine, hidden=False, confidentiality="R").status_code == 200
    # A normal access does not open a restricted document.
    assert client.get(f"/fhir/Binary/{document_id}", headers=colleague.headers).status_code == 403
    assert privacy(mine, confidentiality="N").status_code == 200
    assert client.get(f"/fhir/Binary/{document_id}", headers=colleague.headers).status_code == 200
    assert privacy(mine, confidentiality="X").status_code == 400
    assert privacy(mine).status_code == 400


def test_no_plaintext_in_the_database_files_or_blobs(
        client: TestClient, platform: Platform, setting: tuple[str, dict[str, str], Pro]) -> None:
    """The marker in the content and the title is nowhere on disk (SQLite file, WAL, blobs)."""
    patient_id, _, gp = setting
    assert publish(client, gp, provide_bundle(patient_id, gp)).status_code == 200
    url = platform.settings.database_url
    files = list(platform.settings.document_storage_path.rglob("*"))
    if url.startswith("sqlite:///"):
        database = Path(url.removeprefix("sqlite:///"))
        files += [p for p in database.parent.glob(database.name + "*")]
    # (PostgreSQL's own files are the server's; test_no_plaintext_reaches_the_database reads
    # every row there.)
    assert files or (url.startswith("postgresql") and platform.settings.document_storage ==
                     "database")
    for path in files:
        if path.is_file():
            data = path.read_bytes()
            assert b"MARKER-Zo" not in data and b"MARKER-Title" not in data, path


def test_orphan_blobs_of_a_failed_submission_are_swept(
        client: TestClient, platform: Platform, setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, _, gp = setting
    kept = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    if platform.settings.document_storage != "filesystem":
        assert platform.documents.sweep_orphans(platform.unit_of_work, older_than=0) == 0
        return
    from dataclasses import replace

    from carevault.adapters.storage.document_store import DocumentStore, sealed_parts
    blobs = platform.documents.blobs
    assert blobs is not None
    with platform.unit_of_work() as uow:  # a submission that fails after writing its file
        store = DocumentStore(uow.directory.connection, blobs)
        found = store.get_with_content(kept)
        assert found is not None and found[1] is not None
        stored, sealed = found[0], sealed_parts(kept, found[1], blobs)
        assert sealed is not None
        orphan = replace(stored.metadata, id="orphan-1", master_identifier="urn:oid:9.9")
        store.add([(orphan, sealed, None)], stored.metadata.indexed)
        # no commit: the transaction rolls back, the file stays behind
    assert blobs.read("orphan-1") is not None
    assert platform.documents.sweep_orphans(platform.unit_of_work, older_than=0) == 1
    assert blobs.read("orphan-1") is None
    assert client.get(f"/fhir/Binary/{kept}", headers=gp.headers).content == PDF


def test_the_author_marks_a_document_entered_in_error(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    document_id = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    url = f"/fhir/DocumentReference/{document_id}/$entered-in-error"
    assert client.post(url, json={}, headers=mine).status_code == 403  # not the author
    marked = client.post(url, json={}, headers=gp.headers)
    assert marked.status_code == 200 and marked.json()["status"] == "entered-in-error"
    assert client.post(url, json={}, headers=gp.headers).status_code == 409
    assert find(client, gp.headers, patient_id, status="current").json()["total"] == 0
    assert find(client, gp.headers, patient_id,
                status="entered-in-error").json()["total"] == 2  # with its signature
    assert client.get(f"/fhir/Binary/{document_id}", headers=gp.headers).content == PDF


def test_retrieval_honours_ranges_conditions_and_fhir_json(
        client: TestClient, setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, _, gp = setting
    document_id = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    url = f"/fhir/Binary/{document_id}"
    part = client.get(url, headers={**gp.headers, "Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == PDF[:10]
    assert part.headers["content-range"] == f"bytes 0-9/{len(PDF)}"
    tail = client.get(url, headers={**gp.headers, "Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == PDF[-5:]
    assert client.get(url, headers={**gp.headers, "Range": f"bytes={len(PDF)}-"}
                      ).status_code == 416
    whole = client.get(url, headers=gp.headers)
    assert whole.headers["accept-ranges"] == "bytes"
    same = client.get(url, headers={**gp.headers, "If-None-Match": whole.headers["etag"]})
    assert same.status_code == 304 and same.content == b""
    as_fhir = client.get(url, headers={**gp.headers, "Accept": "application/fhir+json"}).json()
    assert as_fhir["resourceType"] == "Binary" and base64.b64decode(as_fhir["data"]) == PDF
    versioned = client.get(f"{url}/_history/1", headers=gp.headers)
    assert versioned.content == PDF
    assert client.get(f"{url}/_history/2", headers=gp.headers).status_code == 404


def test_a_binary_read_in_a_fhir_format_is_the_binary_resource_in_json_or_xml(
        client: TestClient, setting: tuple[str, dict[str, str], Pro]) -> None:
    """FHIR R4 binary.html: a read that asks for a FHIR format gets the Binary resource
    (contentType and base64 data), in that format; any other read gets the document's bytes."""
    patient_id, _, gp = setting
    document_id = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    url = f"/fhir/Binary/{document_id}"
    namespace = {"f": "http://hl7.org/fhir"}
    for asked in ({"headers": {"Accept": "application/fhir+xml"}},
                  {"params": {"_format": "xml"}},
                  {"params": {"_format": "application/fhir+xml"},
                   "headers": {"Accept": "application/pdf"}}):
        answer = client.get(url, params=asked.get("params"),
                            headers={**gp.headers, **asked.get("headers", {})})
        assert answer.status_code == 200, asked
        assert answer.headers["content-type"].startswith("application/fhir+xml"), asked
        root = ElementTree.fromstring(answer.content)
        assert root.tag == "{http://hl7.org/fhir}Binary"
        assert root.find("f:contentType", namespace).get("value") == "application/pdf"
        assert base64.b64decode(root.find("f:data", namespace).get("value")) == PDF
    as_json = client.get(url, params={"_format": "json"}, headers=gp.headers)
    assert as_json.headers["content-type"].startswith("application/fhir+json")
    assert as_json.json()["contentType"] == "application/pdf"
    assert base64.b64decode(as_json.json()["data"]) == PDF
    for accept in ("*/*", "application/pdf", "application/xml", "application/json",
                   "application/fhir+xml;q=0, */*"):
        raw = client.get(url, headers={**gp.headers, "Accept": accept})
        assert raw.content == PDF and raw.headers["content-type"] == "application/pdf", accept


def test_the_transaction_response_follows_the_request(
        client: TestClient, setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, _, gp = setting
    bundle = provide_bundle(patient_id, gp)
    answer = publish(client, gp, bundle).json()
    kinds = [e["response"]["location"].split("/_history/")[0].rsplit("/", 2)[-2]
             for e in answer["entry"]]
    assert kinds == [e["resource"]["resourceType"] for e in bundle["entry"]]
    for entry in answer["entry"]:
        location = entry["response"]["location"].removeprefix("http://127.0.0.1:8000")
        assert client.get(location, headers=gp.headers).status_code == 200, location


def test_find_by_event_code(client: TestClient, setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, _, gp = setting
    colonoscopy = ("http://snomed.info/sct", "73761001")
    tagged = created_id(publish(client, gp, provide_bundle(patient_id, gp, event=colonoscopy)))
    publish(client, gp, provide_bundle(patient_id, gp))
    for value in ("73761001", "http://snomed.info/sct|73761001"):
        found = find(client, gp.headers, patient_id, event=value).json()
        ids = [e["resource"]["id"] for e in found["entry"]]
        assert tagged in ids and len(ids) == 2, value  # the report and its signature
    assert find(client, gp.headers, patient_id, event="7376").json()["total"] == 0
    assert find(client, gp.headers, patient_id, event="http://loinc.org|73761001"
                ).json()["total"] == 0
    reference = client.get(f"/fhir/DocumentReference/{tagged}", headers=gp.headers).json()
    assert reference["context"]["event"][0]["coding"][0]["code"] == "73761001"


NEUTRAL = "You may not read this document."


def _refusal_entries(platform: Platform, before: int, document_id: str) -> list[AuditRecord]:
    size = platform.audit.size("clinical")
    return [r for r in (AuditRecord.from_canonical(d)
                        for _, d in platform.audit.entries("clinical", before, size))
            if r.entity_id == document_id and r.status == 403]


def test_a_refused_reader_is_not_told_the_state_of_a_document(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    """Pentest #12: "hidden", "secret" or "restricted" in a refusal reveals what the patient
    keeps from the caller. The caller reads a neutral reason; the precise one stays in the
    audit entry and in $explain, for the patient and the security officer."""
    patient_id, mine, gp = setting
    document_id = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    colleague = Pro(platform, "HP-DOC-NEUTRAL")
    grant(client, mine, patient_id, colleague.id)
    url = f"/fhir/DocumentReference/{document_id}/$privacy"
    cases = [
        ({"name": "hidden", "valueBoolean": True}, "hidden", "has hidden this document"),
        ({"name": "confidentiality", "valueCode": "V"}, "confidentiality",
         "This document is secret"),
        ({"name": "confidentiality", "valueCode": "R"}, "confidentiality",
         "This document is restricted"),
    ]
    for parameter, rule, precise in cases:
        reset = [{"name": "hidden", "valueBoolean": False},
                 {"name": "confidentiality", "valueCode": "N"}]
        for values in (reset, [parameter]):
            changed = client.post(url, headers=mine,
                                  json={"resourceType": "Parameters", "parameter": values})
            assert changed.status_code == 200, changed.text
        before = platform.audit.size("clinical")
        for path in (f"/fhir/DocumentReference/{document_id}", f"/fhir/Binary/{document_id}"):
            refused = client.get(path, headers=colleague.headers)
            assert refused.status_code == 403, (rule, path, refused.text)
            issue = refused.json()["issue"][0]
            assert issue["diagnostics"] == NEUTRAL, (rule, path)
            assert issue["code"] == "forbidden"
            for word in ("hidden", "secret", "restricted", "extended"):
                assert word not in refused.text.lower(), (rule, path, word)
        entries = _refusal_entries(platform, before, document_id)
        assert len(entries) == 2, rule
        for entry in entries:
            assert entry.rule is not None and f"deny ({rule})" in entry.rule
            assert precise in entry.rule, entry.rule
        # The patient (and the security officer) still read the precise reason in $explain.
        explained = client.get(f"/fhir/Patient/{patient_id}/$explain", headers=mine, params={
            "practitioner": colleague.id, "document": document_id})
        assert explained.status_code == 200, explained.text
        reasons = {p["name"]: p.get("valueString") for p in explained.json()["parameter"]}
        assert reasons["rule"] == rule and precise in str(reasons["reason"])


def test_a_professional_refused_by_profession_is_not_told_the_category(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    document_id = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    pharmacist = Pro(platform, "HP-DOC-PHARMACIST", profession="pharmacist", specialty=None)
    grant(client, mine, patient_id, pharmacist.id)
    before = platform.audit.size("clinical")
    refused = client.get(f"/fhir/Binary/{document_id}", headers=pharmacist.headers)
    assert refused.status_code == 403, refused.text
    assert refused.json()["issue"][0]["diagnostics"] == NEUTRAL
    assert "categor" not in refused.text
    [entry] = _refusal_entries(platform, before, document_id)
    assert entry.rule is not None and "deny (profile)" in entry.rule
    assert "may not see documents of this category" in entry.rule
    # A refusal that says nothing of the document is still told as it is.
    stranger = Pro(platform, "HP-DOC-STRANGER")
    no_access = client.get(f"/fhir/Binary/{document_id}", headers=stranger.headers)
    assert no_access.status_code == 403
    assert "No active access" in no_access.json()["issue"][0]["diagnostics"]


SOURCE_ID_URL = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"


@pytest.mark.parametrize(("url", "value", "stored"), [
    # MHD 4.1 and later: an Identifier, 1..1 (IHE MHD 4.2.3, StructureDefinition ihe-sourceId).
    (SOURCE_ID_URL, {"valueIdentifier": {"value": "urn:oid:1.2.3.4"}}, "urn:oid:1.2.3.4"),
    # MHD 4.0.x published its canonical URLs with http:// (its example Bundles do so).
    (SOURCE_ID_URL.replace("https", "http"),
     {"valueIdentifier": {"value": "urn:oid:1.2.3.5"}}, "urn:oid:1.2.3.5"),
    # Older sources still send a valueUri.
    (SOURCE_ID_URL, {"valueUri": "urn:oid:1.2.3.6"}, "urn:oid:1.2.3.6"),
])
def test_the_submission_sets_source_id_is_read_as_every_mhd_version_sends_it(
        client: TestClient, setting: tuple[str, dict[str, str], Pro], url: str,
        value: dict[str, Any], stored: str) -> None:
    patient_id, _mine, gp = setting
    bundle = provide_bundle(patient_id, gp)
    submission_set = next(e["resource"] for e in bundle["entry"]
                          if e["resource"]["resourceType"] == "List")
    submission_set["extension"] = [{"url": url, **value}]
    answer = publish(client, gp, bundle)
    assert answer.status_code == 200, answer.text
    found = client.get("/fhir/List", params={"patient": f"Patient/{patient_id}"},
                       headers=gp.headers).json()
    sources = [e["resource"]["extension"] for e in found["entry"]]
    # Answered as MHD 4.2 defines it, whatever the source sent.
    assert [{"url": SOURCE_ID_URL, "valueIdentifier": {"value": stored}}] in sources


def test_a_submission_set_without_its_source_id_is_refused(
        client: TestClient, setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, _mine, gp = setting
    bundle = provide_bundle(patient_id, gp)
    submission_set = next(e["resource"] for e in bundle["entry"]
                          if e["resource"]["resourceType"] == "List")
    submission_set["extension"] = [{"url": SOURCE_ID_URL, "valueIdentifier": {"system": "x"}}]
    refused = publish(client, gp, bundle)
    assert refused.status_code == 400
    assert "sourceId" in refused.json()["issue"][0]["diagnostics"]
