"""The fakes of `support.fake_accounts` and `support.fake_professionals` answer as the real
stores do: the same checks run on them and on the real ones (SQLite and PostgreSQL), as
tests/integration/test_store_contracts.py does for the other fakes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from carevault.adapters.storage.account_store import AccountRecord, Notification
from carevault.adapters.storage.oauth_store import IssuedToken
from carevault.adapters.storage.pki_store import CertificateRecord, StoredAuthority
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.domain.accounts import AccountKind, Mandate, ThrottleState
from carevault.domain.directory import MergeState
from carevault.domain.errors import BusinessRuleViolation
from carevault.domain.queries import Page, RoleQuery
from carevault.fhirmodel.directory import IdentitySystems, new_practitioner
from carevault.services import directory as svc
from carevault.services.directory import DirectoryContext
from support.builders import hospital, patient
from support.contracts import Reused
from support.fake_professionals import FakeProfessionalDirectory, professional_unit_of_work
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
_SYSTEMS = IdentitySystems("urn:test:national", "urn:test:hpd", "urn:test:organizations")


def _account(id: str, kind: AccountKind, login: str, patient_id: str | None = None,
             roles: frozenset[str] = frozenset()) -> AccountRecord:
    return AccountRecord(id=id, kind=kind, login=login, password_hash=f"hash-{id}",
                         totp_secret=b"\x01sealed-" + id.encode(), totp_last_step=None,
                         patient_id=patient_id, roles=roles, created_at=NOW)


# --- accounts -----------------------------------------------------------------------------------


def check_account_store(uow: Any, patient_id: str, other_id: str, national_id: str) -> None:
    anne = _account("acc-anne", AccountKind.PATIENT, "anne@example.lu", patient_id)
    rita = _account("acc-rita", AccountKind.REPRESENTATIVE, "rita@example.lu")
    otto = _account("acc-otto", AccountKind.OPERATOR, "otto", roles=frozenset({"registrar"}))
    codes = [bytes([i]) * 32 for i in range(3)]
    with uow:
        for account in (anne, rita, otto):
            uow.accounts.add(account)
        uow.accounts.add_recovery_codes(anne.id, codes)
        uow.accounts.add_recovery_codes(rita.id, [b"\x09" * 32])
        uow.commit()
    with uow:
        store = uow.accounts
        assert store.by_id(anne.id) == anne and store.by_id("nobody") is None
        assert store.by_login("rita@example.lu") == rita and store.by_login("RITA") is None
        assert store.by_patient(patient_id) == anne and store.by_patient(other_id) is None
        assert store.login_taken("otto") and not store.login_taken("olga")
        assert store.by_id(otto.id).roles == frozenset({"registrar"})
        assert store.patient_id_by_national_id(national_id) == patient_id
        assert store.patient_id_by_national_id("0000") is None
        # Accepting a TOTP step: only one after the last accepted.
        assert store.accept_totp_step(anne.id, 5)
        assert not store.accept_totp_step(anne.id, 5)
        assert not store.accept_totp_step(anne.id, 4)
        assert store.accept_totp_step(anne.id, 6)
        assert not store.accept_totp_step("nobody", 1)
        store.set_password_hash(anne.id, "hash-new")
        store.set_password_hash("nobody", "hash-new")
        # Recovery codes: each spent once, and only by its account.
        assert sorted(store.unused_recovery_codes(anne.id)) == codes
        assert store.unused_recovery_codes("nobody") == []
        assert store.use_recovery_code(anne.id, codes[1], NOW)
        assert not store.use_recovery_code(anne.id, codes[1], NOW)
        assert not store.use_recovery_code(anne.id, b"\x09" * 32, NOW)
        uow.commit()
    with uow:
        store = uow.accounts
        found = store.by_id(anne.id)
        assert (found.totp_last_step, found.password_hash, found.enrolled) == (6, "hash-new", True)
        assert sorted(store.unused_recovery_codes(anne.id)) == [codes[0], codes[2]]
        assert store.unused_recovery_codes(rita.id) == [b"\x09" * 32]
        store.accept_totp_step(rita.id, 1)  # not committed
        store.use_recovery_code(anne.id, codes[0], NOW)
    with uow:
        assert uow.accounts.by_id(rita.id).totp_last_step is None
        assert sorted(uow.accounts.unused_recovery_codes(anne.id)) == [codes[0], codes[2]]
    with uow:  # an account that breaks the rules is refused before it is written
        with pytest.raises(BusinessRuleViolation):
            uow.accounts.add(_account("acc-x", AccountKind.REPRESENTATIVE, "x@example.lu",
                                      patient_id=other_id))
        with pytest.raises(BusinessRuleViolation):
            uow.accounts.add(_account("acc-y", AccountKind.PATIENT, "y@example.lu",
                                      roles=frozenset({"registrar"})))
        assert uow.accounts.by_id("acc-x") is None and uow.accounts.by_id("acc-y") is None


def check_mandates_throttles_and_notifications(uow: Any, patient_id: str,
                                               other_id: str) -> None:
    rita = _account("acc-rita", AccountKind.REPRESENTATIVE, "rita@example.lu")
    later = NOW + timedelta(days=1)
    mandates = [Mandate("m-b", rita.id, other_id, "read", later, None),
                Mandate("m-c", rita.id, patient_id, "manage", NOW, later),
                Mandate("m-a", rita.id, patient_id, "read", NOW, None)]
    with uow:
        uow.accounts.add(rita)
        for mandate in mandates:
            uow.accounts.add_mandate(mandate, NOW)
        uow.commit()
    with uow:
        store = uow.accounts
        assert [m.id for m in store.mandates_of(rita.id)] == ["m-a", "m-c", "m-b"]
        assert store.mandates_of(rita.id)[1] == mandates[1]
        assert store.mandates_of("nobody") == []
        # Throttles: created when first locked, saved only where they exist.
        assert store.lock_throttle_states(["k2", "k1", "k2"]) == {
            "k1": ThrottleState(), "k2": ThrottleState()}
        locked = ThrottleState(3, later, NOW)
        store.save_throttle_state("k1", locked)
        store.save_throttle_state("k-never-locked", locked)
        uow.commit()
    with uow:
        store = uow.accounts
        assert store.lock_throttle_states(["k1", "k-never-locked"]) == {
            "k1": locked, "k-never-locked": ThrottleState()}
        store.save_throttle_state("k1", ThrottleState())  # not committed
    with uow:
        assert uow.accounts.lock_throttle_states(["k1"]) == {"k1": locked}
        # Notifications: the payload comes back as JSON, oldest first, then by id.
        for id, at in (("n-2", later), ("n-3", NOW), ("n-1", later)):
            uow.accounts.add_notification(Notification(
                id, rita.id, patient_id, "account-locked", at,
                {"failures": 3, "until": None, "steps": (1, 2)}))
        uow.commit()
    with uow:
        found = uow.accounts.notifications_of(rita.id)
        assert [n.id for n in found] == ["n-3", "n-1", "n-2"]
        assert found[0] == Notification("n-3", rita.id, patient_id, "account-locked", NOW,
                                        {"failures": 3, "until": None, "steps": [1, 2]})
        assert uow.accounts.notifications_of("nobody") == []


def _national(ctx: DirectoryContext, stored: Any) -> str:
    return str(next(i["value"] for i in stored.resource["identifier"]
                    if i["system"] == ctx.systems.national))


def test_the_fake_account_store() -> None:
    fake = FakeUnitOfWork()
    fake.accounts.national_ids["1980041200017"] = "pat-1"
    check_account_store(fake, "pat-1", "pat-2", "1980041200017")


def test_the_fake_account_stores_mandates_throttles_and_notifications() -> None:
    check_mandates_throttles_and_notifications(FakeUnitOfWork(), "pat-1", "pat-2")


def test_the_real_account_store(uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    with uow() as unit:
        one, two = svc.register_patients(unit, ctx, [patient(ctx.systems, 1),
                                                     patient(ctx.systems, 2)])
    check_account_store(Reused(uow), one.id, two.id, _national(ctx, one))


def test_the_real_account_stores_mandates_throttles_and_notifications(
        uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    with uow() as unit:
        one, two = svc.register_patients(unit, ctx, [patient(ctx.systems, 1),
                                                     patient(ctx.systems, 2)])
    check_mandates_throttles_and_notifications(Reused(uow), one.id, two.id)


# --- the PKI and OAuth ---------------------------------------------------------------------------


def _certificate(serial: str, client_id: str) -> CertificateRecord:
    return CertificateRecord(serial, client_id, "practitioner", "pr-1", None, f"CN={client_id}",
                             NOW, NOW + timedelta(days=365), f"PEM {serial}")


def check_pki_and_oauth_stores(uow: Any) -> None:
    authorities = [StoredAuthority("root", "root PEM", "sealed root", NOW),
                   StoredAuthority("issuing", "issuing PEM", "sealed issuing", NOW)]
    expires = NOW + timedelta(minutes=6)
    with uow:
        assert uow.pki.authorities() == {}
        assert uow.pki.add_authorities(authorities)
        uow.pki.add_certificate(_certificate("a1", "HP-1"))
        uow.pki.add_certificate(_certificate("b2", "HP-2"))
        assert uow.oauth.use_assertion("HP-1", "jti-1", expires)
        assert not uow.oauth.use_assertion("HP-1", "jti-1", expires)  # a replay
        assert uow.oauth.use_assertion("HP-2", "jti-1", expires)  # another client's
        uow.oauth.save_token(IssuedToken("t1", "HP-1", "a1", "Practitioner/pr-1",
                                         "system/*.rs", NOW, expires, None, None))
        uow.oauth.save_token(IssuedToken("t2", "app-1", None, "account:acc-1",
                                         "patient/*.rs", NOW, expires, None, None))
        # Another app of the same account, one already expired, and another account's.
        for jti, subject, until in (("t3", "account:acc-1", expires),
                                    ("t4", "account:acc-1", NOW - timedelta(minutes=1)),
                                    ("t5", "account:acc-2", expires)):
            uow.oauth.save_token(IssuedToken(jti, "app-1", None, subject, "patient/*.rs",
                                             NOW - timedelta(minutes=7), until, None, None))
        uow.commit()
    with uow:
        assert uow.pki.authorities() == {a.name: a for a in authorities}
        assert uow.pki.certificate("a1") == _certificate("a1", "HP-1")
        assert uow.pki.certificate("nope") is None
        assert not uow.oauth.use_assertion("HP-1", "jti-1", expires)  # committed
        assert uow.oauth.token("t1") == IssuedToken("t1", "HP-1", "a1", "Practitioner/pr-1",
                                                    "system/*.rs", NOW, expires, None, None)
        assert uow.oauth.token("nope") is None
        assert uow.pki.revoke("a1", NOW, "keyCompromise")
        assert not uow.pki.revoke("a1", NOW, "keyCompromise")
        assert not uow.pki.revoke("nope", NOW, "keyCompromise")
        assert uow.oauth.revoke("t2", NOW)
        assert not uow.oauth.revoke("t2", NOW)
        assert not uow.oauth.revoke("nope", NOW)
        # An account's tokens still in force, all at once (t2 is already revoked, t4 over).
        assert uow.oauth.revoke_subject("account:acc-1", NOW) == 1
        assert uow.oauth.revoke_subject("account:acc-1", NOW) == 0
        assert uow.oauth.token("t3").revoked_at == NOW
        assert uow.oauth.token("t4").revoked_at is None
        assert uow.oauth.token("t5").revoked_at is None
        uow.commit()
    with uow:
        # The certificate's revocation shows on the token issued under it.
        assert uow.oauth.token("t1").certificate_revoked_at == NOW
        assert uow.oauth.token("t1").revoked_at is None
        assert (uow.oauth.token("t2").revoked_at, uow.oauth.token("t2").certificate_revoked_at
                ) == (NOW, None)
        revoked = uow.pki.certificate("a1")
        assert (revoked.revoked_at, revoked.revocation_reason) == (NOW, "keyCompromise")
        uow.oauth.revoke("t1", NOW)  # not committed
        uow.pki.revoke("b2", NOW, "superseded")
        uow.oauth.use_assertion("HP-1", "jti-2", expires)
    with uow:
        assert uow.oauth.token("t1").revoked_at is None
        assert uow.pki.certificate("b2").revoked_at is None
        assert uow.oauth.use_assertion("HP-1", "jti-2", expires)
        # The authorities are stored once (the transaction is then spent: not committed).
        assert not uow.pki.add_authorities(authorities)


def test_the_fake_pki_and_oauth_stores() -> None:
    check_pki_and_oauth_stores(FakeUnitOfWork())


def test_the_real_pki_and_oauth_stores(uow: Callable[[], SqlUnitOfWork]) -> None:
    check_pki_and_oauth_stores(Reused(uow))


# --- what these services read of the directory ---------------------------------------------------


def check_professional_directory(uow: Any, practitioner: str, outsider: str, organization: str,
                                 patient_id: str, merged_id: str) -> None:
    with uow:
        directory = uow.directory
        found = directory.practitioner(practitioner)
        assert found is not None and found.id == practitioner
        assert found.resource["active"] is True
        assert found.resource["identifier"][0]["value"] == "HP-C1"
        assert directory.practitioner("nobody") is None
        assert directory.read("Practitioner", practitioner).resource == found.resource
        assert directory.read("Practitioner", "nobody") is None

        def roles(who: str, where: str | None = None, active: bool | None = True) -> int:
            query = RoleQuery(practitioner=[(who,)], active=active,
                              organization=[(where,)] if where else [])
            return int(directory.search_roles(query, Page(0, 1)).total)

        assert roles(practitioner, organization) == 1
        assert roles(practitioner) == 1
        assert roles(outsider, organization) == 0 and roles(outsider) == 1
        assert roles(practitioner, organization, active=False) == 0
        assert roles("nobody") == 0
        with_org = directory.search_roles(RoleQuery(practitioner=[(practitioner,)]), Page(0, 5))
        assert with_org.items[0].resource["organization"]["reference"] == (
            f"Organization/{organization}")
        assert directory.patient_merge_state(patient_id) == MergeState(patient_id, None)
        assert directory.patient_merge_state(merged_id) == MergeState(merged_id, patient_id)
        assert directory.patient_merge_state("nobody") is None


def test_the_fake_professional_directory() -> None:
    fake = professional_unit_of_work()
    directory = fake.directory
    assert isinstance(directory, FakeProfessionalDirectory)
    directory.add_professional("pr-1", new_practitioner(
        _SYSTEMS, identifier="HP-C1", family="Tester", given=["Theo"]))
    directory.add_professional("pr-2", new_practitioner(
        _SYSTEMS, identifier="HP-C2", family="Other", given=["Olga"]))
    directory.add_role("role-1", "pr-1", "org-1")
    directory.add_role("role-2", "pr-2", None)
    directory.add_patient("pat-1", [])
    directory.add_patient("pat-2", [])
    directory.merge("pat-2", "pat-1")
    check_professional_directory(fake, "pr-1", "pr-2", "org-1", "pat-1", "pat-2")


def test_the_real_professional_directory(uow: Callable[[], SqlUnitOfWork],
                                         ctx: DirectoryContext) -> None:
    with uow() as unit:
        [org] = svc.register_organizations(unit, ctx, [hospital(ctx.systems)])
        one, two = svc.register_patients(unit, ctx, [patient(ctx.systems, 1),
                                                     patient(ctx.systems, 2)])
    with uow() as unit:
        svc.register_professionals(unit, ctx, [
            svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-C1",
                                                 family="Tester", given=["Theo"]),
                                "nurse", None, org.id),
            svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-C2",
                                                 family="Other", given=["Olga"]), "nurse")])
        unit.commit()
    with uow() as unit:
        ids = unit.directory.practitioner_ids_by_identifier(["HP-C1", "HP-C2"])
    with uow() as unit:
        svc.merge_patients(unit, ctx, two.id, one.id)
        unit.commit()
    check_professional_directory(Reused(uow), ids["HP-C1"], ids["HP-C2"], org.id, one.id,
                                 two.id)
