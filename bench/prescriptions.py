"""E-prescriptions throughput (issue #18): create+activate and accept+close per second.

Every request goes through the FHIR door (`FhirDoor.handle`, what the HTTP route runs in its
thread pool): rate limit, the token checked completely, the engine's decision, the signature
verified against the platform CA and its CRL (``$activate``), the conditional UPDATE
(``$accept``), the platform-signed receipt with its inclusion proof (``$close``), the audit
entries committed before the answer. So the security is the documents' own; what is left out
is the HTTP transport (uvicorn, the connection): the figures are an upper bound of what a
server answers, to be set beside ``bench/documents.py``'s committed figures
(``bench/results/documents.json``: the bare baseline server's reads per second, and ITI-65
submissions per second, both over HTTP), which this script prints next to its own.

Setup, not timed: a scratch database (SQLite in a temporary folder, or ``--database-url``
for PostgreSQL, whose tables are dropped first), the platform built as ``carevault serve``
builds it, one patient, a physician the patient gave access to, a pharmacist of a pharmacy,
their SMART tokens (PyJWT client assertions with ``x5c``).

Timed, with C threads: (1) ``$create``, the physician's signature of the prescription Bundle
for the task's number (PyJWT, ES256: a signed prescription is bound to its task, so it cannot
be made beforehand; a fraction of a millisecond), then ``$activate`` of each; (2) ``$accept``
then ``$close`` of each. Each answer is checked (201/200/200/200).

Run: ``.venv/bin/python bench/prescriptions.py`` (N=200, C=8; under a minute on SQLite), or
``--count 40 --threads 4`` for a smoke run; ``--out FILE`` writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from carevault.adapters.keys.local_file import create_key_file
from carevault.adapters.keys.pki_keys import ca_key_password
from carevault.adapters.storage.database import connect, upgrade
from carevault.bootstrap import Platform, build
from carevault.domain.authorization import GrantLevel, Party, Subject, SubjectKind
from carevault.domain.national_id import make_luxembourg_national_id
from carevault.fhirmodel.directory import new_organization, new_patient, new_practitioner
from carevault.services import directory as svc
from carevault.services import pki
from carevault.services.record_policy import Actor
from carevault.services.tokens import ASSERTION_TYPE, issue_backend_token
from carevault.settings import Settings

RESULTS = Path(__file__).parent / "results" / "documents.json"
ATC, PRODUCTS = "http://www.whocc.no/atc", "https://carevault.lu/fhir/sid/medicinal-product"
ACCESS_CODE = "https://carevault.lu/fhir/NamingSystem/AccessCode"
PRESCRIPTION_ID = "https://carevault.lu/fhir/NamingSystem/PrescriptionID"
SECRET = "https://carevault.lu/fhir/NamingSystem/Secret"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def credentials(platform: Platform, identifier: str) -> tuple[str, str, list[bytes]]:
    """A token (system/*.cruds, narrowed by the platform) and the card's key and chain."""
    ctx = pki.PkiContext(systems=platform.directory.systems,
                         ca_password=ca_key_password(platform.settings.key_source),
                         clock=lambda: datetime.now(UTC))
    with platform.unit_of_work() as uow:
        practitioner_id = uow.directory.practitioner_ids_by_identifier([identifier])[identifier]
    issued: list[pki.Credentials] = []
    with platform.unit_of_work() as uow:
        pki.issue_practitioner_certificate(uow, ctx, practitioner_id, issued.append)
    card = issued[0]
    chain = [x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
             for pem in (card.record.certificate_pem, card.chain_pem)]
    now = int(time.time())
    assertion = pyjwt.encode(
        {"iss": identifier, "sub": identifier, "aud": platform.tokens.token_endpoint,
         "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex},
        card.private_key_pem, algorithm="ES256",
        headers={"x5c": [base64.b64encode(der).decode() for der in chain]})
    with platform.unit_of_work() as uow:
        token = issue_backend_token(uow, platform.tokens, assertion_type=ASSERTION_TYPE,
                                    assertion=assertion, scope="system/*.cruds").access_token
    return token, card.private_key_pem, chain


def prescription(patient_system: str, national: str, hpd_system: str, number: str) -> bytes:
    today = datetime.now(UTC).date()
    urls = {k: f"urn:uuid:{uuid.uuid4()}" for k in
            ("MedicationRequest", "Medication", "Patient", "Practitioner", "Organization")}
    resources: list[dict[str, Any]] = [
        {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
         "medicationReference": {"reference": urls["Medication"]},
         "subject": {"reference": urls["Patient"]},
         "requester": {"reference": urls["Practitioner"]},
         "dosageInstruction": [{
             "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
             "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}],
         "dispenseRequest": {"quantity": {"value": 30, "unit": "tablet"},
                             "validityPeriod": {"start": today.isoformat(),
                                                "end": (today + timedelta(days=28)).isoformat()}}},
        {"resourceType": "Medication", "code": {"coding": [
            {"system": PRODUCTS, "code": "1000003"}, {"system": ATC, "code": "C09AA05"}]}},
        {"resourceType": "Patient", "identifier": [{"system": patient_system, "value": national}]},
        {"resourceType": "Practitioner",
         "identifier": [{"system": hpd_system, "value": "HP-BENCH-GP"}]},
        {"resourceType": "Organization", "name": "Bench practice"},
    ]
    return json.dumps({"resourceType": "Bundle", "type": "document", "identifier": {
        "system": PRESCRIPTION_ID, "value": number}, "entry": [
        {"fullUrl": urls[r["resourceType"]], "resource": r} for r in resources]}).encode()


def setup(database_url: str, workdir: Path) -> tuple[Platform, str, tuple[str, str, list[bytes]],
                                                     str, str]:
    key_file = workdir / "keys" / "carevault.key"
    create_key_file(key_file)
    settings = Settings(database_url=database_url, key_source=f"file:{key_file}",
                        environment="dev", rate_limit_per_minute=1_000_000,
                        _env_file=None)  # type: ignore[call-arg]
    engine = connect(database_url, pool_size=settings.request_threads + 6)
    upgrade(engine)
    platform = build(settings, engine)
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        pki.init_pki(uow, pki.PkiContext(systems=ctx.systems,
                                         ca_password=ca_key_password(settings.key_source),
                                         clock=lambda: datetime.now(UTC)))
    national = make_luxembourg_national_id(date(1970, 1, 1), 101)
    with platform.unit_of_work() as uow:
        patient_id = svc.create_patient(uow, ctx, new_patient(
            ctx.systems, national_id=national, family="Bench", given=["Pat"],
            birth_date=date(1970, 1, 1), gender="female")).id
        pharmacy = svc.create_organization(uow, ctx, new_organization(
            ctx.systems, identifier="ORG-BENCH-PHA", name="Bench pharmacy", kind="pharmacy")).id
        svc.register_professionals(uow, ctx, [
            svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-BENCH-GP",
                                                 family="Gp", given=["Bea"]), "physician"),
            svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-BENCH-PH",
                                                 family="Ph", given=["Pia"]), "pharmacist",
                                None, pharmacy)])
    gp = credentials(platform, "HP-BENCH-GP")
    pharmacist = credentials(platform, "HP-BENCH-PH")[0]
    with platform.unit_of_work() as uow:
        gp_id = uow.directory.practitioner_ids_by_identifier(["HP-BENCH-GP"])["HP-BENCH-GP"]
    patient = Subject(SubjectKind.PATIENT, patient_id)
    platform.policy.grant(Actor(patient, f"Patient/{patient_id}"), patient_id,
                          Party.PRACTITIONER, gp_id, GrantLevel.NORMAL)
    return platform, patient_id, gp, pharmacist, national


def timed(count: int, threads: int, work: Callable[[int], None]) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(count)))
    return count / (time.perf_counter() - started)


def run(count: int, threads: int, database_url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        url = database_url or f"sqlite:///{scratch}/bench.db"
        platform, _patient_id, (gp_token, key, chain), pharmacist, national = setup(
            url, Path(scratch))
        settings = platform.settings
        header = {"x5c": [base64.b64encode(der).decode() for der in chain]}

        def signed(number: str) -> str:
            return pyjwt.api_jws.PyJWS().encode(
                prescription(settings.national_id_system, national,
                             settings.professional_id_system, number),
                key, algorithm="ES256", headers=header)
        door = platform.door
        gp = {"authorization": f"Bearer {gp_token}", "content-type": "application/fhir+json"}
        ph = {"authorization": f"Bearer {pharmacist}", "content-type": "application/fhir+json"}
        tasks: list[tuple[str, str]] = [("", "")] * count
        secrets: list[str] = [""] * count

        def prescribe(n: int) -> None:
            made = door.handle("POST", "Task/$create", body=b'{"resourceType":"Parameters"}',
                               headers=gp, client="127.0.0.1")
            assert made.status == 201, made.body
            assert made.body is not None
            code = next(i["value"] for i in made.body["identifier"] if i["system"] == ACCESS_CODE)
            number = next(i["value"] for i in made.body["identifier"]
                          if i["system"] == PRESCRIPTION_ID)
            tasks[n] = (str(made.body["id"]), code)
            body = json.dumps({"resourceType": "Parameters", "parameter": [{
                "name": "ePrescription", "resource": {
                    "resourceType": "Binary", "contentType": "application/jose",
                    "data": base64.b64encode(signed(number).encode()).decode()}}]}).encode()
            done = door.handle("POST", f"Task/{tasks[n][0]}/$activate", body=body, headers=gp,
                               client="127.0.0.1")
            assert done.status == 200, done.body

        def dispense(n: int) -> None:
            task_id, code = tasks[n]
            taken = door.handle("POST", f"Task/{task_id}/$accept", params=(("ac", code),),
                                headers=ph, client="127.0.0.2")
            assert taken.status == 200, taken.body
            assert taken.body is not None
            task = taken.body["entry"][0]["resource"]
            secrets[n] = next(i["value"] for i in task["identifier"] if i["system"] == SECRET)
            body = json.dumps({"resourceType": "MedicationDispense", "status": "completed",
                               "medicationCodeableConcept": {"text": "Ramipril 5 mg"}}).encode()
            closed = door.handle("POST", f"Task/{task_id}/$close",
                                 params=(("secret", secrets[n]),), body=body, headers=ph,
                                 client="127.0.0.2")
            assert closed.status == 200, closed.body

        say(f"{count} prescriptions, {threads} threads, {platform.engine.dialect.name}")
        prescribed = timed(count, threads, prescribe)
        dispensed = timed(count, threads, dispense)
        platform.audit.close()
    documents = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    return {
        "create_activate_per_s": round(prescribed, 1),
        "accept_close_per_s": round(dispensed, 1),
        "beside_documents_bench": {
            "baseline_retrieve_per_s (bare server, HTTP)": documents.get(
                "baseline_retrieve_per_s"),
            "submit_per_s (ITI-65, HTTP)": documents.get("submit_per_s"),
        },
        "setup": {"count": count, "threads": threads, "database": url_kind(database_url),
                  "path": "FhirDoor.handle in-process (no HTTP transport)"},
    }


def url_kind(url: str | None) -> str:
    return "sqlite (temporary)" if url is None else url.split(":", 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    figures = run(args.count, args.threads, args.database_url)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
