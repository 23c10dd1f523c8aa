"""The passkey store in memory with the accounts' passkeys besides the professionals'
(`PasskeyStore.add_for_account`, `account_passkey`, `of_account`, `account_passkey_used`,
`remove_account_passkey`): what services/account_passkeys.py and the passkey sign-in of
services/accounts.py use. `support.fake_uow.FakeUnitOfWork` builds its ``passkeys`` with it.

The two kinds live in two tables in the real store, each credential id once per table; a
challenge keeps the account it was opened for (`StoredChallenge.account_id`), which the fake
parent keeps already. tests/integration/test_store_contracts_passkeys.py runs the same checks
on this fake and on the real store.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from carevault.adapters.storage.passkey_store import AccountPasskey
from support.fake_uow import FakePasskeyStore


class FakeAccountPasskeyStore(FakePasskeyStore):
    """`PasskeyStore`, in memory, the accounts' passkeys included."""

    def __init__(self) -> None:
        super().__init__()
        self.account_rows: dict[str, AccountPasskey] = {}

    def add_for_account(self, passkey: AccountPasskey) -> None:
        if passkey.credential_id in self.account_rows:
            raise KeyError("an account's passkey is stored once")
        # What the real INSERT writes: never a last use.
        self.account_rows[passkey.credential_id] = replace(passkey, last_used_at=None)

    def account_passkey(self, credential_id: str) -> AccountPasskey | None:
        return self.account_rows.get(credential_id)

    def of_account(self, account_id: str) -> list[AccountPasskey]:
        return sorted((p for p in self.account_rows.values() if p.account_id == account_id),
                      key=lambda p: p.created_at)

    def account_passkey_used(self, credential_id: str, old_count: int, new_count: int,
                             at: datetime) -> bool:
        found = self.account_rows.get(credential_id)
        if found is None or found.sign_count != old_count:
            return False
        self.account_rows[credential_id] = replace(found, sign_count=new_count, last_used_at=at)
        return True

    def remove_account_passkey(self, account_id: str, credential_id: str) -> bool:
        found = self.account_rows.get(credential_id)
        if found is None or found.account_id != account_id:
            return False
        del self.account_rows[credential_id]
        return True
