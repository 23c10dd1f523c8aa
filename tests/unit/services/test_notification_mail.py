"""The patients' notification mails, on a unit of work in memory and a recording sender: what
happened, in three languages, never what it was about; each notification mailed at least once
(what the sender did not accept stays in the outbox), logins that are not addresses never."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from carevault.services.notification_mail import SUBJECT, NotificationMailer
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SECRET = {"title": "HIV test: positive", "professional": "Dr Gregory House",
          "reason": "emergency room"}


class Sender:
    """A recording transport: keeps what it is given, accepts all but the addresses in
    ``refusing`` (as an SMTP server refusing a recipient), or fails as a whole."""

    def __init__(self, refusing: tuple[str, ...] = (), down: bool = False) -> None:
        self.sent: list[EmailMessage] = []
        self.refusing = refusing
        self.down = down

    def send(self, messages: list[EmailMessage]) -> list[int]:
        if self.down:
            raise ConnectionRefusedError("the SMTP server is down")
        accepted = [i for i, m in enumerate(messages) if m["To"] not in self.refusing]
        self.sent += [messages[i] for i in accepted]
        return accepted


def mailer(uow: FakeUnitOfWork, sender: Sender, batch: int = 50) -> NotificationMailer:
    return NotificationMailer(lambda: uow, sender,  # type: ignore[arg-type,return-value]
                              mail_from="noreply@carevault.example",
                              portal_url="https://portal.carevault.example", clock=lambda: NOW,
                              batch=batch)


@pytest.fixture
def uow() -> FakeUnitOfWork:
    fake = FakeUnitOfWork()
    fake.records.logins.update({"pat-1": "anne@example.org", "pat-2": "bob@example.org",
                                "pat-3": "operator-made-login"})
    return fake


def notify(uow: FakeUnitOfWork, patient_id: str, kind: str, minutes: int) -> str:
    with uow:
        notification_id = uow.records.notify(patient_id, kind, SECRET,
                                             NOW - timedelta(minutes=minutes))
        uow.commit()
    return notification_id


def body(message: EmailMessage) -> str:
    content = message.get_content()
    assert isinstance(content, str)
    return content


def test_a_new_document_is_told_in_three_languages_and_nothing_of_it(
        uow: FakeUnitOfWork) -> None:
    notify(uow, "pat-1", "new-document", 5)
    sender = Sender()
    assert mailer(uow, sender).run_once() == 1
    [message] = sender.sent
    assert (message["From"], message["To"], message["Subject"]) == (
        "noreply@carevault.example", "anne@example.org", SUBJECT)
    assert message["Message-ID"].endswith("@carevault.example>")
    text = body(message)
    for words in ("un nouveau document", "a new document", "ein neues Dokument"):
        assert f"({words})" in text
    assert text.count("https://portal.carevault.example/login") == 3
    for secret in SECRET.values():
        assert secret not in text and secret not in str(message)


@pytest.mark.parametrize(("kind", "english"), [
    ("emergency-access", "an emergency access"),
    ("grant-create", "an access given"),
    ("care-event", "a care event"),
    ("representative-added", "a change"),  # a kind the mail has no words for
])
def test_the_mail_names_only_the_kind_of_what_happened(
        uow: FakeUnitOfWork, kind: str, english: str) -> None:
    notify(uow, "pat-1", kind, 5)
    sender = Sender()
    mailer(uow, sender).run_once()
    assert f"Something happened in your shared care record ({english})." in body(sender.sent[0])


def test_each_notification_is_mailed_once_oldest_first_and_marked_at_the_clocks_time(
        uow: FakeUnitOfWork) -> None:
    late = notify(uow, "pat-1", "new-document", 1)
    early = notify(uow, "pat-2", "grant-create", 9)
    sender = Sender()
    assert mailer(uow, sender).run_once() == 2
    assert [m["To"] for m in sender.sent] == ["bob@example.org", "anne@example.org"]
    assert uow.records.mailed == {early: NOW, late: NOW}
    assert uow.commits == 3  # the two notifications', then the marking
    assert mailer(uow, sender).run_once() == 0
    assert len(sender.sent) == 2


def test_a_recipient_the_server_refused_is_mailed_again_on_the_next_run(
        uow: FakeUnitOfWork) -> None:
    refused = notify(uow, "pat-1", "new-document", 2)
    accepted = notify(uow, "pat-2", "new-document", 1)
    assert mailer(uow, Sender(refusing=("anne@example.org",))).run_once() == 1
    assert set(uow.records.mailed) == {accepted}
    sender = Sender()
    assert mailer(uow, sender).run_once() == 1
    assert [m["To"] for m in sender.sent] == ["anne@example.org"]
    assert set(uow.records.mailed) == {accepted, refused}


def test_when_the_server_is_down_nothing_is_marked_and_all_wait(uow: FakeUnitOfWork) -> None:
    notify(uow, "pat-1", "new-document", 2)
    with pytest.raises(ConnectionRefusedError):
        mailer(uow, Sender(down=True)).run_once()
    assert uow.records.mailed == {}
    assert len(uow.records.unmailed(10)) == 1


def test_a_login_that_is_not_an_address_is_marked_without_a_mail(uow: FakeUnitOfWork) -> None:
    unaddressed = notify(uow, "pat-3", "emergency-access", 2)
    notify(uow, "pat-4", "emergency-access", 2)  # no account: never in the outbox
    sender = Sender()
    assert mailer(uow, sender).run_once() == 0
    assert sender.sent == []
    assert set(uow.records.mailed) == {unaddressed}


def test_a_run_mails_one_batch_and_the_next_run_the_rest(uow: FakeUnitOfWork) -> None:
    for minutes in (3, 2, 1):
        notify(uow, "pat-1", "care-event", minutes)
    sender = Sender()
    assert mailer(uow, sender, batch=2).run_once() == 2
    assert mailer(uow, sender, batch=2).run_once() == 1
    assert mailer(uow, sender, batch=2).run_once() == 0
    assert len(sender.sent) == 3
