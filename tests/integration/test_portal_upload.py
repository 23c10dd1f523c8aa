"""A patient adds their own document from the portal, over HTTP on both databases: it is in
the record, marked as theirs, read by a professional who may see the record; every refusal
(no CSRF token, a file that is not what it says, too large, no title, an unknown kind, no
session, the record's quota of the patient's files reached, too many uploads in a minute)
stores nothing and says why in the person's language."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.settings import Settings
from support.accounts import PatientAccount, enrol_patient
from support.portal import csrf_of, seen_by, signed_in

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PDF = b"%PDF-1.7\n% letter from a doctor abroad\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


UPLOADS_PER_MINUTE = 12
MAX_DOCUMENTS = 3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The deployment's limits made small enough to reach in a test."""
    return settings.model_copy(update={"patient_uploads_per_minute": UPLOADS_PER_MINUTE,
                                       "patient_upload_max_documents": MAX_DOCUMENTS})


@pytest.fixture
def account(platform: Platform) -> PatientAccount:
    return enrol_patient(platform, family="Upload")


@pytest.fixture
def portal(platform: Platform, account: PatientAccount) -> TestClient:
    return signed_in(platform, account, port=50012)


def upload(portal: TestClient, csrf: str, content: bytes, content_type: str = "application/pdf",
           title: str = "Letter from Dr Rossi, Milan", kind: str = "consultation",
           lang: str = "en") -> object:
    return portal.post(f"/me/documents/upload?lang={lang}",
                       data={"csrf": csrf, "title": title, "kind": kind},
                       files={"file": ("letter.pdf", content, content_type)},
                       follow_redirects=False)


def documents_of(client: TestClient, headers: dict[str, str], patient_id: str) -> list[dict]:
    found = client.get("/fhir/DocumentReference", params={"patient": f"Patient/{patient_id}"},
                       headers=headers)
    assert found.status_code == 200, found.text
    return [e["resource"] for e in found.json().get("entry", [])]


def test_a_patients_own_document_is_in_the_record_marked_as_theirs(
        portal: TestClient, client: TestClient, platform: Platform,
        account: PatientAccount) -> None:
    gp = seen_by(platform, client, account.patient_id)
    page = portal.get("/me/documents")
    assert 'id="upload-button"' in page.text
    done = upload(portal, csrf_of(page), PDF)
    assert done.status_code == 303, done.text  # type: ignore[attr-defined]
    assert "added=1" in done.headers["location"]  # type: ignore[attr-defined]
    listed = portal.get("/me/documents")
    assert "Letter from Dr Rossi, Milan" in listed.text and 'id="added"' not in listed.text
    # The physician who may see the record finds it, authored by the patient, and its bytes.
    [found] = [d for d in documents_of(client, gp.headers, account.patient_id)
               if d.get("description") == "Letter from Dr Rossi, Milan"
               or (d["content"][0]["attachment"].get("title") == "Letter from Dr Rossi, Milan")]
    assert found["author"][0]["reference"] == f"Patient/{account.patient_id}"
    binary = client.get(f"/fhir/Binary/{found['id']}", headers=gp.headers)
    assert binary.status_code == 200 and binary.content == PDF
    entries = [AuditRecord.from_canonical(d)
               for _, d in platform.audit.patient_entries(account.patient_id, limit=200)]
    assert any(e.interaction == "document-upload" and e.entity_id == found["id"]
               for e in entries)


def test_every_refused_upload_stores_nothing_and_says_why(
        portal: TestClient, client: TestClient, platform: Platform,
        account: PatientAccount) -> None:
    gp = seen_by(platform, client, account.patient_id)
    before = len(documents_of(client, gp.headers, account.patient_id))
    csrf = csrf_of(portal.get("/me/documents"))
    refusals = [
        (upload(portal, "forged", PDF), 400, "out of date"),
        (upload(portal, csrf, b"MZ\x90\x00 not a pdf"), 422, "not what its type says"),
        (upload(portal, csrf, PNG, content_type="image/gif"), 422, "Only PDF, JPEG or PNG"),
        (upload(portal, csrf, PDF, title="   "), 422, "short title"),
        (upload(portal, csrf, PDF, kind="x-ray-of-my-cat"), 422, "kind of document"),
        (upload(portal, csrf, b""), 422, "Choose a file"),
        (upload(portal, csrf, PDF, lang="de", title="x" * 201), 422, "kurzen Titel"),
    ]
    for answer, status, words in refusals:
        assert answer.status_code == status, (status, answer.text)  # type: ignore[attr-defined]
        assert words in answer.text, answer.text  # type: ignore[attr-defined]
        assert "Traceback" not in answer.text  # type: ignore[attr-defined]
    too_large = upload(portal, csrf, b"%PDF-" + b"0" * (platform.settings.max_document_bytes
                                                       + 20_000))
    assert too_large.status_code == 413  # type: ignore[attr-defined]
    anonymous = TestClient(platform.app, base_url="http://127.0.0.1:8000")
    nobody = upload(anonymous, csrf, PDF)
    assert nobody.status_code == 303  # type: ignore[attr-defined]
    assert "/login" in nobody.headers["location"]  # type: ignore[attr-defined]
    assert len(documents_of(client, gp.headers, account.patient_id)) == before


def test_a_record_holding_its_quota_of_the_patients_files_takes_no_more(
        portal: TestClient, platform: Platform, account: PatientAccount) -> None:
    csrf = csrf_of(portal.get("/me/documents"))
    for n in range(MAX_DOCUMENTS):
        added = upload(portal, csrf, PDF, title=f"Letter {n}")
        assert added.status_code == 303, added.text  # type: ignore[attr-defined]
    refused = upload(portal, csrf, PDF, title="One too many", lang="fr")
    assert refused.status_code == 422  # type: ignore[attr-defined]
    assert f"{MAX_DOCUMENTS} documents" in refused.text  # type: ignore[attr-defined]
    assert "n&#39;a pas été ajouté" in refused.text  # type: ignore[attr-defined]
    with platform.unit_of_work() as uow:
        assert uow.documents.patient_authored_usage(account.patient_id) == (
            MAX_DOCUMENTS, MAX_DOCUMENTS * len(PDF))
    entries = [AuditRecord.from_canonical(d)
               for _, d in platform.audit.patient_entries(account.patient_id, limit=200)]
    assert sum(e.interaction == "document-upload" for e in entries) == MAX_DOCUMENTS


def test_a_record_taking_uploads_too_fast_is_told_when_to_retry(
        portal: TestClient, platform: Platform, account: PatientAccount) -> None:
    csrf = csrf_of(portal.get("/me/documents"))
    # Counted before the file is read: refused uploads count too.
    for _ in range(UPLOADS_PER_MINUTE):
        assert upload(portal, "forged", PDF).status_code == 400  # type: ignore[attr-defined]
    throttled = upload(portal, csrf, PDF, lang="de")
    assert throttled.status_code == 429  # type: ignore[attr-defined]
    assert int(throttled.headers["Retry-After"]) >= 1  # type: ignore[attr-defined]
    assert "Sekunden" in throttled.text  # type: ignore[attr-defined]
    with platform.unit_of_work() as uow:
        assert uow.documents.patient_authored_usage(account.patient_id) == (0, 0)
    # Another record is not held back by this one.
    other = enrol_patient(platform, 2, family="Elsewhere", login="else@example.lu")
    elsewhere = signed_in(platform, other, port=50013)
    added = upload(elsewhere, csrf_of(elsewhere.get("/me/documents")), PDF)
    assert added.status_code == 303, added.text  # type: ignore[attr-defined]
