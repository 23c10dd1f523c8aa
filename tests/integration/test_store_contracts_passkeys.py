"""The accounts' passkeys of `support.fake_passkeys`, the challenges' account, and the revoked
certificates a CRL lists (`support.fake_accounts.FakePkiStore.revoked_unexpired`) answer as the
real stores do: the same checks on the fake and on the real ones (SQLite and PostgreSQL), as
tests/integration/test_store_contracts_accounts.py does for the accounts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from carevault.adapters.storage.passkey_store import (
    AccountPasskey,
    StoredChallenge,
    StoredPasskey,
)
from carevault.adapters.storage.pki_store import CertificateRecord
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from support.contracts import Reused
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def check_account_passkeys(uow: Any) -> None:
    later = NOW + timedelta(minutes=5)
    anne_phone = AccountPasskey("cred-a1", "acc-anne", b"cose a1", 0, NOW + timedelta(seconds=2))
    anne_laptop = AccountPasskey("cred-a2", "acc-anne", b"cose a2", 3, NOW)
    rita_key = AccountPasskey("cred-r1", "acc-rita", b"cose r1", 0, NOW)
    with uow:
        for passkey in (anne_phone, anne_laptop, rita_key):
            uow.passkeys.add_for_account(passkey)
        # A professional's passkey is another table: its credential id names no account's.
        uow.passkeys.add(StoredPasskey("cred-p1", "pr-1", "ab12", b"cose p1", 0, NOW))
        uow.passkeys.add_challenge(StoredChallenge("h-reg", "account-register", None, None,
                                                   later, account_id="acc-anne"))
        uow.passkeys.add_challenge(StoredChallenge("h-in", "account-signin", None, None, later))
        uow.commit()
    with uow:
        store = uow.passkeys
        assert store.account_passkey("cred-a1") == anne_phone
        assert store.account_passkey("cred-p1") is None and store.get("cred-a1") is None
        assert store.account_passkey("nope") is None
        assert store.of_account("acc-anne") == [anne_laptop, anne_phone]  # oldest first
        assert store.of_account("nobody") == []
        # The challenge keeps the account it was opened for, and is taken once.
        assert store.take_challenge("h-reg", "account-signin", NOW) is None
        taken = store.take_challenge("h-reg", "account-register", NOW)
        assert (taken.account_id, taken.purpose, taken.used_at) == (
            "acc-anne", "account-register", NOW)
        assert store.take_challenge("h-reg", "account-register", NOW) is None
        assert store.take_challenge("h-in", "account-signin", NOW).account_id is None
        # The counter moves only from the count the sign-in read.
        assert not store.account_passkey_used("cred-a2", 2, 4, NOW)
        assert store.account_passkey_used("cred-a2", 3, 4, later)
        assert not store.account_passkey_used("cred-a2", 3, 5, later)  # a replay, raced
        assert not store.account_passkey_used("nope", 0, 1, later)
        # Only the account's own passkey is removed.
        assert not store.remove_account_passkey("acc-rita", "cred-a1")
        assert not store.remove_account_passkey("acc-anne", "nope")
        assert store.remove_account_passkey("acc-rita", "cred-r1")
        assert not store.remove_account_passkey("acc-rita", "cred-r1")
        uow.commit()
    with uow:
        store = uow.passkeys
        moved = store.account_passkey("cred-a2")
        assert (moved.sign_count, moved.last_used_at) == (4, later)
        assert store.account_passkey("cred-a1").last_used_at is None
        assert store.of_account("acc-rita") == []
        assert store.account_passkey("cred-a1") == anne_phone
        # Not committed: put back when the block ends.
        store.remove_account_passkey("acc-anne", "cred-a1")
        store.account_passkey_used("cred-a2", 4, 9, later)
        store.add_for_account(AccountPasskey("cred-x", "acc-anne", b"x", 0, NOW))
    with uow:
        store = uow.passkeys
        assert [p.credential_id for p in store.of_account("acc-anne")] == ["cred-a2", "cred-a1"]
        assert store.account_passkey("cred-a2").sign_count == 4
        assert store.account_passkey("cred-x") is None


def _certificate(serial: str, *, days: int = 365) -> CertificateRecord:
    return CertificateRecord(serial, f"HP-{serial}", "practitioner", "pr-1", None,
                             f"CN={serial}", NOW - timedelta(days=400),
                             NOW + timedelta(days=days), f"PEM {serial}")


def check_revoked_unexpired(uow: Any) -> None:
    with uow:
        for serial, days in (("0b", 365), ("0a", 365), ("0c", 365), ("0d", -1), ("0e", 365)):
            uow.pki.add_certificate(_certificate(serial, days=days))
        uow.commit()
    with uow:
        assert uow.pki.revoked_unexpired(NOW) == []
        assert uow.pki.revoke("0b", NOW, "keyCompromise")
        assert uow.pki.revoke("0a", NOW, "superseded")
        assert uow.pki.revoke("0c", NOW - timedelta(hours=1), "cessationOfOperation")
        assert uow.pki.revoke("0d", NOW - timedelta(days=3), "keyCompromise")  # expired since
        uow.commit()
    with uow:
        found = uow.pki.revoked_unexpired(NOW)
        # By revocation time, then serial; the expired one is not listed, the unrevoked neither.
        assert [c.serial for c in found] == ["0c", "0a", "0b"]
        assert (found[0].revoked_at, found[0].revocation_reason) == (
            NOW - timedelta(hours=1), "cessationOfOperation")
        # Listed while it would still be valid, not at its very end.
        assert [c.serial for c in uow.pki.revoked_unexpired(NOW + timedelta(days=365))] == []
        assert [c.serial for c in uow.pki.revoked_unexpired(NOW - timedelta(days=2))] == [
            "0d", "0c", "0a", "0b"]


def test_the_fake_account_passkeys() -> None:
    check_account_passkeys(FakeUnitOfWork())


def test_the_real_account_passkeys(uow: Callable[[], SqlUnitOfWork]) -> None:
    check_account_passkeys(Reused(uow))


def test_the_fake_pkis_revoked_certificates() -> None:
    check_revoked_unexpired(FakeUnitOfWork())


def test_the_real_pkis_revoked_certificates(uow: Callable[[], SqlUnitOfWork]) -> None:
    check_revoked_unexpired(Reused(uow))
