"""Patients' e-mail notifications through a real SMTP server (aiosmtpd, in this process), on both
databases: an emergency access and a new document are mailed to the patient's address, once,
saying that something happened and nothing of what (no medical content, no professional's
name, no reason, no title)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine
from starlette.testclient import TestClient

from carevault.bootstrap import Platform, build, notification_mailer
from carevault.settings import Settings
from support.accounts import enrol_patient
from support.authorities import presence_code, with_presence
from support.documents import Pro, provide_bundle, publish


class Inbox:
    """An SMTP server's handler that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    with socket.socket() as probe:  # aiosmtpd's self-check fails on port 0: pick a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def mailing(database_url: str, tmp_path: Path, engine: Engine,
            smtp: tuple[Inbox, int]) -> Platform:
    from carevault.adapters.keys.local_file import create_key_file

    key_file = tmp_path / "mail" / "carevault.key"
    create_key_file(key_file)
    settings = Settings(database_url=database_url, key_source=f"file:{key_file}",
                        environment="dev", smtp_host="127.0.0.1", smtp_port=smtp[1],
                        mail_from="notifications@carevault.example",
                        _env_file=None)  # type: ignore[call-arg]
    return build(settings, engine)


def test_an_emergency_and_a_new_document_are_mailed_once_without_medical_content(
        mailing: Platform, smtp: tuple[Inbox, int]) -> None:
    inbox, _port = smtp
    platform = mailing
    account = enrol_patient(platform, family="Hoffmann", login="lena.hoffmann@example.lu")
    http = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                      client=("127.0.0.1", 50020))
    doctor = Pro(platform, "HP-MAIL-ER")
    emergency = http.post(f"/fhir/Patient/{account.patient_id}/$emergency-access",
                          headers=doctor.headers, json={
                              "resourceType": "Parameters", "parameter": [
                                  {"name": "reason", "valueString": "MARKER-unconscious-Zk9"}]})
    assert emergency.status_code == 200, emergency.text
    gp = Pro(platform, "HP-MAIL-GP")
    seen = http.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{account.patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"}}, presence_code(platform, account.patient_id)))
    assert seen.status_code == 201, seen.text
    published = publish(http, gp, provide_bundle(account.patient_id, gp))
    assert published.status_code == 200, published.text

    mailer = notification_mailer(platform.settings, platform.unit_of_work)
    assert mailer is not None
    assert mailer.run_once() >= 2
    assert mailer.run_once() == 0  # each notification is mailed once
    assert {tuple(rcpt) for rcpt, _ in inbox.messages} == {("lena.hoffmann@example.lu",)}
    text = "\n".join(message.get_payload(decode=True).decode("utf-8")
                     for _, message in inbox.messages)
    assert "an emergency access" in text and "a new document" in text
    assert "/login" in text
    for secret in ("MARKER", "unconscious", "HP-MAIL", "Consultation", "Hoffmann"):
        assert secret not in text, secret
    assert all(message["From"] == "notifications@carevault.example"
               for _, message in inbox.messages)


def test_without_a_relay_nothing_is_mailed(platform: Platform) -> None:
    assert notification_mailer(platform.settings, platform.unit_of_work) is None


def test_a_prescription_ready_then_dispensed_is_mailed_without_the_medicine(
        mailing: Platform, smtp: tuple[Inbox, int]) -> None:
    """Issue #18: "the patient is notified" when a prescription is activated, and of each
    dispense: two mails, which say so and nothing of the medicine, the number or who."""
    from support.authorities import registrar_token
    from support.erezept import SECRET, Scene, dispense, identifier
    from support.tokens import professional_token

    inbox, _port = smtp
    platform = mailing
    professional = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                              client=("127.0.0.1", 50071), headers={
                                  "Authorization": f"Bearer {professional_token(platform)}"})
    registrar = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                           client=("127.0.0.1", 50072), headers={
                               "Authorization": f"Bearer {registrar_token(platform)}"})
    scene = Scene(platform, professional, registrar, seq=71, login="rx.mail@example.lu")
    mailer = notification_mailer(platform.settings, platform.unit_of_work)
    assert mailer is not None
    mailer.run_once()  # what the scene's setting up caused (the access the patient gave)
    inbox.messages.clear()

    task_id, code = scene.ready()
    assert mailer.run_once() == 1
    taken = professional.post(f"/fhir/Task/{task_id}/$accept", params={"ac": code},
                              headers=scene.pharmacist.headers)
    assert taken.status_code == 200, taken.text
    secret = identifier(taken.json()["entry"][0]["resource"], SECRET)
    closed = professional.post(f"/fhir/Task/{task_id}/$close", params={"secret": secret},
                               json=dispense(task_id, scene.national_id, scene.patient_system),
                               headers=scene.pharmacist.headers)
    assert closed.status_code == 200, closed.text
    assert mailer.run_once() == 1
    assert mailer.run_once() == 0
    assert [rcpt for rcpt, _ in inbox.messages] == [["rx.mail@example.lu"]] * 2
    ready, dispensed = (message.get_payload(decode=True).decode("utf-8")
                        for _, message in inbox.messages)
    assert "a prescription ready for you" in ready and "une ordonnance prête" in ready
    assert "ein Rezept für Sie bereit" in ready
    assert "a prescription dispensed" in dispensed and "une ordonnance délivrée" in dispensed
    number = scene.number(task_id)
    for text in (ready, dispensed):
        for secret_word in ("Amoxicillin", number, code, "Arzt", "HP-ERX", "Pharmacie"):
            assert secret_word not in text, secret_word


def test_a_changed_password_is_mailed_to_the_holder_saying_what_changed(
        mailing: Platform, smtp: tuple[Inbox, int]) -> None:
    """ASVS 6.3.7: the holder learns of a change of their password, by mail and in the app, so
    that one who did not make it knows someone else has their password. The mail names the
    change (they may not be able to sign in to see it) and holds nothing else."""
    from support.accounts import PASSWORD

    inbox, _port = smtp
    platform = mailing
    account = enrol_patient(platform, family="Weber", login="jonas.weber@example.lu")
    mailer = notification_mailer(platform.settings, platform.unit_of_work)
    assert mailer is not None
    mailer.run_once()
    inbox.messages.clear()
    new = "MARKER a new and longer passphrase"
    with platform.unit_of_work() as uow:
        holder = uow.accounts.by_login("jonas.weber@example.lu")
    assert holder is not None
    platform.accounts.change_password(holder.id, PASSWORD, new)
    assert mailer.run_once() == 1
    [(rcpt, message)] = inbox.messages
    assert rcpt == ["jonas.weber@example.lu"]
    text = message.get_payload(decode=True).decode("utf-8")
    assert "The password of your account was changed. If it was not you" in text
    assert "mot de passe" in text and "Passwort" in text
    for secret in ("MARKER", PASSWORD, "Weber"):
        assert secret not in text, secret
    # In the app too: the record's Communications hold the notice.
    with platform.unit_of_work() as uow:
        _total, notices = uow.records.notifications(account.patient_id, 0, 10)
    assert [n.kind for n in notices].count("password-changed") == 1
