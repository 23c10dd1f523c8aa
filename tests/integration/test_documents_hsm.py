"""Documents whose key-encryption key lives in a PKCS#11 token (SoftHSM2): published, found,
retrieved and rotated through the platform as deployed with CAREVAULT_DOCUMENT_KEY_SOURCE."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from carevault.adapters.storage import schema as t
from carevault.bootstrap import Platform, build
from carevault.services import key_rotation
from carevault.settings import Settings
from support.authorities import presence_code, registrar_headers, with_presence
from support.builders import patient
from support.documents import PDF, Pro, created_id, provide_bundle, publish
from support.softhsm import SoftHsm


@pytest.fixture
def hsm_platform(settings: Settings, engine: Engine, softhsm: SoftHsm) -> Iterator[Platform]:
    platform = build(settings.model_copy(update={"document_key_source": softhsm.key_source}),
                     engine)
    yield platform
    platform.vault.keyring.close()


def test_documents_sealed_under_an_hsm_kek(hsm_platform: Platform) -> None:
    platform = hsm_platform
    with TestClient(platform.app, base_url="http://127.0.0.1:8000",
                    client=("127.0.0.1", 50000)) as client:
        gp = Pro(platform, "HP-HSM-GP")
        created = client.post("/fhir/Patient", json=patient(platform.directory.systems, 9),
                              headers=registrar_headers(platform))
        patient_id = str(created.json()["id"])
        client.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "subject": {"reference": f"Patient/{patient_id}"},
            "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
            "period": {"start": "2026-11-20T09:00:00Z"}}, presence_code(platform, patient_id)))
        document_id = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
        with platform.engine.connect() as connection:
            kek = connection.execute(select(t.document_content.c.kek_id).where(
                t.document_content.c.document_id == document_id)).scalar_one()
        assert kek == "kek-0001"
        assert client.get(f"/fhir/Binary/{document_id}", headers=gp.headers).content == PDF
        report = key_rotation.rotate(platform.unit_of_work, platform.vault)
        assert report.kek_id == "kek-0002" and report.rewrapped == 3
        key_rotation.retire(platform.unit_of_work, platform.vault, "kek-0001")
        assert client.get(f"/fhir/Binary/{document_id}", headers=gp.headers).content == PDF
