"""Secure messaging between professionals: addresses, limits and what the audit may know.

Every professional (and organization) of the directory who can receive has one messaging
address, derived from their directory identifier, so that it needs no table of its own and
cannot drift from the directory: ``HP-123456`` receives at ``hp-123456@<messaging domain>``.
The platform carries messages it cannot read (S/MIME, see `carevault.adapters.messaging.smime`);
what it knows of a message, and so what the audit log records, is its `Envelope`: sender,
recipients, time, size and a digest, never a subject or a body.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from carevault.domain.errors import BusinessRuleViolation, InvalidInput

__all__ = [
    "DEFAULT_DOMAIN",
    "MAX_MESSAGE_BYTES",
    "MAX_RECIPIENTS",
    "DuplicateRecipient",
    "Envelope",
    "TooManyRecipients",
    "address_of",
    "identifier_of",
    "message_digest",
]

DEFAULT_DOMAIN = "msg.carevault.localhost"
# A message carries attachments up to the document size limit; base64 and the two CMS layers
# add about 37 % to the content, and the headers a little more.
MAX_MESSAGE_BYTES = 28 * 1024 * 1024
MAX_RECIPIENTS = 50

_LOCAL = re.compile(r"[a-z0-9][a-z0-9._:\-]{0,63}")
_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?)*")


class TooManyRecipients(BusinessRuleViolation):
    """A message already has `MAX_RECIPIENTS` recipients: told at the next ``RCPT``, not at
    ``DATA``, so that the client sends to the others in another message (RFC 5321
    §4.5.3.1.10) instead of losing the whole message after transferring it."""


class DuplicateRecipient(BusinessRuleViolation):
    """A recipient named twice in one message: accepted, it would be delivered as many times
    as named (one message, the same mailbox, fifty copies), a cheap way to fill a disk."""


def address_of(identifier: str, domain: str) -> str:
    """The messaging address of a directory identifier (``HP-123456`` → ``hp-123456@domain``)."""
    local = identifier.strip().lower()
    if not _LOCAL.fullmatch(local) or not _DOMAIN.fullmatch(domain):
        raise InvalidInput(f"{identifier!r} cannot be carried in a messaging address")
    return f"{local}@{domain}"


def identifier_of(address: str, domain: str) -> str:
    """The directory identifier an address of this platform names, folded to lower case (the
    directory is searched without regard to case); `InvalidInput` for an address elsewhere or
    malformed."""
    text = address.strip().strip("<>").lower()
    local, at, host = text.rpartition("@")
    if not at or host != domain.lower() or not _LOCAL.fullmatch(local):
        raise InvalidInput(f"{address!r} is not a messaging address of this platform")
    return local


def message_digest(message: bytes) -> str:
    """The digest the audit log records (SHA-256, hex): it names a message without its content."""
    return hashlib.sha256(message).hexdigest()


@dataclass(frozen=True)
class Envelope:
    """What the platform knows of a message it carries."""

    sender: str
    recipients: tuple[str, ...]
    received_at: datetime
    size: int
    digest: str
