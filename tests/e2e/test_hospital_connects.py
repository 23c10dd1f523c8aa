"""A hospital system connects to a running CareVault exactly as the README tells it to:
the operator issues its certificate with the CLI, the system signs an assertion with a
third-party JOSE library and reads the FHIR API with the token it gets."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .conftest import CAREVAULT, RunningServer, carevault_env

pytestmark = pytest.mark.e2e


def cli(server: RunningServer, *args: str) -> Any:
    done = subprocess.run([CAREVAULT, *args], cwd=server.workdir, capture_output=True,
                          text=True, timeout=120, check=False,
                          env=carevault_env(server.workdir, server.base_url))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def token_for(server: RunningServer, credentials: Path, client_id: str, scope: str,
              **claims: Any) -> str:
    """The README's snippet, word for word in substance."""
    certificates = [x509.load_pem_x509_certificate((credentials / name).read_bytes())
                    for name in ("cert.pem", "chain.pem")]
    x5c = [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in certificates]
    now = int(time.time())
    assertion = jwt.encode(
        {"iss": client_id, "sub": client_id, "aud": f"{server.base_url}/oauth/token",
         "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex, **claims},
        (credentials / "key.pem").read_bytes(), algorithm="ES256", headers={"x5c": x5c})
    response = httpx.post(f"{server.base_url}/oauth/token", data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def test_a_hospital_system_and_a_professional_connect(server: RunningServer,
                                                      tmp_path: Path) -> None:
    cli(server, "pki", "init")
    professional = next(p for p in server.accounts["professionals"] if p["organization"])
    organizations = cli(server, "directory", "list", "organizations", "--limit", "100",
                        "--json")["entries"]
    organization = next(o for o in organizations if o["name"] == professional["organization"])
    issued = cli(server, "pki", "issue-system", organization["id"], "--out",
                 str(tmp_path / "his"), "--json")
    token = token_for(server, tmp_path / "his", issued["client_id"], "system/Patient.rs",
                      act={"sub": professional["identifier"]})
    patient = server.accounts["patients"][0]
    family = httpx.get(f"{server.fhir}/Patient/{patient['patient_id']}",
                       headers={"Authorization": f"Bearer {token}"}).json()["name"][0]["family"]
    found = httpx.get(f"{server.fhir}/Patient", params={"family": family},
                      headers={"Authorization": f"Bearer {token}"})
    assert found.status_code == 200, found.text
    assert patient["patient_id"] in {e["resource"]["id"] for e in found.json()["entry"]}

    card = cli(server, "pki", "issue-practitioner", professional["practitioner_id"], "--out",
               str(tmp_path / "card"), "--json")
    assert card["client_id"] == professional["identifier"]
    own = token_for(server, tmp_path / "card", card["client_id"], "system/Practitioner.rs")
    me = httpx.get(f"{server.fhir}/Practitioner/{professional['practitioner_id']}",
                   headers={"Authorization": f"Bearer {own}"})
    assert me.status_code == 200
    refused = httpx.get(f"{server.fhir}/Patient", headers={"Authorization": f"Bearer {own}"})
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"
