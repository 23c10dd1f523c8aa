"""The portal's "export everything" over HTTP on both databases: the person downloads their
record as the FHIR API's ``$everything`` gives it (the same Bundle, streamed), with the document
count for the page's progress; recorded before the first byte; refused without a session or a
record; the page offers it in three languages."""

from __future__ import annotations

import base64
import json
import re

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from support.accounts import PatientAccount, enrol_patient
from support.documents import PDF, created_id, provide_bundle, publish
from support.portal import seen_by, signed_in

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def account(platform: Platform) -> PatientAccount:
    return enrol_patient(platform, family="Export")


@pytest.fixture
def portal(platform: Platform, account: PatientAccount) -> TestClient:
    return signed_in(platform, account, port=50011)


def test_the_export_is_the_records_bundle_with_every_document_and_its_content(
        portal: TestClient, client: TestClient, platform: Platform,
        account: PatientAccount) -> None:
    gp = seen_by(platform, client, account.patient_id)
    document = created_id(publish(client, gp, provide_bundle(account.patient_id, gp)))
    page = portal.get("/me/documents", params={"lang": "fr"})
    assert 'id="export"' in page.text and "Tout exporter" in page.text
    before = platform.audit.size("clinical")
    download = portal.get("/me/export")
    assert download.status_code == 200, download.text
    assert download.headers["content-type"].startswith("application/fhir+json")
    assert "attachment" in download.headers["content-disposition"]
    assert download.headers["cache-control"] == "no-store"
    bundle = download.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    resources = [e["resource"] for e in bundle["entry"]]
    kinds = [r["resourceType"] for r in resources]
    assert kinds[0] == "Patient" and "Consent" in kinds and "Parameters" in kinds
    binaries = [r for r in resources if r["resourceType"] == "Binary"]
    assert int(download.headers["x-export-documents"]) == len(binaries) >= 1
    assert any(base64.b64decode(b["data"]) == PDF for b in binaries)
    references = [r for r in resources if r["resourceType"] == "DocumentReference"]
    assert any(r.get("id") == document for r in references)
    # Each document's metadata then its content, as $everything writes them.
    urls = [e["fullUrl"] for e in bundle["entry"]]
    at = urls.index(f"http://127.0.0.1:8000/fhir/DocumentReference/{document}")
    assert urls[at + 1] == f"http://127.0.0.1:8000/fhir/Binary/{document}"
    # Recorded, in the patient's history, as an export.
    size = platform.audit.size("clinical")
    recorded = [AuditRecord.from_canonical(d) for _, d in
                platform.audit.entries("clinical", before, size)]
    assert any(r.interaction == "export" and r.patient == account.patient_id for r in recorded)


def test_the_export_needs_a_session_that_acts_on_a_record(
        platform: Platform, portal: TestClient) -> None:
    anonymous = TestClient(platform.app, base_url="http://127.0.0.1:8000")
    refused = anonymous.get("/me/export", follow_redirects=False)
    assert refused.status_code == 303 and "/login" in refused.headers["location"]
    assert "Bundle" not in refused.text
    json.loads(portal.get("/me/export").text)  # a whole document, not a prefix
