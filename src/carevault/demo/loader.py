"""Loading the synthetic demo population through the same use cases as real registrations.

Batches keep memory flat and let ``executemany`` do the inserting: 100,000 patients load in
minutes. Each batch is one transaction, so an interrupted load leaves whole batches only, and
loading again is refused rather than duplicated (the organizations' identifiers are unique).
"""

from __future__ import annotations

import itertools
import json
import secrets
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from carevault.adapters.pki.credential_files import write_credentials
from carevault.adapters.security.totp import TotpAuthenticator
from carevault.demo import population
from carevault.domain.accounts import WeakPassword
from carevault.domain.authorization import Authority
from carevault.domain.directory import Identifier
from carevault.fhirmodel.directory import new_organization, new_patient, new_practitioner
from carevault.services import directory as svc
from carevault.services import pki
from carevault.services.accounts import AccountService
from carevault.services.authorities import register_authority
from carevault.services.unit_of_work import UnitOfWork

BATCH = 1000
T = TypeVar("T")


def local_id_system(organization_key: str) -> str:
    """The assigning authority of an organization's local patient numbers."""
    return f"https://carevault.lu/fhir/sid/local/{organization_key}"


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


@dataclass
class DemoSummary:
    organizations: int
    practitioners: int
    patients: int
    accounts: dict[str, Any]


def demo_loaded(unit_of_work: Callable[[], UnitOfWork]) -> bool:
    first = population.organizations()[0]
    with unit_of_work() as uow:
        return bool(uow.directory.organization_ids_by_identifier([first.identifier]))


def load(
    unit_of_work: Callable[[], UnitOfWork],
    ctx: svc.DirectoryContext,
    *,
    patients: int,
    professionals: int,
    seed: int,
    progress: Callable[[str, int], None] = lambda _task, _n: None,
) -> DemoSummary:
    organizations = population.organizations()
    org_resources = [
        new_organization(
            ctx.systems,
            identifier=o.identifier,
            name=o.name,
            kind=o.kind,
            patient_id_system=local_id_system(o.key) if o.kind == "hospital" else None,
            postal_code=o.postal_code,
            city=o.city,
        )
        for o in organizations
    ]
    with unit_of_work() as uow:
        stored_orgs = svc.register_organizations(uow, ctx, org_resources)
    org_ids = {o.key: s.id for o, s in zip(organizations, stored_orgs, strict=True)}
    progress("organizations", len(stored_orgs))

    accounts: dict[str, Any] = {"professionals": [], "patients": [], "authorities": []}
    # Hospitals feed the patient index with their own numbers and run the admission systems
    # whose encounters prove a care relationship; an operator registers both, as here.
    now = datetime.now(UTC)
    for organization in organizations:
        if organization.kind != "hospital":
            continue
        for kind in (Authority.IDENTITY_SOURCE, Authority.ADMISSION_SYSTEM):
            with unit_of_work() as uow:
                registered = register_authority(
                    uow, org_ids[organization.key], kind, by="demo", now=now
                )
            accounts["authorities"].append(
                {
                    "id": registered.id,
                    "organization_id": registered.organization_id,
                    "organization": organization.name,
                    "kind": kind.value,
                    "assigning_authority": registered.assigning_authority,
                }
            )
    wanted = {"physician": 2, "pharmacist": 1, "nurse": 1, "laboratory-biologist": 1}
    # An organization's first physician (identifier, id), for its system to act for.
    members: dict[str, tuple[str, str]] = {}
    for batch in _batches(population.practitioners(professionals, seed), BATCH):
        items = [
            svc.NewProfessional(
                practitioner=new_practitioner(
                    ctx.systems,
                    identifier=p.identifier,
                    family=p.family,
                    given=list(p.given),
                    gender=p.gender,
                ),
                profession=p.profession,
                specialty=p.specialty,
                organization_id=org_ids[p.organization_key] if p.organization_key else None,
            )
            for p in batch
        ]
        with unit_of_work() as uow:
            stored = svc.register_professionals(uow, ctx, items)
        for professional, (practitioner, _role) in zip(batch, stored, strict=True):
            if professional.organization_key and professional.profession == "physician":
                members.setdefault(
                    professional.organization_key, (professional.identifier, practitioner.id)
                )
            if wanted.get(professional.profession, 0) > 0:
                wanted[professional.profession] -= 1
                accounts["professionals"].append(
                    {
                        "practitioner_id": practitioner.id,
                        "identifier": professional.identifier,
                        "name": f"{' '.join(professional.given)} {professional.family}",
                        "profession": professional.profession,
                        "specialty": professional.specialty,
                        "organization": next(
                            (
                                o.name
                                for o in organizations
                                if o.key == professional.organization_key
                            ),
                            None,
                        ),
                    }
                )
        progress("professionals", len(batch))
    accounts["hospitals"] = [
        {
            "organization_id": org_ids[o.key],
            "identifier": o.identifier,
            "name": o.name,
            "patient_id_system": local_id_system(o.key),
            "member": members[o.key][0] if o.key in members else None,
            "member_id": members[o.key][1] if o.key in members else None,
        }
        for o in organizations
        if o.kind == "hospital"
    ]

    for people in _batches(population.patients(patients, seed), BATCH):
        resources = [
            new_patient(
                ctx.systems,
                national_id=p.national_id,
                family=p.family,
                given=list(p.given),
                birth_date=p.birth_date,
                gender=p.gender,
                postal_code=p.postal_code,
                city=p.city,
                line=p.street,
                phone=p.phone,
                local_ids=[Identifier(local_id_system(key), number) for key, number in p.local_ids],
            )
            for p in people
        ]
        with unit_of_work() as uow:
            stored_patients = svc.register_patients(uow, ctx, resources)
        for person, patient in zip(people, stored_patients, strict=True):
            if len(accounts["patients"]) < 3:
                accounts["patients"].append(
                    {
                        "patient_id": patient.id,
                        "national_id": person.national_id,
                        "name": f"{' '.join(person.given)} {person.family}",
                        "birth_date": person.birth_date.isoformat(),
                        "local_ids": [
                            {"system": local_id_system(k), "value": v} for k, v in person.local_ids
                        ],
                    }
                )
        progress("patients", len(people))

    with unit_of_work() as uow:
        counts = (
            uow.directory.count("Organization"),
            uow.directory.count("Practitioner"),
            uow.directory.count("Patient"),
        )
    return DemoSummary(*counts, accounts=accounts)


def write_accounts(path: Path, summary: DemoSummary, public_url: str) -> None:
    """Describe the demo people a newcomer can try, with ready-made queries on ``public_url``
    (the platform's public address)."""
    accounts = dict(summary.accounts)
    _link(accounts, public_url)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)  # it holds the demo patient's password
    _write(
        path,
        {
            "note": "Synthetic people: no real person is described here.",
            "counts": {
                "organizations": summary.organizations,
                "practitioners": summary.practitioners,
                "patients": summary.patients,
            },
            **accounts,
        },
    )


def relink_accounts(path: Path, public_url: str) -> bool:
    """Point the links of an existing accounts file at ``public_url`` (the demo data is loaded
    once, the platform may be served elsewhere later); False when there is no such file."""
    try:
        described = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    _link(described, public_url)
    _write(path, described)
    return True


def _link(accounts: dict[str, Any], public_url: str) -> None:
    """The ``try`` queries of each person and the demo patient's sign-in page."""
    fhir_base = f"{public_url}/fhir"
    for patient in accounts["patients"]:
        family = patient["name"].split()[-1]
        patient["try"] = [
            f"{fhir_base}/Patient?family={family}",
            f"{fhir_base}/Patient/{patient['patient_id']}",
        ]
        if "portal" in patient:
            patient["portal"]["sign_in"] = f"{public_url}/login"
    for professional in accounts["professionals"]:
        professional["try"] = [
            f"{fhir_base}/PractitionerRole?role={professional['profession']}"
            "&_include=PractitionerRole:practitioner",
            f"{fhir_base}/Practitioner/{professional['practitioner_id']}",
        ]


def _write(path: Path, described: dict[str, Any]) -> None:
    path.write_text(json.dumps(described, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


DEMO_LOGIN = "demo.patient@carevault.test"


def enrol_demo_patient(accounts: AccountService, patient: dict[str, Any]) -> None:
    """Give the first demo patient a portal account a newcomer can sign in with: a random
    password and a TOTP secret, written (with the recovery codes) into the accounts file (with
    the sign-in page, by `write_accounts`)."""
    while True:
        password = secrets.token_urlsafe(12)
        try:
            enrolment = accounts.enrol_patient(
                DEMO_LOGIN, password, patient_id=patient["patient_id"]
            )
            break
        except WeakPassword:
            continue  # a random draw that happens to look like a pattern: draw again
    query = urllib.parse.parse_qs(urllib.parse.urlparse(enrolment.totp_provisioning_uri).query)
    secret = query["secret"][0]
    # Confirm with the previous 30-second step's code (still within the window), so that the
    # current one is free for a sign-in. The confirmation happens, and is recorded, now: after
    # the account's creation, as the patient's access history tells it.
    now = datetime.now(UTC)
    totp = TotpAuthenticator()
    accounts.confirm_totp(
        enrolment.account_id, totp.code_at(secret, totp.step_at(now) - 1), now=now
    )
    patient["portal"] = {
        "login": DEMO_LOGIN,
        "password": password,
        "totp_secret": secret,
        "totp_uri": enrolment.totp_provisioning_uri,
        "recovery_codes": list(enrolment.recovery_codes),
        "how": "enter the secret in an authenticator app, or print the current code with "
        f".venv/bin/python -c \"import pyotp; print(pyotp.TOTP('{secret}').now())\"",
    }


def issue_demo_card(
    units: Callable[[], UnitOfWork],
    ctx: pki.PkiContext,
    professional: dict[str, Any],
    directory: Path,
) -> bool:
    """Give a demo physician a certificate (their "card") in ``directory``, so a newcomer can
    run the README's token snippet at once; False when the PKI is not initialized yet."""
    if directory.exists():
        return False

    def deliver(credentials: pki.Credentials) -> None:
        write_credentials(
            directory,
            credentials.record.certificate_pem,
            credentials.private_key_pem,
            credentials.chain_pem,
        )

    try:
        with units() as uow:
            record = pki.issue_practitioner_certificate(
                uow, ctx, professional["practitioner_id"], deliver
            )
    except pki.PkiNotInitialized:
        return False
    professional["card"] = {
        "directory": str(directory),
        "client_id": record.client_id,
        "serial": record.serial,
    }
    return True
