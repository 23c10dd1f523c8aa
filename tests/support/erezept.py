"""E-prescriptions as a prescriber's and a pharmacy's software would send them, written from
gematik's published E-Rezept workflow (the ``Task`` operations, ``Parameters.ePrescription``
with a ``Binary`` of the signed Bundle, the ``AccessCode`` and ``Secret`` identifiers) and the
KBV prescription Bundle's shape (``Composition``, ``MedicationRequest``, ``Medication``,
``Patient``, ``Practitioner``, ``Organization``), not from CareVault's code. The signature is
made with PyJWT: a compact JWS (ES256) whose ``x5c`` is the prescriber's chain."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt as pyjwt
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.fhirmodel.directory import new_organization, new_practitioner
from carevault.services import directory as svc
from support.accounts import PatientAccount, enrol_registered
from support.builders import patient
from support.documents import FHIR_JSON, Pro, grant
from support.tokens import account_token, patient_headers, professional_credentials

NAMING = "https://carevault.lu/fhir/NamingSystem"
ACCESS_CODE = f"{NAMING}/AccessCode"
SECRET = f"{NAMING}/Secret"
PRESCRIPTION_ID = f"{NAMING}/PrescriptionID"
ATC = "http://www.whocc.no/atc"
PRODUCTS = "https://carevault.lu/fhir/sid/medicinal-product"
UCUM = "http://unitsofmeasure.org"
JsonObject = dict[str, Any]


def identifier(resource: JsonObject, system: str) -> str | None:
    return next((i["value"] for i in resource.get("identifier", []) if i["system"] == system),
                None)


def prescription_bundle(*, patient_system: str, patient_id_value: str,
                        practitioner_system: str, practitioner_id_value: str, number: str,
                        product: str = "1000002", atc: str = "J01CA04",
                        valid_days: int = 28, starts_in_days: int = 0) -> JsonObject:
    """A prescription Bundle of type document, as the KBV shape has it: its identifier is the
    prescription number ``$create`` gave the task it is signed for (gematik's PrescriptionId)."""
    urls = {kind: f"urn:uuid:{uuid.uuid4()}" for kind in (
        "Composition", "MedicationRequest", "Medication", "Patient", "Practitioner",
        "Organization")}
    today = datetime.now(UTC)
    start = today + timedelta(days=starts_in_days)
    resources: list[JsonObject] = [
        {"resourceType": "Composition", "status": "final",
         "type": {"coding": [{"system": "http://loinc.org", "code": "57833-6"}]},
         "subject": {"reference": urls["Patient"]}, "date": today.isoformat(),
         "author": [{"reference": urls["Practitioner"]}],
         "title": "elektronische Arzneimittelverordnung",
         "section": [{"entry": [{"reference": urls["MedicationRequest"]}]}]},
        {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
         "medicationReference": {"reference": urls["Medication"]},
         "subject": {"reference": urls["Patient"]},
         "requester": {"reference": urls["Practitioner"]},
         "authoredOn": today.date().isoformat(),
         "dosageInstruction": [{
             "text": "with meals",
             "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}},
             "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet",
                                                "system": UCUM, "code": "{tbl}"}}]}],
         "dispenseRequest": {
             "quantity": {"value": 20, "unit": "tablet", "system": UCUM, "code": "{tbl}"},
             "validityPeriod": {"start": start.date().isoformat(),
                                "end": (start + timedelta(days=valid_days)).date().isoformat()}}},
        {"resourceType": "Medication",
         "code": {"coding": [{"system": PRODUCTS, "code": product},
                             {"system": ATC, "code": atc}],
                  "text": "Amoxicillin 1 g"},
         "form": {"text": "tablet"}},
        {"resourceType": "Patient",
         "identifier": [{"system": patient_system, "value": patient_id_value}],
         "name": [{"family": "Muster", "given": ["Max"]}], "birthDate": "1980-04-12"},
        {"resourceType": "Practitioner",
         "identifier": [{"system": practitioner_system, "value": practitioner_id_value}],
         "name": [{"family": "Arzt", "given": ["Anna"]}]},
        {"resourceType": "Organization", "name": "Praxis Dr. Arzt",
         "telecom": [{"system": "phone", "value": "+352 1234 5678"}]},
    ]
    return {"resourceType": "Bundle", "type": "document",
            "identifier": {"system": PRESCRIPTION_ID, "value": number},
            "timestamp": today.isoformat(),
            "entry": [{"fullUrl": urls[r["resourceType"]], "resource": r} for r in resources]}


def sign(bundle: JsonObject | bytes, key_pem: str, chain: list[bytes]) -> str:
    """The prescriber's compact JWS over the Bundle's bytes, with x5c (PyJWT)."""
    payload = bundle if isinstance(bundle, bytes) else json.dumps(bundle).encode()
    return pyjwt.api_jws.PyJWS().encode(
        payload, key_pem, algorithm="ES256",
        headers={"x5c": [base64.b64encode(der).decode() for der in chain]})


def activation(jws: str) -> JsonObject:
    return {"resourceType": "Parameters", "parameter": [{
        "name": "ePrescription",
        "resource": {"resourceType": "Binary", "contentType": "application/jose",
                     "data": base64.b64encode(jws.encode()).decode()}}]}


CREATE = {"resourceType": "Parameters", "parameter": [{
    "name": "workflowType",
    "valueCoding": {"system": "https://carevault.lu/fhir/CodeSystem/prescription-flow-type",
                    "code": "160"}}]}


def dispense(task_id: str, patient_value: str, patient_system: str) -> JsonObject:
    return {"resourceType": "MedicationDispense", "status": "completed",
            "identifier": [{"system": PRESCRIPTION_ID, "value": task_id}],
            "medicationCodeableConcept": {"coding": [{"system": PRODUCTS, "code": "1000002"}]},
            "subject": {"identifier": {"system": patient_system, "value": patient_value}},
            "performer": [{"actor": {"identifier": {"system": "urn:pharmacy",
                                                     "value": "PHARMACY-1"}}}],
            "whenHandedOver": datetime.now(UTC).isoformat()}


class Pharmacist:
    """A pharmacist of a pharmacy (an organization of the directory), with their token."""

    def __init__(self, platform: Platform, identifier: str, pharmacy_id: str,
                 profession: str = "pharmacist") -> None:
        ctx = platform.directory
        with platform.unit_of_work() as uow:
            known = uow.directory.practitioner_ids_by_identifier([identifier])
        if identifier not in known:
            with platform.unit_of_work() as uow:
                svc.register_professionals(uow, ctx, [svc.NewProfessional(
                    new_practitioner(ctx.systems, identifier=identifier, family=identifier,
                                     given=["Paula"]), profession, None, pharmacy_id)])
        token, self.key_pem, self.chain = professional_credentials(
            platform, identifier=identifier, profession=profession, specialty=None)
        self.headers = {"Authorization": f"Bearer {token}", **FHIR_JSON}
        with platform.unit_of_work() as uow:
            self.id = uow.directory.practitioner_ids_by_identifier([identifier])[identifier]


def pharmacy(platform: Platform, identifier: str = "ORG-PHARMACY-1") -> str:
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        return svc.create_organization(uow, ctx, new_organization(
            ctx.systems, identifier=identifier, name=f"Pharmacie {identifier}",
            kind="pharmacy")).id


class Scene:
    """A patient with their app, a GP they gave access to, and a pharmacist."""

    def __init__(self, platform: Platform, client: TestClient, registrar: TestClient,
                 seq: int = 31, login: str | None = None) -> None:
        """``login``: the patient's account has this login (``self.account``: its password
        and authenticator, to sign in to the portal)."""
        systems = platform.directory.systems
        resource = patient(systems, seq)
        created = registrar.post("/fhir/Patient", json=resource, headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        self.platform, self.client = platform, client
        self.patient_id = str(created.json()["id"])
        self.patient_system = platform.settings.national_id_system
        national = identifier(resource, self.patient_system)
        assert national is not None
        self.national_id = national
        self.account: PatientAccount | None = None
        if login is None:
            self.patient_headers = {**patient_headers(platform, self.patient_id), **FHIR_JSON}
        else:
            account_id, self.account = enrol_registered(platform, self.patient_id, login)
            token = account_token(platform, account_id, self.patient_id)
            self.patient_headers = {"Authorization": f"Bearer {token}", **FHIR_JSON}
        self.gp = Pro(platform, "HP-ERX-GP")
        grant(client, self.patient_headers, self.patient_id, self.gp.id)
        self.pharmacy_id = pharmacy(platform)
        self.pharmacist = Pharmacist(platform, "HP-ERX-PHARMA", self.pharmacy_id)

    def number(self, task_id: str, who: Pro | None = None) -> str:
        """The prescription number of a task, as its prescriber's software reads it."""
        answer = self.client.get(f"/fhir/Task/{task_id}", headers=(who or self.gp).headers)
        assert answer.status_code == 200, answer.text
        number = identifier(answer.json(), PRESCRIPTION_ID)
        assert number is not None
        return number

    def bundle(self, task_id: str, *, who: Pro | None = None, **changes: Any) -> JsonObject:
        """The GP's prescription for the patient, signed for the task ``task_id`` (``who``
        reads its number, when the task is someone else's)."""
        return prescription_bundle(
            patient_system=self.patient_system, patient_id_value=self.national_id,
            practitioner_system=self.platform.settings.professional_id_system,
            practitioner_id_value="HP-ERX-GP", number=self.number(task_id, who), **changes)

    def create(self, who: Pro | None = None) -> tuple[str, str, JsonObject]:
        """$create as ``who``: the task's id, its access code, the Task."""
        answer = self.client.post("/fhir/Task/$create", json=CREATE,
                                  headers=(who or self.gp).headers)
        assert answer.status_code == 201, answer.text
        task = answer.json()
        code = identifier(task, ACCESS_CODE)
        assert code is not None
        return str(task["id"]), code, task

    def activate(self, task_id: str, jws: str, who: Pro | None = None) -> Any:
        return self.client.post(f"/fhir/Task/{task_id}/$activate", json=activation(jws),
                                headers=(who or self.gp).headers)

    def ready(self) -> tuple[str, str]:
        """A task activated with a prescription the GP signed: (id, access code)."""
        task_id, code, _ = self.create()
        answer = self.activate(task_id, sign(self.bundle(task_id), self.gp.key_pem,
                                             self.gp.chain))
        assert answer.status_code == 200, answer.text
        return task_id, code


def tampered(jws: str, change: Any) -> str:
    """The same signature over a changed payload."""
    header, payload, signature = jws.split(".")
    bundle = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    changed = change(copy.deepcopy(bundle))
    body = base64.urlsafe_b64encode(json.dumps(changed).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{signature}"
