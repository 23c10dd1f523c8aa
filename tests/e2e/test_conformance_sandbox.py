"""The conformance sandbox, end to end: a CareVault in the ``integration`` environment (TLS, as
outside ``dev`` it must be), two vendors' systems registered with ``carevault conformance
register``, each driving the FHIR API over HTTP with httpx, PyJWT and resources written here
(`support.mhd`, no CareVault code on the vendor's side), then ``carevault conformance report``.

- The demo system goes through the whole scenario and gets a passing report, which
  ``conformance verify`` checks offline against the key the platform publishes, and with which
  a production platform's operator grants it credentials (``conformance grant``), while that
  platform's ``pki issue-system`` refuses.
- The broken system sends an unsigned document, searches with a patient reference that names
  no one, and never retrieves: its report fails and names those transactions with what the
  platform told it; a grant with it is refused.
"""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from support.builders import national_id
from support.mhd import (
    ASSERTION_TYPE,
    FHIR_JSON,
    Signer,
    created,
    is_signature,
    pdf,
    provide_bundle,
)
from support.tls_probe import client_context
from support.x509_ca import LocalCa

from .conftest import (
    CAREVAULT,
    COMMAND_SECONDS,
    _stop,
    _wait_until_healthy,
    carevault_env,
    free_port,
)

pytestmark = pytest.mark.e2e

JsonObject = dict[str, Any]
NATIONAL_ID = "https://carevault.lu/fhir/sid/matricule"
BORN = date(1980, 5, 17)
_SEQUENCES = itertools.count(101)  # the sandbox's platform holds only the tests' patients


@dataclass
class Sandbox:
    workdir: Path
    base_url: str
    verify: Any  # the SSL context trusting the test's server CA
    env: dict[str, str]

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([CAREVAULT, *args], cwd=self.workdir, env=self.env,
                              capture_output=True, text=True, timeout=COMMAND_SECONDS,
                              check=False)
        if ok:
            assert done.returncode == 0, f"`carevault {' '.join(args)}`: {done.stderr}"
        return done


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    workdir = tmp_path_factory.mktemp("conformance-sandbox")
    (workdir / "var").mkdir()
    port = free_port()
    base_url = f"https://127.0.0.1:{port}"
    env = carevault_env(workdir, base_url)
    env.update({"CAREVAULT_ENVIRONMENT": "integration",
                "CAREVAULT_RATE_LIMIT_PER_MINUTE": "1000000"})
    env.pop("CAREVAULT_WORKERS", None)
    ca = LocalCa(workdir / "test-ca")
    server = ca.server()
    verify = client_context(ca=ca.pem)
    made = Sandbox(workdir, base_url, verify, env)
    made.cli("init")
    made.cli("pki", "init")
    stderr = workdir / "server.err"
    with (workdir / "server.out").open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [CAREVAULT, "serve", "--host", "127.0.0.1", "--port", str(port), "--tls-cert",
             str(server.certificate), "--tls-key", str(server.key)],
            cwd=workdir, env=env, stdout=out, stderr=err)
    try:
        _wait_until_healthy(process, base_url, stderr, verify)
        yield made
    finally:
        _stop(process)


class Vendor:
    """A vendor's system as its developers wrote it from the sandbox's instructions."""

    def __init__(self, sandbox: Sandbox, name: str) -> None:
        self.sandbox = sandbox
        self.name = name
        self.credentials = sandbox.workdir / name.replace(" ", "-")
        self.registration: JsonObject = json.loads(sandbox.cli(
            "conformance", "register", name, "--out", str(self.credentials), "--json").stdout)
        self.http = httpx.Client(base_url=f"{sandbox.base_url}/fhir", verify=sandbox.verify,
                                 timeout=30.0, headers={"Accept": FHIR_JSON})
        self.signer = Signer(self.credentials)  # the system signs with its own key

    def authenticate(self) -> None:
        """SMART Backend Services: a client assertion signed with the system's key (PyJWT),
        its chain in ``x5c``, naming the professional it acts for in ``act``."""
        client_id = self.registration["client_id"]
        chain = [x509.load_pem_x509_certificate((self.credentials / name).read_bytes())
                 for name in ("cert.pem", "chain.pem")]
        now = int(time.time())
        assertion = jwt.encode(
            {"iss": client_id, "sub": client_id, "aud": self.registration["token_endpoint"],
             "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex,
             "act": {"sub": self.registration["act"]}},
            (self.credentials / "key.pem").read_bytes(), algorithm="ES256",
            headers={"x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode()
                             for c in chain]})
        answer = httpx.post(self.registration["token_endpoint"], verify=self.sandbox.verify,
                            data={"grant_type": "client_credentials",
                                  "scope": "system/*.cruds",
                                  "client_assertion_type": ASSERTION_TYPE,
                                  "client_assertion": assertion})
        assert answer.status_code == 200, answer.text
        self.http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def put(self, url: str, resource: JsonObject, **params: str) -> httpx.Response:
        return self.http.put(url, params=params, content=json.dumps(resource).encode(),
                             headers={"Content-Type": FHIR_JSON})

    def post(self, url: str, resource: JsonObject) -> httpx.Response:
        return self.http.post(url, content=json.dumps(resource).encode(),
                              headers={"Content-Type": FHIR_JSON})

    def feed_patient(self, family: str) -> str:
        """ITI-104: the patient under the system's own patient numbers."""
        system, value = self.registration["patient_id_system"], uuid.uuid4().hex[:12]
        patient = {"resourceType": "Patient",
                   "identifier": [
                       {"system": NATIONAL_ID, "value": national_id(next(_SEQUENCES), BORN)},
                       {"system": system, "value": value}],
                   "name": [{"family": family, "given": ["Vendor"]}],
                   "gender": "female", "birthDate": BORN.isoformat()}
        answer = self.put("/Patient", patient, identifier=f"{system}|{value}")
        assert answer.status_code in (200, 201), answer.text
        return str(answer.json()["id"])

    def visit(self, patient_id: str) -> None:
        """The visit that opens the record to the system's professional (admission system)."""
        practitioner = self.registration["practitioner"]
        answer = self.post("/Encounter", {
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "subject": {"reference": f"Patient/{patient_id}"},
            "participant": [{"individual": {"reference": practitioner}}],
            "period": {"start": "2026-11-20T09:00:00Z"}})
        assert answer.status_code == 201, answer.text

    def bundle(self, patient: str | None, content: bytes, *, signed: bool = True,
               **metadata: Any) -> JsonObject:
        practitioner = self.registration["practitioner"].removeprefix("Practitioner/")
        organization = self.registration["organization"].removeprefix("Organization/")
        return provide_bundle(patient, practitioner, content, organization_id=organization,
                              signature=self.signer.detached_jws(content) if signed else None,
                              **metadata)

    def report(self, tmp: Path) -> JsonObject:
        out = tmp / f"{self.credentials.name}-report.json"
        self.sandbox.cli("conformance", "report", self.name, "--out", str(out), "--html",
                         str(tmp / f"{self.credentials.name}-report.html"))
        return dict(json.loads(out.read_text()))


def test_a_conformant_system_gets_a_passing_signed_report(sandbox: Sandbox,
                                                          tmp_path: Path) -> None:
    vendor = Vendor(sandbox, "Demo HIS 1.0")
    vendor.authenticate()
    patient = vendor.feed_patient("Conforme")
    stranger = vendor.feed_patient("Sans-Visite")  # no visit: its record stays closed to us
    refused = vendor.http.get("/DocumentReference", params={"patient": f"Patient/{stranger}"})
    assert refused.status_code == 403, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"
    vendor.visit(patient)

    content = pdf("Compte rendu, version 1")
    published = vendor.post("", vendor.bundle(patient, content))
    assert published.status_code == 200, published.text
    ids = created(published.json(), "DocumentReference")
    read = {i: vendor.http.get(f"/DocumentReference/{i}").json() for i in ids}
    document = next(i for i, r in read.items() if not is_signature(r))
    signature = next(i for i, r in read.items() if is_signature(r))
    replaced = vendor.post("", vendor.bundle(patient, pdf("Compte rendu, version 2"),
                                             replaces=document))
    assert replaced.status_code == 200, replaced.text

    found = vendor.http.get("/DocumentReference", params={"patient": f"Patient/{patient}"})
    assert found.status_code == 200 and document in {e["resource"]["id"]
                                                     for e in found.json()["entry"]}
    retrieved = vendor.http.get(f"/Binary/{document}", headers={"Accept": "*/*"})
    assert retrieved.status_code == 200 and retrieved.content == content
    jws = vendor.http.get(f"/Binary/{signature}", headers={"Accept": "*/*"}).content.decode()
    # The vendor checks the signature itself, with PyJWT and the platform CA.
    header = jwt.get_unverified_header(jws)
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    authorities = x509.load_pem_x509_certificates(
        httpx.get(f"{sandbox.base_url}/pki/ca", verify=sandbox.verify).content)
    leaf.verify_directly_issued_by(next(a for a in authorities if a.subject == leaf.issuer))
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    head, _, tail = jws.split(".")
    attached = f"{head}.{jwt.utils.base64url_encode(content).decode()}.{tail}"
    assert jwt.api_jws.PyJWS().decode(attached, key, algorithms=["ES256"]) == content

    signed = vendor.report(tmp_path)
    report = signed["report"]
    assert {s["step"]: s["status"] for s in report["steps"]} == {
        s["step"]: "passed" for s in report["steps"]}
    assert report["passed"] is True and report["system"] == "Demo HIS 1.0"
    assert report["client_id"] == vendor.registration["client_id"]
    access = next(s for s in report["steps"] if s["step"] == "access-decision")
    assert access["attempts"] == 1
    page = (tmp_path / "Demo-HIS-1.0-report.html").read_text()
    assert "PASSED: every step was performed correctly" in page

    # Anyone checks it offline with the key the platform publishes.
    key_file = tmp_path / "sandbox-key.pem"
    key_file.write_bytes(httpx.get(f"{sandbox.base_url}/.well-known/carevault-signing-key.pem",
                                   verify=sandbox.verify).content)
    report_file = tmp_path / "Demo-HIS-1.0-report.json"
    verified = sandbox.cli("conformance", "verify", str(report_file), "--public-key",
                           str(key_file))
    assert "the signature is valid: Demo HIS 1.0 PASSED" in verified.stdout

    # A production platform grants credentials with it, and only so.
    production = Production(tmp_path / "production", key_file)
    out = tmp_path / "production" / "his"
    plain = production.cli("pki", "issue-system", production.organization, "--out", str(out),
                           ok=False)
    assert plain.returncode == 1 and "conformance grant" in plain.stderr
    granted = json.loads(production.cli(
        "conformance", "grant", "Demo HIS 1.0", production.organization, "--report",
        str(report_file), "--out", str(out), "--json").stdout)
    assert granted["client_id"] == "system:ORG-PROD-1" and (out / "cert.pem").exists()


class Production:
    """A production platform's command line (no server needed): its CA and one hospital."""

    def __init__(self, workdir: Path, sandbox_key: Path) -> None:
        (workdir / "var").mkdir(parents=True)
        self.workdir = workdir
        self.env = carevault_env(workdir, "https://carevault.example")
        self.env.update({"CAREVAULT_ENVIRONMENT": "prod",
                         "CAREVAULT_CONFORMANCE_KEY_FILE": str(sandbox_key)})
        self.cli("init")
        self.cli("pki", "init")
        self.organization = json.loads(self.cli(
            "directory", "add-organization", "--identifier", "ORG-PROD-1", "--name",
            "Hôpital de production", "--json").stdout)["id"]

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([CAREVAULT, *args], cwd=self.workdir, env=self.env,
                              capture_output=True, text=True, timeout=COMMAND_SECONDS,
                              check=False)
        if ok:
            assert done.returncode == 0, f"`carevault {' '.join(args)}`: {done.stderr}"
        return done


def test_a_broken_system_gets_a_failing_report_naming_its_failed_transactions(
        sandbox: Sandbox, tmp_path: Path) -> None:
    vendor = Vendor(sandbox, "Broken HIS 0.1")
    vendor.authenticate()
    patient = vendor.feed_patient("Cassé")
    vendor.visit(patient)
    unsigned = vendor.post("", vendor.bundle(patient, pdf("sans signature"), signed=False))
    assert unsigned.status_code == 422, unsigned.text
    nobody = vendor.http.get("/DocumentReference",
                             params={"patient": "Patient/does-not-exist"})
    assert nobody.status_code >= 400
    # ... and it never retrieves anything.

    report = vendor.report(tmp_path)["report"]
    steps = {s["step"]: s for s in report["steps"]}
    assert report["passed"] is False
    assert steps["authenticate"]["status"] == "passed"
    assert steps["feed-patient"]["status"] == "passed"
    assert steps["publish"]["status"] == "failed"
    assert "signature is required" in steps["publish"]["errors"][0]["error"]
    assert steps["find"]["status"] == "failed"
    assert steps["find"]["errors"][0]["error"].startswith(f"HTTP {nobody.status_code}")
    assert steps["retrieve"]["status"] == "not-attempted"
    page = (tmp_path / "Broken-HIS-0.1-report.html").read_text()
    assert "NOT PASSED" in page and "Not attempted" in page and "signature is required" in page

    # Its report obtains nothing.
    key_file = tmp_path / "sandbox-key.pem"
    key_file.write_bytes(httpx.get(f"{sandbox.base_url}/.well-known/carevault-signing-key.pem",
                                   verify=sandbox.verify).content)
    production = Production(tmp_path / "production", key_file)
    refused = production.cli(
        "conformance", "grant", "Broken HIS 0.1", production.organization, "--report",
        str(tmp_path / "Broken-HIS-0.1-report.json"), "--out", str(tmp_path / "his"), ok=False)
    assert refused.returncode == 1
    assert "does not pass" in refused.stderr and "publish" in refused.stderr
    assert not (tmp_path / "his").exists()
