"""A patient's or representative's passkeys: a second factor besides the TOTP code.

A signed-in person registers a passkey (WebAuthn: a discoverable credential, user
verification required, challenges from this server only, each used once) and can remove it.
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

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from carevault.adapters.storage.passkey_store import AccountPasskey, StoredChallenge
from carevault.adapters.storage.unit_of_work import UnitOfWork
from carevault.domain.audit import ACTION_CREATE, ACTION_DELETE
from carevault.domain.errors import NotFound
from carevault.services.accounts import AuditAppender, authentication_record
from carevault.services.passkey_ceremony import (
    CEREMONY_TIMEOUT_MS,
    PasskeyRefused,
    RelyingParty,
    challenge_hash,
    challenge_of,
    unb64,
)

CEREMONY_LIFETIME = timedelta(minutes=5)
MAX_PASSKEYS = 10  # per account: a phone, a laptop, a security key or two, and spares
REGISTER = "account-register"
SIGN_IN = "account-signin"
PASSKEY = "passkey"  # the second factor's name in the sign-in's audit entry


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

    def registration_options(self, account_id: str) -> str:
        """The WebAuthn creation options for a signed-in account (its passkeys excluded)."""
        now = self.clock()
        with self.units() as uow:
            account = uow.accounts.by_id(account_id)
            if account is None or account.disabled_at is not None:
                raise PasskeyRefused("this account cannot add a passkey")
            existing = uow.passkeys.of_account(account_id)
            if len(existing) >= MAX_PASSKEYS:
                raise PasskeyRefused(f"an account holds at most {MAX_PASSKEYS} passkeys")
            options = generate_registration_options(
                rp_id=self.party.id,
                rp_name=self.party.name,
                user_id=account_id.encode("utf-8"),
                user_name=account.login,
                user_display_name=account.login,
                timeout=CEREMONY_TIMEOUT_MS,
                authenticator_selection=AuthenticatorSelectionCriteria(
                    resident_key=ResidentKeyRequirement.REQUIRED,
                    user_verification=UserVerificationRequirement.REQUIRED,
                ),
                exclude_credentials=[
                    PublicKeyCredentialDescriptor(id=unb64(p.credential_id)) for p in existing
                ],
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
            try:
                verified = verify_registration_response(
                    credential=credential,
                    expected_challenge=unb64(challenge),
                    expected_rp_id=self.party.id,
                    expected_origin=list(self.party.origins),
                    require_user_verification=True,
                )
            except (WebAuthnException, ValueError, TypeError, KeyError) as error:
                raise PasskeyRefused(f"the passkey does not verify: {error}") from None
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
            uow.commit()
        return passkey

    def remove(self, account_id: str, credential_id: str, client_ip: str | None) -> None:
        """Remove one of the account's own passkeys (another's is not found)."""
        now = self.clock()
        with self.units() as uow:
            account = uow.accounts.by_id(account_id)
            if account is None or not uow.passkeys.remove_account_passkey(
                account_id, credential_id[:700]
            ):
                raise NotFound("no such passkey on this account")
            record = authentication_record(
                account, "passkey-remove", ACTION_DELETE, "0", now, client_ip
            )
            self.audit.append_with(uow.audit, [record])
            uow.commit()

    # --- signing in -----------------------------------------------------------------------

    def sign_in_options(self) -> str:
        """WebAuthn request options for a discoverable passkey (the browser offers those it
        holds for this site); the challenge is kept, to be taken by the sign-in."""
        options = generate_authentication_options(
            rp_id=self.party.id,
            timeout=CEREMONY_TIMEOUT_MS,
            user_verification=UserVerificationRequirement.REQUIRED,
        )
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
        challenge = challenge_of(credential)
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=unb64(challenge),
                expected_rp_id=self.party.id,
                expected_origin=list(self.party.origins),
                credential_public_key=passkey.public_key,
                credential_current_sign_count=passkey.sign_count,
                require_user_verification=True,
            )
        except (WebAuthnException, ValueError, TypeError, KeyError) as error:
            raise PasskeyRefused(f"the passkey does not verify: {error}") from None
        return int(verified.new_sign_count)


__all__ = ["MAX_PASSKEYS", "PASSKEY", "AccountPasskeys"]
