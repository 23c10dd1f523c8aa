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
