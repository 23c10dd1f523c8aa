"""A professional's mailbox over the HTTP API (issue #22, items 3 and 5), on SQLite and
PostgreSQL: the owner lists, fetches (exactly the bytes delivered, still encrypted) and deletes
their messages with their own card's SMART token; another professional, a patient, an operator,
a token that may not read Communication, no token and a forged one are refused; every request
is recorded with the message's id, size and digest, never its content."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from carevault.bootstrap import Platform, build
from carevault.client import messaging as client
from carevault.domain.audit import AuditRecord
from carevault.domain.messaging import message_digest
from carevault.services.messaging import Sender
from carevault.settings import Settings
from support.builders import patient
from support.messaging import World, build_world
from support.tokens import officer_headers, patient_headers, professional_token

MARKER = "MARKER-5d21-mailbox-body-never-in-the-log"
MAILBOX = "/messaging/mailbox"


@dataclass
class Box:
    platform: Platform
    world: World
    http: TestClient
    headers: dict[str, dict[str, str]]  # by name: a professional's own card token

    def send(self, sender: str, to: list[str], body: str, **extra: object) -> bytes:
        message = self.world.compose(sender, to, body, **extra)
        author = self.world.people[sender]
        service = self.world.service(self.platform.audit)
        service.submit(Sender(author.address, author.practitioner_id, author.card_serial),
                       [self.world.people[n].address for n in to], message, "127.0.0.1")
        return message

    def records(self, interaction: str) -> list[AuditRecord]:
        log = self.platform.audit
        entries = log.entries("clinical", 0, log.size("clinical"))
        found = [AuditRecord.from_canonical(d) for _, d in entries]
        return [r for r in found if r.interaction == interaction]


@pytest.fixture
def box(settings: Settings, engine: Engine, tmp_path: Path) -> Iterator[Box]:
    settings = settings.model_copy(update={"messaging_maildir": tmp_path / "mail"})
    platform = build(settings, engine)
    world = build_world(settings, engine, tmp_path / "people", ("anne", "paul", "lea"))
    headers = {
        name: {"Authorization": "Bearer " + professional_token(
            platform, identifier=f"HP-10000{i}", family=name.title())}
        for i, name in enumerate(("anne", "paul", "lea"))}
    with TestClient(platform.app) as http:
        yield Box(platform, world, http, headers)


def test_the_owner_lists_fetches_and_deletes(box: Box) -> None:
    paul = box.world.people["paul"]
    sent = box.send("anne", ["paul", "lea"], f"Bonjour {MARKER}")
    listed = box.http.get(MAILBOX, headers=box.headers["paul"])
    assert listed.status_code == 200, listed.text
    assert listed.headers["cache-control"] == "no-store"
    body = listed.json()
    assert body["address"] == paul.address
    (entry,) = body["messages"]
    assert entry["size"] == len(sent) and entry["seen"] is False

    fetched = box.http.get(f"{MAILBOX}/{entry['id']}", headers=box.headers["paul"])
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "message/rfc822"
    assert fetched.content == sent  # exactly as delivered: the server decrypts nothing
    assert MARKER.encode() not in fetched.content
    assert fetched.headers["x-content-sha256"] == message_digest(sent)
    opened = client.read(fetched.content, paul.encryption_certificate, paul.encryption_key,
                         box.world.trust())
    assert MARKER in opened.body and opened.warnings == ()

    # The envelope alone, which openssl decrypts with Paul's key as any S/MIME software would.
    envelope = box.http.get(f"{MAILBOX}/{entry['id']}", headers={
        **box.headers["paul"], "Accept": "application/pkcs7-mime"})
    assert envelope.status_code == 200
    assert envelope.headers["content-type"].startswith("application/pkcs7-mime")
    decrypted = subprocess.run(
        ["openssl", "cms", "-decrypt", "-inform", "DER", "-recip",
         str(paul.folder / "enc.pem"), "-inkey", str(paul.folder / "enc.key")],
        input=envelope.content, capture_output=True, check=False)
    assert decrypted.returncode == 0, decrypted.stderr
    assert b"signed-data" in decrypted.stdout

    gone = box.http.delete(f"{MAILBOX}/{entry['id']}", headers=box.headers["paul"])
    assert gone.status_code == 204
    assert box.http.get(MAILBOX, headers=box.headers["paul"]).json()["messages"] == []
    assert box.http.get(f"{MAILBOX}/{entry['id']}",
                        headers=box.headers["paul"]).status_code == 404
    assert box.http.delete(f"{MAILBOX}/{entry['id']}",
                           headers=box.headers["paul"]).status_code == 404
    # Léa's copy is hers: Paul's deletion did not touch it.
    assert len(box.http.get(MAILBOX, headers=box.headers["lea"]).json()["messages"]) == 1

    # Recorded: who, which message, its size and digest (the submission's), never content.
    reads = [r for r in box.records("mailbox-read") if r.outcome == "0"]
    assert len(reads) == 2 and reads[0].detail == reads[1].detail  # the message, the envelope
    read = reads[0]
    assert read.agent.who == f"Practitioner/{paul.practitioner_id}"
    assert read.detail == {"message": entry["id"], "size": str(len(sent)),
                           "sha256": message_digest(sent)}
    (submitted,) = box.records("message-submit")
    assert submitted.detail["sha256"] == read.detail["sha256"]
    (deleted,) = [r for r in box.records("mailbox-delete") if r.outcome == "0"]
    assert deleted.action == "D" and deleted.detail == read.detail
    refused = [r for r in box.records("mailbox-read") + box.records("mailbox-delete")
               if r.outcome == "4"]
    assert [r.status for r in refused] == [404, 404]
    listings = box.records("mailbox-list")
    assert {r.detail["count"] for r in listings} == {"0", "1"}
    log = box.platform.audit
    for stream in ("clinical", "operator"):
        for _, entry_data in log.entries(stream, 0, log.size(stream)):
            assert MARKER not in str(entry_data)


def test_another_professional_reaches_only_their_own_mailbox(box: Box) -> None:
    box.send("anne", ["paul"], "Pour Paul seulement")
    (entry,) = box.http.get(MAILBOX, headers=box.headers["paul"]).json()["messages"]
    lea = box.world.people["lea"]
    listed = box.http.get(MAILBOX, headers=box.headers["lea"]).json()
    assert listed == {"address": lea.address, "messages": []}
    # Léa names Paul's message: her mailbox holds no such message, and it stays in Paul's.
    for method in ("GET", "DELETE"):
        answer = box.http.request(method, f"{MAILBOX}/{entry['id']}", headers=box.headers["lea"])
        assert answer.status_code == 404, answer.text
    assert box.http.get(f"{MAILBOX}/{entry['id']}",
                        headers=box.headers["paul"]).status_code == 200
    # A path that tries to leave the mailbox is no message id.
    for sneaky in ("..%2F..%2Fhp-100001%2FMaildir%2Fnew", "..", ".%2E"):
        answer = box.http.get(f"{MAILBOX}/{sneaky}", headers=box.headers["lea"])
        assert answer.status_code == 404, (sneaky, answer.status_code)
    refused = [r for r in box.records("mailbox-read") if r.outcome == "4"]
    assert refused and all(r.agent.who == f"Practitioner/{lea.practitioner_id}"
                           for r in refused)


def test_anyone_else_is_refused_and_recorded(box: Box) -> None:
    box.send("anne", ["paul"], "x")
    (entry,) = box.http.get(MAILBOX, headers=box.headers["paul"]).json()["messages"]
    with box.platform.unit_of_work() as uow:
        from carevault.services import directory as svc

        patient_id = svc.create_patient(uow, box.platform.directory,
                                        patient(box.platform.directory.systems, 7)).id
    narrow = professional_token(box.platform, "system/Patient.rs", identifier="HP-100001",
                                family="Paul")
    forged = box.headers["paul"]["Authorization"][:-4] + "AAAA"
    callers = {
        "patient": (patient_headers(box.platform, patient_id), 403),
        "security officer": (officer_headers(box.platform), 403),
        "the owner, with a token that may not read Communication": (
            {"Authorization": f"Bearer {narrow}"}, 403),
        "no token": ({}, 401),
        "a forged token": ({"Authorization": forged}, 401),
        "not a bearer token": ({"Authorization": "Basic cGF1bDp4"}, 401),
    }
    for who, (headers, status) in callers.items():
        for method, path in (("GET", MAILBOX), ("GET", f"{MAILBOX}/{entry['id']}"),
                             ("DELETE", f"{MAILBOX}/{entry['id']}")):
            answer = box.http.request(method, path, headers=headers)
            assert answer.status_code == status, (who, method, path, answer.text)
            assert "error" in answer.json()
            if status == 401:
                assert answer.headers["www-authenticate"].startswith("Bearer")
    # Still there for its owner.
    assert box.http.get(f"{MAILBOX}/{entry['id']}",
                        headers=box.headers["paul"]).status_code == 200
    refusals = [r for name in ("mailbox-list", "mailbox-read", "mailbox-delete")
                for r in box.records(name) if r.outcome == "4"]
    assert len(refusals) == 3 * len(callers)
    forbidden = [r for r in refusals if r.status == 403]
    assert len(forbidden) == 9
    # A refused caller who is someone is named: the patient's account, the officer's.
    assert all(r.agent.who for r in forbidden)
    assert {r.agent.who for r in refusals if r.status == 401} == {None}
