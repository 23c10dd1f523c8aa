"""The e-prescription from end to end, as the prescriber's and the pharmacy's software would
drive it from gematik's published E-Rezept workflow (issue #18, "Done when"): the FHIR
resources are built in `support.erezept` from the published shapes, not by CareVault's code.

create → activate (signed) → print the PDF, render it (pypdfium2) and read its 2D codes back
(zxing-cpp) → accept with the code read from the paper → close → the receipt verified offline
with the keys fetched once from the platform, its inclusion proof included → a second accept
refused. The printout's own signature is verified offline too."""

from __future__ import annotations

import base64
import json
from typing import Any

import pypdfium2 as pdfium
import pytest
import zxingcpp
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.verifier import VerificationError, verify_platform_signature, verify_receipt
from support.erezept import SECRET, Scene, dispense, identifier


@pytest.fixture
def scene(platform: Platform, client: TestClient, registrar: TestClient) -> Scene:
    return Scene(platform, client, registrar, seq=51)


def read_codes(pdf: bytes) -> list[str]:
    """Every 2D code on the printed page, as a phone or a pharmacy's scanner reads it."""
    document = pdfium.PdfDocument(pdf)
    image = document[0].render(scale=4).to_pil()
    return [found.text for found in zxingcpp.read_barcodes(image)]


def test_prescribe_print_scan_dispense_and_verify_offline(scene: Scene,
                                                          platform: Platform) -> None:
    http = scene.client
    # Published keys, fetched once: everything after this is checked offline.
    platform_key = http.get("/.well-known/carevault-signing-key.pem").content
    log_key = http.get("/audit/public-key", params={"stream": "clinical"}).content

    task_id, code = scene.ready()
    printed = http.post(f"/fhir/Task/{task_id}/$print", params={"ac": code},
                        headers=scene.gp.headers)
    assert printed.status_code == 200, printed.text
    assert printed.headers["content-type"] == "application/pdf"
    codes = read_codes(printed.content)
    assert len(codes) == 2, codes
    access = next(json.loads(c) for c in codes if c.startswith("{"))
    signature = next(c for c in codes if not c.startswith("{"))
    (reference,) = access["urls"]
    path, _, query = reference.partition("?")
    assert path == f"Task/{task_id}/$accept"
    scanned_code = query.removeprefix("ac=")
    assert scanned_code == code

    # The paper's signature holds under the platform's key and names what is printed.
    facts = json.loads(verify_platform_signature(signature, platform_key))
    assert facts["task"] == task_id and "Amoxicillin" in facts["medication"]
    assert "3 times every 1 day" in facts["dosage"]
    text = "".join(pdfium.PdfDocument(printed.content)[0].get_textpage().get_text_range())
    assert facts["prescription"] in text and "3 times every 1 day" in text
    with pytest.raises(VerificationError):
        verify_platform_signature(signature[:-4] + "AAAA", platform_key)

    # The pharmacy scans the paper.
    accepted = http.post(f"/fhir/{path}", params={"ac": scanned_code},
                         headers=scene.pharmacist.headers)
    assert accepted.status_code == 200, accepted.text
    task, prescription = (e["resource"] for e in accepted.json()["entry"])
    assert prescription["contentType"] == "application/jose"
    secret = identifier(task, SECRET)
    assert secret is not None

    closed = http.post(f"/fhir/Task/{task_id}/$close", params={"secret": secret},
                       json=dispense(task_id, scene.national_id, scene.patient_system),
                       headers=scene.pharmacist.headers)
    assert closed.status_code == 200, closed.text
    receipt: Any = base64.b64decode(closed.json()["signature"]["data"]).decode()
    claims = verify_receipt(receipt, platform_key, log_key)
    assert claims["task"] == task_id

    again = http.post(f"/fhir/{path}", params={"ac": scanned_code},
                      headers=scene.pharmacist.headers)
    assert again.status_code == 409, again.text


def test_only_its_prescriber_prints_it_with_its_code(scene: Scene, platform: Platform) -> None:
    task_id, code = scene.ready()
    wrong = scene.client.post(f"/fhir/Task/{task_id}/$print", params={"ac": "0" * 64},
                              headers=scene.gp.headers)
    assert wrong.status_code == 403, wrong.text
    by_pharmacist = scene.client.post(f"/fhir/Task/{task_id}/$print", params={"ac": code},
                                      headers=scene.pharmacist.headers)
    assert by_pharmacist.status_code == 403, by_pharmacist.text
