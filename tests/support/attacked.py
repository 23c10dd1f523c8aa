"""A platform with real data and real callers for the attack suites (tests/security): a
physician who sees a patient's record (a grant) and published a signed document to it, the
patient with their app, and a registrar. Tokens live five minutes, so each caller's token is
minted again as needed."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from starlette.testclient import TestClient

from carevault.adapters.keys.local_file import create_key_file
from carevault.adapters.storage.database import connect, upgrade
from carevault.bootstrap import Platform, build
from carevault.services import directory as svc
from carevault.settings import Settings
from support.attacks import Known
from support.authorities import registrar_token
from support.builders import patient
from support.documents import FHIR_JSON, Pro, grant, provide_bundle, publish
from support.tokens import account_token, professional_token

PHYSICIAN = "HP-ATTACK-1"
TOKEN_REUSE_SECONDS = 120  # well inside the five minutes a token lives


class Minter:
    """A caller's bearer header, minted again before its token expires."""

    def __init__(self, mint: Callable[[], str]) -> None:
        self._mint = mint
        self._token = ""
        self._made = -1e9

    def fresh(self) -> str:
        """A token minted now."""
        self._made = -1e9
        return self()["Authorization"].removeprefix("Bearer ")

    def __call__(self) -> dict[str, str]:
        if time.monotonic() - self._made > TOKEN_REUSE_SECONDS:
            self._token, self._made = self._mint(), time.monotonic()
        return {"Authorization": f"Bearer {self._token}"}


@dataclass
class AttackedWorld:
    platform: Platform
    known: Known
    professional: Minter
    patient: Minter
    registrar: Minter


def seeded_settings(database_url: str, folder: Path, **overrides: object) -> Settings:
    key_file = folder / "keys" / "carevault.key"
    create_key_file(key_file)
    return Settings(  # type: ignore[call-arg]
        database_url=database_url, key_source=f"file:{key_file}", environment="dev",
        _env_file=None, rate_limit_per_minute=1_000_000,
        introspection_rate_per_minute=1_000_000, **overrides)


def seed(platform: Platform) -> AttackedWorld:
    """The data and callers of `World`, made the production way (`support`)."""
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        patient_id = svc.register_patients(uow, ctx, [patient(ctx.systems, 1)])[0].id
    physician = Pro(platform, PHYSICIAN)
    enrolment = platform.accounts.enrol_patient(
        "attacked.patient@example.lu", "correct horse battery staple 42", patient_id=patient_id)
    secret = urllib.parse.parse_qs(
        urllib.parse.urlparse(enrolment.totp_provisioning_uri).query)["secret"][0]
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    platform.accounts.confirm_totp(enrolment.account_id, pyotp.TOTP(secret).at(earlier),
                                   now=earlier)
    patient_app = Minter(lambda: account_token(platform, enrolment.account_id, patient_id))
    with TestClient(platform.app, base_url="http://127.0.0.1:8000") as client:
        grant(client, {**patient_app(), **FHIR_JSON}, patient_id, physician.id)
        published = publish(client, physician, provide_bundle(patient_id, physician))
        assert published.status_code == 200, published.text
    locations = [e["response"]["location"] for e in published.json()["entry"]]
    document = next(loc.split("/")[-3] for loc in locations if "/DocumentReference/" in loc)
    submission = next(loc.split("/")[-3] for loc in locations if "/List/" in loc)
    known = Known(
        ids={"Patient": patient_id, "Practitioner": physician.id, "DocumentReference": document,
             "Binary": document, "List": submission, "ValueSet": "xds-typecode"},
        query={"patient": f"Patient/{patient_id}", "practitioner": f"Practitioner/{physician.id}",
               "sourceIdentifier": f"{ctx.systems.national}|"
                                   + patient(ctx.systems, 1)["identifier"][0]["value"]},
    )
    return AttackedWorld(
        platform, known,
        professional=Minter(lambda: professional_token(platform, identifier=PHYSICIAN)),
        patient=patient_app,
        registrar=Minter(lambda: registrar_token(platform)),
    )


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackedWorld]:
    """The seeded platform on SQLite, shared by a module (a fixture: import it)."""
    folder = tmp_path_factory.mktemp("attacked")
    url = f"sqlite:///{folder / 'carevault.db'}"
    engine = connect(url)
    upgrade(engine)
    platform = build(seeded_settings(url, folder), engine)
    yield seed(platform)
    engine.dispose()
