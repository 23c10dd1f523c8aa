"""E-mail notifications to patients: that something happened on their record (an emergency
access, a new document, an access given, a care event, a prescription ready or dispensed),
never what — no medical content, no name of a professional, no document title, no medicine,
no reason: the mail only asks them to sign in. A change of their account's means of signing in
(password, passkey, a recovery code used) is named, since a holder who did not make it may not
be able to sign in any more.

The outbox is the notification table itself (`RecordStore.unmailed`): a notification is written
in the transaction of the change that causes it, and this chore mails it afterwards, at least
once (a crash between sending and marking sends it again, never loses it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Protocol

from carevault.services.accounts import ACCOUNT_NOTICES, IF_NOT_YOU
from carevault.services.unit_of_work import UnitOfWork

__all__ = ["SUBJECT", "MailSender", "NotificationMailer"]

SUBJECT = "CareVault — nouvelle notification / new notification / neue Benachrichtigung"
_BODY = (
    "Bonjour,\n\nIl s'est passé quelque chose dans votre dossier de soins partagé ({fr}).\n"
    "Connectez-vous pour voir quoi : {url}\n\n"
    "Hello,\n\nSomething happened in your shared care record ({en}).\n"
    "Sign in to see what: {url}\n\n"
    "Guten Tag,\n\nIn Ihrer gemeinsamen Gesundheitsakte ist etwas geschehen ({de}).\n"
    "Melden Sie sich an, um es zu sehen: {url}\n\n"
    "— CareVault (ce message ne contient aucune donnée médicale / this message holds no "
    "medical data / diese Nachricht enthält keine medizinischen Daten)\n"
)
# What kind of thing happened, in the words the mail may say (no detail beyond the kind).
_KINDS = {
    "emergency-access": ("un accès d'urgence", "an emergency access", "ein Notfallzugriff"),
    "new-document": ("un nouveau document", "a new document", "ein neues Dokument"),
    "grant-create": ("un accès donné", "an access given", "ein erteilter Zugriff"),
    "care-event": ("une prise en charge", "a care event", "eine Behandlung"),
    # E-prescriptions (issue #18): that one is ready or dispensed, never which medicine.
    "prescription-activated": (
        "une ordonnance prête",
        "a prescription ready for you",
        "ein Rezept für Sie bereit",
    ),
    "prescription-dispensed": (
        "une ordonnance délivrée",
        "a prescription dispensed",
        "ein Rezept abgegeben",
    ),
    "prescription-cancelled": (
        "une ordonnance annulée",
        "a prescription cancelled",
        "ein Rezept storniert",
    ),
}
_OTHER = ("un changement", "a change", "eine Änderung")
# A change of the account's means of signing in (`accounts.ACCOUNT_NOTICES`): the mail names it,
# since a holder who did not make it may no longer be able to sign in to see it.
_ACCOUNT_BODY = (
    "Bonjour,\n\n{fr} {fr_if}\nQuelqu'un d'autre que vous pourrait se connecter à votre "
    "place.\n\n"
    "Hello,\n\n{en} {en_if}\nSomeone other than you may be able to sign in as you.\n\n"
    "Guten Tag,\n\n{de} {de_if}\nJemand anderes könnte sich in Ihrem Namen anmelden.\n\n"
    "— CareVault (ce message ne contient aucune donnée médicale / this message holds no "
    "medical data / diese Nachricht enthält keine medizinischen Daten)\n"
)


class MailSender(Protocol):
    def send(self, messages: list[EmailMessage]) -> list[int]: ...


class NotificationMailer:
    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        sender: MailSender,
        *,
        mail_from: str,
        portal_url: str,
        clock: Callable[[], datetime],
        batch: int = 50,
    ) -> None:
        self.units, self.sender, self.clock = units, sender, clock
        self.mail_from, self.portal_url, self.batch = mail_from, portal_url, batch

    def message(self, kind: str, to: str) -> EmailMessage:
        fr, en, de = _KINDS.get(kind, _OTHER)
        message = EmailMessage()
        message["From"] = self.mail_from
        message["To"] = to
        message["Subject"] = SUBJECT
        message["Message-ID"] = make_msgid(domain=self.mail_from.rpartition("@")[2] or None)
        change = ACCOUNT_NOTICES.get(kind)
        if change is None:
            body = _BODY.format(fr=fr, en=en, de=de, url=f"{self.portal_url}/login")
        else:
            body = _ACCOUNT_BODY.format(
                **change, **{f"{language}_if": words for language, words in IF_NOT_YOU.items()}
            )
        message.set_content(body)
        return message

    def run_once(self) -> int:
        """Mail one batch of the outbox; returns how many were sent."""
        with self.units() as uow:
            waiting = uow.records.unmailed(self.batch)
        pending = [(n, login) for n, login in waiting if "@" in login]
        accepted = self.sender.send([self.message(n.kind, login) for n, login in pending])
        done = [pending[i][0].id for i in accepted]
        # Logins that are not addresses are never mailed: marked, so they do not block.
        done += [n.id for n, login in waiting if "@" not in login]
        with self.units() as uow:
            uow.records.mark_mailed(done, self.clock())
            uow.commit()
        return len(accepted)
