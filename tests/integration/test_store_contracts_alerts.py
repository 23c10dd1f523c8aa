"""The fakes the security officer's services are unit-tested on answer as the real ones do: the
same checks run on the fakes and on the real stores, on SQLite and PostgreSQL.

* the directory facts the detector reads once per start (`FakeDirectoryStore`'s
  ``family_name_shares`` and ``professionals_as_patients``, beside `DirectoryStore`'s);
* the audit log the detector and the workspace read (`support.fake_audit_log.FakeAuditLog`,
  beside `AuditLog`): two streams with their own leaf indexes, the search newest first, the
  signed tree heads and their consistency proofs.

The alerts' store itself is checked in test_store_contracts.py (`check_alert_store`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import Engine

from carevault.adapters.keys.log_signer import Ed25519TreeHeadSigner
from carevault.adapters.storage.audit_database import AuditDatabase
from carevault.adapters.storage.audit_store import AuditStore
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.domain import merkle
from carevault.domain.audit import Agent, AuditRecord, rfc3339_ms
from carevault.domain.tree_head import signed_bytes
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import directory as svc
from carevault.services.audit_log import AuditLog
from carevault.services.directory import DirectoryContext
from support.builders import hospital, patient
from support.fake_audit_log import FakeAuditLog
from support.fake_directory import directory_context
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


# --- the directory facts ----------------------------------------------------------------------


def check_detector_directory_facts(units: Callable[[], Any], ctx: DirectoryContext) -> None:
    national_system = ctx.systems.national
    with units() as unit:
        assert unit.directory.family_name_shares(0.0005) == {}  # no patient yet
        assert unit.directory.professionals_as_patients(national_system) == {}
        [org] = svc.register_organizations(unit, ctx, [hospital(ctx.systems)])
    with units() as unit:
        nurse, other, namesake = svc.register_patients(unit, ctx, [
            patient(ctx.systems, 31, family="Hoffmann"), patient(ctx.systems, 32),
            patient(ctx.systems, 33, family="Hoffmann")])

    def national(stored: svc.Stored) -> str:
        return next(str(i["value"]) for i in stored.resource["identifier"]
                    if i["system"] == national_system)

    def bearing(identifier: str, number: str) -> dict[str, Any]:
        resource = new_practitioner(ctx.systems, identifier=identifier, family="Hoffmann",
                                    given=["Lea"])
        resource["identifier"].append({"system": national_system, "value": number})
        return resource

    with units() as unit:
        svc.register_professionals(unit, ctx, [
            svc.NewProfessional(bearing("HP-AT-WORK", national(nurse)), "nurse", None, org.id),
            # A professional with a role at no organization: a patient who works nowhere here.
            svc.NewProfessional(bearing("HP-NOWHERE", national(other)), "nurse"),
            # A national number no patient bears: nobody.
            svc.NewProfessional(bearing("HP-NOBODY", "1970010199999"), "nurse", None, org.id),
            svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-NOT-A-PATIENT",
                                                 family="Else", given=["Al"]), "nurse")])
    with units() as unit:
        assert unit.directory.professionals_as_patients(national_system) == {
            nurse.id: frozenset({org.id}), other.id: frozenset()}
        assert unit.directory.professionals_as_patients("urn:unknown") == {}
        shares = unit.directory.family_name_shares(0.0005)
        assert set(shares) == {"hoffmann"} and abs(shares["hoffmann"] - 2 / 3) < 1e-9
        # Two of three is under nine tenths: no name is that common.
        assert unit.directory.family_name_shares(0.9) == {}
        assert namesake.id not in unit.directory.professionals_as_patients(national_system)


def test_the_fake_directory_knows_the_detectors_facts() -> None:
    fake = FakeUnitOfWork()
    check_detector_directory_facts(lambda: fake, directory_context(lambda: NOW))


def test_the_real_directory_knows_the_detectors_facts(
        uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    check_detector_directory_facts(uow, ctx)


# --- the audit log ----------------------------------------------------------------------------


class _RealLog:
    """`AuditLog` on a database, appended to at chosen times (its clock is the test's), and
    with a head time-stamped as an RFC 3161 authority's answer would leave it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.now = NOW
        signers = {s: Ed25519TreeHeadSigner.derive(b"k" * 32, s) for s in ("clinical", "operator")}
        self.log = AuditLog(AuditDatabase(engine), dict(signers), lambda: self.now)

    def append(self, record: AuditRecord, at: datetime) -> int:
        self.now = at
        [index] = self.log.append([record])
        return index

    def stamp_latest_tree_head(self, stream: str) -> int | None:
        latest = self.log.stored_heads(stream)[0]
        assert latest is not None
        with self.engine.begin() as connection:
            AuditStore(connection).set_timestamp_token(stream, latest.tree_size, b"token")
        return latest.tree_size

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)


def _record(who: str | None, patient: str | None, at: datetime,
            stream: str = "clinical") -> AuditRecord:
    return AuditRecord(stream=stream, recorded=rfc3339_ms(at), kind="access", action="R",
                       interaction="read", outcome="0", agent=Agent(who=who, role="practitioner"),
                       patient=patient, entity_type="Patient", entity_id=patient)


def check_audit_log(log: Any) -> None:
    assert log.stored_heads("clinical") == (None, None, None)
    at = [NOW + timedelta(hours=h) for h in range(6)]
    appended = [
        log.append(_record("Practitioner/dr-1", "pat-1", at[0]), at[0]),
        log.append(_record("Practitioner/dr-2", "pat-1", at[1]), at[1]),
        log.append(_record("Practitioner/dr-1", "pat-2", at[2]), at[2]),
        log.append(_record(None, None, at[3]), at[3]),
        log.append(_record("operator:op", None, at[3], stream="operator"), at[3]),
        log.append(_record("Practitioner/dr-1", "pat-1", at[4]), at[4]),
    ]
    assert appended == [0, 1, 2, 3, 0, 4]  # each stream counts its own leaves
    assert log.size("clinical") == 5 and log.size("operator") == 1
    read = log.entries("clinical", 1, 3)
    assert [i for i, _ in read] == [1, 2]
    assert AuditRecord.from_canonical(read[0][1]).agent.who == "Practitioner/dr-2"
    assert [i for i, _ in log.entries("clinical", 3, 99)] == [3, 4]
    assert log.entries("clinical", 5, 10) == [] and log.entries("operator", 1, 5) == []
    [(_, data)] = log.entries("operator", 0, 1)
    assert AuditRecord.from_canonical(data).agent.who == "operator:op"

    def search(**criteria: Any) -> tuple[int, list[int]]:
        total, rows = log.search_entries("clinical", **criteria)
        return total, [i for i, _ in rows]

    assert search() == (5, [4, 3, 2, 1, 0])  # newest first
    assert search(patients=[("pat-1",)]) == (3, [4, 1, 0])
    assert search(patients=[("pat-1", "pat-2")], agents=[("Practitioner/dr-1",)]) == (
        3, [4, 2, 0])
    assert search(agents=[("Practitioner/dr-1",)], offset=1, count=1) == (3, [2])
    assert search(recorded=[("ge", at[1], at[1]), ("lt", at[3], at[3])]) == (2, [2, 1])
    assert search(patients=[("pat-9",)]) == (0, [])
    assert log.search_entries("operator", agents=[("operator:op",)])[0] == 1

    first = log.sign_tree_head("clinical")
    log.append(_record("Practitioner/dr-3", "pat-3", at[5]), at[5])
    second = log.sign_tree_head("clinical")
    assert (first.tree_size, second.tree_size) == (5, 6)
    assert log.sign_tree_head("clinical") == second  # that size is signed already
    assert log.latest_tree_head("clinical") == second
    latest, previous, stamped = log.stored_heads("clinical")
    assert latest is not None and previous is not None and stamped is None
    assert (latest.tree_size, previous.tree_size) == (6, 5)
    assert latest.root_hash == second.root_hash and previous.root_hash == first.root_hash
    key = load_pem_public_key(log.public_key_pem("clinical"))
    assert isinstance(key, Ed25519PublicKey)
    key.verify(latest.signature, signed_bytes(6, latest.root_hash, latest.timestamp_ms))
    merkle.verify_consistency(5, 6, log.consistency_proof("clinical", 5, 6), first.root_hash,
                              second.root_hash)
    with pytest.raises(merkle.ProofError):
        log.consistency_proof("clinical", 5, 7)
    assert log.stamp_latest_tree_head("clinical") == 6
    assert log.stored_heads("clinical")[2].tree_size == 6
    # A stream that has no head yet gets one signed when its latest is asked for.
    assert log.stored_heads("operator") == (None, None, None)
    assert log.latest_tree_head("operator").tree_size == 1
    assert log.stored_heads("operator")[0].tree_size == 1


def test_the_fake_audit_log() -> None:
    check_audit_log(FakeAuditLog())


@pytest.fixture
def real_log(engine: Engine) -> Iterator[_RealLog]:
    log = _RealLog(engine)
    yield log
    log.log.close()


def test_the_real_audit_log(real_log: _RealLog) -> None:
    check_audit_log(real_log)
