"""A professional's own mailbox over the HTTP API: list, fetch and delete the (encrypted)
messages delivered to them, with their SMART access token.

The messages are the ones the submission server delivered (`carevault.services.messaging`),
in the same Maildirs Dovecot serves over IMAP. The platform hands them back exactly as they
were delivered: S/MIME it cannot decrypt. Only the mailbox's owner reaches it, with their own
card's token (`owner_of_token`); the mailbox is found from the token, never named by the
caller, so that no request can name another's.

Errors: `NotAuthenticated` for no usable token, `NotMailboxOwner` (a `NotPermitted`) for a
valid token that is not a professional's own (a patient's, an operator's, a system acting for
a professional) or whose scopes do not read ``Communication``, `NotFound` for a message the
mailbox does not hold.
"""

from __future__ import annotations

import email.policy
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesParser
from typing import Protocol

from carevault.adapters.messaging import smime
from carevault.adapters.messaging.maildir import StoredMessage
from carevault.domain.errors import BusinessRuleViolation, InvalidInput, NotFound, NotPermitted
from carevault.domain.messaging import address_of, message_digest
from carevault.domain.scopes import permits
from carevault.services.messaging import MessagingContext, active_practitioner
from carevault.services.tokens import TokenContext, authenticate
from carevault.services.unit_of_work import UnitOfWork

__all__ = [
    "MAILBOX_SCOPE",
    "Fetched",
    "MailboxOwner",
    "MailboxService",
    "NotMailboxOwner",
    "StoredMessage",
]

# The SMART scope a token needs to reach its owner's mailbox: reading Communication (FHIR's
# resource for a message between people) - `system/Communication.r`, or `system/*.rs` that
# every professional's card may hold. Deleting one's own message needs no more: it is the
# owner's retention of their own correspondence, not a change to anyone's record.
MAILBOX_SCOPE = ("Communication", "r")


class Mailboxes(Protocol):
    """`carevault.adapters.messaging.maildir.MaildirBoxes`, as read by the API."""

    def listing(self, local_part: str) -> list[StoredMessage]: ...

    def read(self, local_part: str, message_id: str) -> bytes | None: ...

    def remove(self, local_part: str, message_id: str) -> bool: ...


class NotMailboxOwner(NotPermitted):
    """A valid token whose holder has no mailbox here (``who``: the token's subject)."""

    def __init__(self, message: str, who: str) -> None:
        super().__init__(message, issue_code="forbidden")
        self.who = who


@dataclass(frozen=True)
class MailboxOwner:
    practitioner_id: str
    address: str


@dataclass(frozen=True)
class Fetched:
    """One message as delivered, and what the audit log may know of it."""

    id: str
    content: bytes
    digest: str  # SHA-256, hex, as the submission's audit record has it

    @property
    def size(self) -> int:
        return len(self.content)


class MailboxService:
    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        tokens: TokenContext,
        ctx: MessagingContext,
        boxes: Mailboxes,
    ) -> None:
        self.units = units
        self.tokens = tokens
        self.ctx = ctx
        self.boxes = boxes

    def owner_of_token(self, token: str) -> MailboxOwner:
        """The professional whose mailbox a bearer token opens: checked completely, as the
        FHIR gate checks it (`NotAuthenticated`), then refused unless it is a professional's
        own card's token that may read ``Communication`` (`NotMailboxOwner`)."""
        with self.units() as uow:
            caller = authenticate(uow, self.tokens, token)
            who = caller.fhir_user
            if caller.role is not None or caller.patient is not None:
                raise NotMailboxOwner("a mailbox is a professional's: this token is not", who)
            if caller.acting_system is not None:
                raise NotMailboxOwner(
                    "a mailbox is read with its owner's own card, not by a system acting for them",
                    f"{who} (acting system {caller.acting_system})",
                )
            if not permits(caller.scopes, *MAILBOX_SCOPE):
                raise NotMailboxOwner(
                    "the token's scopes do not allow reading Communication (a mailbox)", who
                )
            practitioner_id = who.removeprefix("Practitioner/")
            try:
                identifier = active_practitioner(uow, self.ctx, practitioner_id)
            except (BusinessRuleViolation, NotFound):
                raise NotMailboxOwner("not an active professional", who) from None
        return MailboxOwner(practitioner_id, address_of(identifier, self.ctx.domain))

    def _local(self, owner: MailboxOwner) -> str:
        return owner.address.partition("@")[0]

    def messages(self, owner: MailboxOwner) -> list[StoredMessage]:
        return self.boxes.listing(self._local(owner))

    def fetch(self, owner: MailboxOwner, message_id: str) -> Fetched:
        content = self.boxes.read(self._local(owner), message_id)
        if content is None:
            raise NotFound("your mailbox holds no such message")
        return Fetched(message_id, content, message_digest(content))

    def envelope(self, fetched: Fetched) -> bytes:
        """The CMS ``AuthEnvelopedData`` (DER) of a message, still encrypted."""
        parsed = BytesParser(policy=email.policy.default).parsebytes(fetched.content)
        try:
            return smime.pkcs7_payload(parsed, smime.AUTH_ENVELOPED)
        except smime.MalformedMessage as error:
            raise InvalidInput(f"the message holds no S/MIME envelope: {error}") from None

    def delete(self, owner: MailboxOwner, message_id: str) -> Fetched:
        """Delete one message for good; what it was (its size and digest), for the record."""
        fetched = self.fetch(owner, message_id)
        if not self.boxes.remove(self._local(owner), message_id):
            raise NotFound("your mailbox holds no such message")
        return fetched
