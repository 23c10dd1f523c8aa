"""Professionals sign in to the workspace with a passkey bound to their professional card.

The card is the platform certificate and its key (`carevault pki issue-practitioner`). Once, the
professional proves possession of that key (`carevault card enrol`): the command fetches a
single-use challenge, signs it in a client assertion (RFC 7523, the certificate chain in
``x5c``, as for a SMART token) and receives a short enrolment code. Typed in the browser, the
code opens the WebAuthn registration of a passkey, which is stored bound to that certificate.
From then on the passkey signs in; the session it opens stands on the certificate and the
licence: when the certificate is revoked or expires, or the licence is suspended, every session
of that professional ends at the next request (`PortalSessions.resume` asks `binding_problem`).

The WebAuthn ceremonies are `webauthn` (py_webauthn)'s: resident key and user verification
required, challenges from this server only, each used once. Mutual TLS at a proxy is the
documented alternative for sites whose workstations hold the card in the browser
(docs/workspace.md).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from webauthn import options_to_json
from webauthn.helpers import bytes_to_base64url

from carevault.adapters.storage.passkey_store import StoredChallenge, StoredPasskey
from carevault.domain.authorization import Subject
from carevault.domain.errors import NotAuthenticated
from carevault.services.passkey_ceremony import (
    PasskeyRefused,
    RelyingParty,
    challenge_hash,
    challenge_of,
    creation_options,
    credential_id_of,
    relying_party,
    request_options,
    verified_registration,
    verified_sign_count,
)
from carevault.services.record_policy import licensed, practitioner_subject
from carevault.services.tokens import (
    ASSERTION_TYPE,
    InvalidClient,
    TokenContext,
    authenticate_client,
)
from carevault.services.unit_of_work import UnitOfWork

CARD_ENROL_PATH = "/workspace/card/enrol"
CARD_CHALLENGE_LIFETIME = timedelta(minutes=5)
ENROLMENT_CODE_LIFETIME = timedelta(minutes=10)
CEREMONY_LIFETIME = timedelta(minutes=5)
ENROLMENT_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
ENROLMENT_CODE_LENGTH = 10


class CardRefused(NotAuthenticated):
    """The card proof does not hold: the assertion, its certificate, the licence or the
    challenge."""


@dataclass(frozen=True)
class EnrolmentCode:
    code: str
    expires_at: datetime
    practitioner_id: str
    certificate_serial: str


@dataclass(frozen=True)
class SignedIn:
    practitioner_id: str
    certificate_serial: str
    credential_id: str


def _normalized_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())[:32]


def binding_problem(
    uow: UnitOfWork, practitioner_id: str, certificate_serial: str | None, now: datetime
) -> str | None:
    """Why a professional's session (or passkey) no longer stands, or None: the card
    certificate revoked, expired or not this professional's, or the licence not active."""
    if certificate_serial is None:
        return "the session is bound to no card"
    record = uow.pki.certificate(certificate_serial)
    if record is None or record.practitioner_id != practitioner_id:
        return "the card certificate is not this professional's"
    if record.revoked_at is not None:
        return "the card certificate was revoked"
    if record.not_after <= now:
        return "the card certificate has expired"
    stored = uow.directory.practitioner(practitioner_id)
    if stored is None or not licensed(stored.resource):
        return "the professional's licence is not active"
    return None


class WorkspaceSignIn:
    """The card proof, the passkey's registration and the passkey sign-in."""

    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        tokens: TokenContext,
        party: RelyingParty,
        clock: Callable[[], datetime],
    ) -> None:
        self.units = units
        self.tokens = tokens
        self.party = party
        self.clock = clock
        self.card_audience = tokens.issuer.rstrip("/") + CARD_ENROL_PATH

    def describe(self, practitioner_id: str, acting_for: str | None = None) -> tuple[Subject, str]:
        """A signed-in professional as the engine sees them now (profession, organizations,
        teams), and their name as the directory has it. An assistant acts for the practitioner
        their session chose (``acting_for``) while that mandate is in force, else for nobody:
        the workspace never picks a mandator for them."""
        with self.units() as uow:
            subject = practitioner_subject(
                uow, practitioner_id, now=self.clock(), mandator_id=acting_for or ""
            )
            stored = uow.directory.practitioner(practitioner_id)
        name = _display_name(stored.resource if stored else {}) or practitioner_id
        return subject, name

    def name_of(self, practitioner_id: str) -> str:
        """A practitioner's name as the directory has it (their id if it has none)."""
        with self.units() as uow:
            stored = uow.directory.practitioner(practitioner_id)
        return _display_name(stored.resource if stored else {}) or practitioner_id

    # --- the card proof -----------------------------------------------------------------

    def card_challenge(self) -> str:
        """A fresh challenge for `carevault card enrol` to sign (5 minutes, once)."""
        challenge = secrets.token_urlsafe(32)
        self._store(challenge, "card", None, None, CARD_CHALLENGE_LIFETIME)
        return challenge

    def enrol_card(self, assertion: str) -> EnrolmentCode:
        """Check the card's signed assertion over a challenge of ours (aud: the enrolment
        endpoint; claim ``challenge``); the enrolment code for a passkey, 10 minutes, once."""
        now = self.clock()
        with self.units() as uow:
            try:
                client = authenticate_client(
                    uow,
                    self.tokens,
                    assertion_type=ASSERTION_TYPE,
                    assertion=assertion,
                    audiences=(self.card_audience,),
                )
            except InvalidClient as error:
                raise CardRefused(error.message) from None
            identity, claims = client.identity, client.claims
            if claims.get("aud") != self.card_audience:
                raise CardRefused(f"aud must be {self.card_audience}")
            if identity.kind != "practitioner" or identity.practitioner_id is None:
                raise CardRefused("only a professional's card enrols a passkey")
            challenge = claims.get("challenge")
            if not isinstance(challenge, str) or len(challenge) > 100:
                raise CardRefused("the assertion must carry the server's challenge")
            if uow.passkeys.take_challenge(challenge_hash(challenge), "card", now) is None:
                raise CardRefused("the challenge is unknown, used or expired: ask for a new one")
            code = "".join(
                secrets.choice(ENROLMENT_CODE_ALPHABET) for _ in range(ENROLMENT_CODE_LENGTH)
            )
            expires = now + ENROLMENT_CODE_LIFETIME
            uow.passkeys.add_challenge(
                StoredChallenge(
                    challenge_hash(code),
                    "enrolment",
                    identity.practitioner_id,
                    identity.serial,
                    expires,
                )
            )
            uow.commit()
        return EnrolmentCode(code, expires, identity.practitioner_id, identity.serial)

    # --- registration -------------------------------------------------------------------

    def registration_options(self, code: str) -> str:
        """The WebAuthn creation options for the holder of an enrolment code (used up)."""
        now = self.clock()
        with self.units() as uow:
            taken = uow.passkeys.take_challenge(
                challenge_hash(_normalized_code(code)), "enrolment", now
            )
            if taken is None or taken.practitioner_id is None:
                raise PasskeyRefused("this enrolment code is unknown, used or expired")
            practitioner_id = taken.practitioner_id
            problem = binding_problem(uow, practitioner_id, taken.certificate_serial, now)
            if problem is not None:
                raise PasskeyRefused(problem)
            stored = uow.directory.practitioner(practitioner_id)
            name = _display_name(stored.resource if stored else {}) or practitioner_id
            existing = uow.passkeys.of_practitioner(practitioner_id)
            options = creation_options(
                self.party, practitioner_id, name, (p.credential_id for p in existing)
            )
            uow.passkeys.add_challenge(
                StoredChallenge(
                    challenge_hash(bytes_to_base64url(options.challenge)),
                    "register",
                    practitioner_id,
                    taken.certificate_serial,
                    now + CEREMONY_LIFETIME,
                )
            )
            uow.commit()
        return options_to_json(options)

    def register(self, credential: str) -> SignedIn:
        """Verify the browser's new credential against our challenge; store the passkey bound
        to the enrolment's certificate."""
        now = self.clock()
        challenge = challenge_of(credential)
        with self.units() as uow:
            taken = uow.passkeys.take_challenge(challenge_hash(challenge), "register", now)
            if taken is None or taken.practitioner_id is None or not taken.certificate_serial:
                raise PasskeyRefused("this registration was not asked for, or is too late")
            verified = verified_registration(self.party, credential, challenge)
            credential_id = bytes_to_base64url(verified.credential_id)
            if uow.passkeys.get(credential_id) is not None:
                raise PasskeyRefused("this passkey is already enrolled")
            problem = binding_problem(uow, taken.practitioner_id, taken.certificate_serial, now)
            if problem is not None:
                raise PasskeyRefused(problem)
            uow.passkeys.add(
                StoredPasskey(
                    credential_id,
                    taken.practitioner_id,
                    taken.certificate_serial,
                    verified.credential_public_key,
                    verified.sign_count,
                    now,
                )
            )
            uow.commit()
        return SignedIn(taken.practitioner_id, taken.certificate_serial, credential_id)

    # --- sign-in ------------------------------------------------------------------------

    def sign_in_options(self) -> str:
        """WebAuthn request options for a discoverable passkey (the browser offers them)."""
        options = request_options(self.party)
        self._store(bytes_to_base64url(options.challenge), "signin", None, None, CEREMONY_LIFETIME)
        return options_to_json(options)

    def sign_in(self, credential: str) -> SignedIn:
        """Verify a passkey's assertion over our challenge; the passkey's card certificate and
        the licence must still hold."""
        now = self.clock()
        challenge = challenge_of(credential)
        credential_id = credential_id_of(credential)
        with self.units() as uow:
            if uow.passkeys.take_challenge(challenge_hash(challenge), "signin", now) is None:
                raise PasskeyRefused("this sign-in was not asked for, or is too late")
            passkey = uow.passkeys.get(credential_id)
            if passkey is None:
                raise PasskeyRefused("this passkey is not enrolled here")
            new_count = verified_sign_count(
                self.party, credential, challenge, passkey.public_key, passkey.sign_count
            )
            problem = binding_problem(uow, passkey.practitioner_id, passkey.certificate_serial, now)
            if problem is not None:
                uow.commit()  # the challenge stays used
                raise PasskeyRefused(problem)
            uow.passkeys.used(credential_id, new_count, now)
            uow.commit()
        return SignedIn(passkey.practitioner_id, passkey.certificate_serial, credential_id)

    def _store(
        self,
        challenge: str,
        purpose: str,
        practitioner_id: str | None,
        serial: str | None,
        lifetime: timedelta,
    ) -> None:
        with self.units() as uow:
            uow.passkeys.add_challenge(
                StoredChallenge(
                    challenge_hash(challenge),
                    purpose,
                    practitioner_id,
                    serial,
                    self.clock() + lifetime,
                )
            )
            uow.commit()


def _display_name(resource: dict[str, object]) -> str:
    names = resource.get("name")
    if not isinstance(names, list) or not names or not isinstance(names[0], dict):
        return ""
    name = names[0]
    given = name.get("given", [])
    parts = [*(given if isinstance(given, list) else []), name.get("family", "")]
    return " ".join(str(p) for p in parts if p)


__all__ = [
    "CARD_ENROL_PATH",
    "CardRefused",
    "EnrolmentCode",
    "PasskeyRefused",
    "RelyingParty",
    "SignedIn",
    "WorkspaceSignIn",
    "binding_problem",
    "relying_party",
]
