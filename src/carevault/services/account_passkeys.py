"""A patient's or representative's passkeys: a second factor besides the TOTP code.

A signed-in person who has typed their password again registers a passkey (WebAuthn: a
discoverable credential, user verification required, challenges from this server only, each
used once) and can remove it.
Signing in with one is `AccountService.login`: the passkey's assertion stands where the TOTP
code would, checked with the password in the same attempt, so that no answer tells whether the
password alone was right. This module verifies that assertion (`AccountPasskeys.verify`); the
sign-in takes the challenge and moves the counter in its own transaction, so that an assertion
works once.

Adding and removing a passkey are recorded in the person's audit stream, like every change to
how they sign in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from webauthn import options_to_json
from webauthn.helpers import bytes_to_base64url

from carevault.adapters.storage.passkey_store import AccountPasskey, StoredChallenge
from carevault.domain.accounts import Reauthenticated
from carevault.domain.audit import ACTION_CREATE, ACTION_DELETE
from carevault.domain.errors import NotFound
from carevault.services.accounts import (
    SIGN_IN,
    AuditAppender,
    authentication_record,
    notify_holder,
)
from carevault.services.passkey_ceremony import (
    MAX_CREDENTIAL_ID,
    PasskeyRefused,
    RelyingParty,
    challenge_hash,
    challenge_of,
    creation_options,
    request_options,
    verified_registration,
    verified_sign_count,
)
from carevault.services.unit_of_work import UnitOfWork

CEREMONY_LIFETIME = timedelta(minutes=5)
# How long a typed password vouches for a passkey's registration options (a moment: the
# options are asked for right after it).
REAUTHENTICATION_LIFETIME = timedelta(minutes=1)
MAX_PASSKEYS = 10  # per account: a phone, a laptop, a security key or two, and spares
REGISTER = "account-register"


class AccountPasskeys:
    """Registering, listing and removing an account's passkeys, and checking an assertion."""

    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        audit: AuditAppender,
        party: RelyingParty,
        clock: Callable[[], datetime],
    ) -> None:
        self.units = units
        self.audit = audit
        self.party = party
        self.clock = clock

    def of_account(self, account_id: str) -> list[AccountPasskey]:
        with self.units() as uow:
            return uow.passkeys.of_account(account_id)

    # --- registration ---------------------------------------------------------------------

    def registration_options(self, confirmed: Reauthenticated) -> str:
        """The WebAuthn creation options for a signed-in account whose holder has just typed
        their password again (`AccountService.confirm_password`), its passkeys excluded: the
        challenge they carry is what `register` requires, so no passkey is added without it."""
        now = self.clock()
        if not confirmed.at <= now < confirmed.at + REAUTHENTICATION_LIFETIME:
            raise PasskeyRefused("the password was confirmed too long ago: type it again")
        account_id = confirmed.account_id
        with self.units() as uow:
            account = uow.accounts.by_id(account_id)
            if account is None or account.disabled_at is not None:
                raise PasskeyRefused("this account cannot add a passkey")
            existing = uow.passkeys.of_account(account_id)
            if len(existing) >= MAX_PASSKEYS:
                raise PasskeyRefused(f"an account holds at most {MAX_PASSKEYS} passkeys")
            options = creation_options(
                self.party, account_id, account.login, (p.credential_id for p in existing)
            )
            uow.passkeys.add_challenge(
                StoredChallenge(
                    challenge_hash(bytes_to_base64url(options.challenge)),
                    REGISTER,
                    None,
                    None,
                    now + CEREMONY_LIFETIME,
                    account_id=account_id,
                )
            )
            uow.commit()
        return options_to_json(options)

    def register(self, account_id: str, credential: str, client_ip: str | None) -> AccountPasskey:
        """Verify the browser's new credential against the challenge issued to this very
        account; store it, and record the change."""
        now = self.clock()
        challenge = challenge_of(credential)
        with self.units() as uow:
            taken = uow.passkeys.take_challenge(challenge_hash(challenge), REGISTER, now)
            if taken is None or taken.account_id != account_id:
                raise PasskeyRefused("this registration was not asked for, or is too late")
            account = uow.accounts.by_id(account_id)
            if account is None or account.disabled_at is not None:
                raise PasskeyRefused("this account cannot add a passkey")
            verified = verified_registration(self.party, credential, challenge)
            credential_id = bytes_to_base64url(verified.credential_id)
            taken_elsewhere = uow.passkeys.get(credential_id) is not None
            if taken_elsewhere or uow.passkeys.account_passkey(credential_id) is not None:
                raise PasskeyRefused("this passkey is already enrolled")
            passkey = AccountPasskey(
                credential_id, account_id, verified.credential_public_key, verified.sign_count, now
            )
            uow.passkeys.add_for_account(passkey)
            record = authentication_record(
                account, "passkey-add", ACTION_CREATE, "0", now, client_ip
            )
            self.audit.append_with(uow.audit, [record])
            notify_holder(uow, account, "passkey-added", now)
            uow.commit()
        return passkey

    def remove(self, account_id: str, credential_id: str, client_ip: str | None) -> None:
        """Remove one of the account's own passkeys (another's is not found)."""
        now = self.clock()
        with self.units() as uow:
            account = uow.accounts.by_id(account_id)
            if account is None or not uow.passkeys.remove_account_passkey(
                account_id, credential_id[:MAX_CREDENTIAL_ID]
            ):
                raise NotFound("no such passkey on this account")
            record = authentication_record(
                account, "passkey-remove", ACTION_DELETE, "0", now, client_ip
            )
            self.audit.append_with(uow.audit, [record])
            notify_holder(uow, account, "passkey-removed", now)
            uow.commit()

    # --- signing in -----------------------------------------------------------------------

    def sign_in_options(self) -> str:
        """WebAuthn request options for a discoverable passkey (the browser offers those it
        holds for this site); the challenge is kept, to be taken by the sign-in."""
        options = request_options(self.party)
        with self.units() as uow:
            uow.passkeys.add_challenge(
                StoredChallenge(
                    challenge_hash(bytes_to_base64url(options.challenge)),
                    SIGN_IN,
                    None,
                    None,
                    self.clock() + CEREMONY_LIFETIME,
                )
            )
            uow.commit()
        return options_to_json(options)

    def verify(self, credential: str, passkey: AccountPasskey) -> int:
        """Check an assertion of ``passkey`` over the challenge it claims (the sign-in then
        takes that challenge: one of ours, unused, unexpired); its new signature counter."""
        return verified_sign_count(
            self.party, credential, challenge_of(credential), passkey.public_key, passkey.sign_count
        )


__all__ = ["MAX_PASSKEYS", "AccountPasskeys"]
