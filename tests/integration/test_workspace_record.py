"""The professional workspace's work with a record, over HTTP on both databases: a physician
signed in with the passkey bound to their card finds a patient (by name, national number,
hospital number), opens the record as the engine lets them see it (and is told how many
documents they do not see), reads a document with its author's signature checked, publishes a
document signed with their card, and breaks the glass on a record they have no access to. Each
refusal is tested, and each access is in the audit log before the page is shown. The browser's
journeys: tests/e2e/test_workspace_journeys.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from carevault.adapters.storage import schema as t
from carevault.bootstrap import Platform
from carevault.client import card as card_client
from carevault.domain.authorization import GrantLevel, Party, Subject, SubjectKind
from carevault.services import directory as svc
from carevault.services.record_policy import Actor
from support.builders import hospital, patient
from support.documents import Pro, created_id, provide_bundle, publish
from support.passkeys import Card, SoftwareAuthenticator, issue_card

from .test_workspace_signin import ORIGIN, browser, enrol, page_csrf

REPORT = b"%PDF-1.7\n% workspace report MARKER-Ws-5521\n%%EOF\n"
SECRET = b"%PDF-1.7\n% psychiatry MARKER-Hidden-7730\n%%EOF\n"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class World:
    web: TestClient
    card: Card
    gp: Pro
    patient_id: str  # Kaiser: the card's physician has a grant
    stranger_id: str  # Stranger: no grant
    report_id: str
    hidden_id: str


def entries(platform: Platform) -> list[dict[str, Any]]:
    with platform.engine.connect() as connection:
        return [json.loads(e) for e in connection.execute(
            select(t.audit_entry.c.entry).order_by(t.audit_entry.c.recorded_at,
                                                  t.audit_entry.c.leaf_index)).scalars()]


def grant(platform: Platform, patient_id: str, practitioner_id: str) -> None:
    me = Actor(Subject(SubjectKind.PATIENT, patient_id), f"account:{patient_id}")
    platform.policy.grant(me, patient_id, Party.PRACTITIONER, practitioner_id, GrantLevel.NORMAL)


@pytest.fixture
def world(platform: Platform, client: TestClient, tmp_path: Path) -> Iterator[World]:
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        svc.register_organizations(uow, ctx, [hospital(ctx.systems)])
    with platform.unit_of_work() as uow:
        kaiser, stranger = svc.register_patients(uow, ctx, [
            patient(ctx.systems, 41, family="Kaiser", given=["Kurt"], local="H-4711"),
            patient(ctx.systems, 42, family="Stranger", given=["Sam"]),
        ])
    card = issue_card(platform, tmp_path / "card")
    gp = Pro(platform, "HP-WS-GP")
    for patient_id in (kaiser.id, stranger.id):
        grant(platform, patient_id, gp.id)
    grant(platform, kaiser.id, card.practitioner_id)
    made = publish(client, gp, provide_bundle(kaiser.id, gp, REPORT, title="Report"))
    assert made.status_code == 200, made.text
    report_id = created_id(made)
    made = publish(client, gp, provide_bundle(kaiser.id, gp, SECRET, title="Hidden"))
    assert made.status_code == 200, made.text
    hidden_id = created_id(made)
    made = publish(client, gp, provide_bundle(stranger.id, gp, REPORT, title="Theirs"))
    assert made.status_code == 200, made.text
    me = Actor(Subject(SubjectKind.PATIENT, kaiser.id), "me")
    platform.policy.hide_document(me, kaiser.id, hidden_id, True)
    with browser(platform) as web:
        done = enrol(web, card, SoftwareAuthenticator(ORIGIN))
        assert done.status_code == 200, done.text
        yield World(web, card, gp, kaiser.id, stranger.id, report_id, hidden_id)


def search(world: World, **fields: str) -> Any:
    csrf = page_csrf(world.web, "/workspace/patients")
    return world.web.post("/workspace/patients?lang=en", data={"csrf": csrf, **fields})


def publish_form(world: World, patient_id: str, content: bytes, signature: bytes,
                 content_type: str = "application/pdf", **fields: str) -> Any:
    csrf = page_csrf(world.web, f"/workspace/record/{patient_id}/publish")
    data = {"csrf": csrf, "title": "Letter to the GP", "kind": "consultation",
            "confidentiality": "N", **fields}
    return world.web.post(
        f"/workspace/record/{patient_id}/publish?lang=en", data=data,
        files={"file": ("letter.pdf", content, content_type),
               "signature": ("letter.pdf.jws", signature, "application/jose")},
        follow_redirects=False)


def test_a_patient_is_found_by_name_national_number_and_hospital_number(
        platform: Platform, world: World) -> None:
    for fields in ({"family": "kais"}, {"family": "KAISER", "given": "kurt"},
                   {"hospital_number": "H-4711"}, {"birthdate": "1980-04-12", "family": "Kai"}):
        found = search(world, **fields)
        assert found.status_code == 200
        assert f'data-patient="{world.patient_id}"' in found.text, fields
        assert world.stranger_id not in found.text
    national = patient(platform.directory.systems, 41)["identifier"][0]["value"]
    assert f'data-patient="{world.patient_id}"' in search(world, national_id=national).text
    assert 'id="none"' in search(world, hospital_number="H-0000").text
    # No criterion, a date that is none, a field too long: said on the page, nothing searched.
    assert "at least one field" in search(world).text
    assert "is a date" in search(world, birthdate="12/04/1980").text
    last_day = search(world, birthdate="9999-12-31")  # no day after it: a 500 before
    assert last_day.status_code < 500 and "is a date" in last_day.text
    assert "at most 100" in search(world, family="x" * 101).text
    # The criteria never travel in the address, and the search is recorded with their names.
    searches = [e for e in entries(platform) if e.get("interaction") == "search-type"
                and e.get("entity_type") == "Patient"]
    assert len(searches) == 6
    assert searches[0]["agent"]["who"] == f"Practitioner/{world.card.practitioner_id}"
    assert searches[0]["query"] == "family="
    assert not any("kais" in json.dumps(e) for e in searches)


def test_the_record_shows_what_the_engine_permits_and_counts_what_it_does_not(
        platform: Platform, world: World) -> None:
    page = world.web.get(f"/workspace/record/{world.patient_id}?lang=en")
    assert page.status_code == 200
    assert f'data-document="{world.report_id}"' in page.text
    assert world.hidden_id not in page.text
    assert "1 document of this record is not visible to you" in page.text
    assert "Kurt Kaiser" in page.text
    assert "HP-WS-GP" in page.text and world.gp.id not in page.text  # the author, by name
    viewed = [e for e in entries(platform) if e.get("patient") == world.patient_id
              and e.get("interaction") == "search-type"]
    assert viewed and viewed[-1]["agent"]["who"] == f"Practitioner/{world.card.practitioner_id}"
    assert viewed[-1]["outcome"] == "0" and viewed[-1]["rule"]
    # The patient shows the document again: nothing is hidden any more.
    me = Actor(Subject(SubjectKind.PATIENT, world.patient_id), "me")
    platform.policy.hide_document(me, world.patient_id, world.hidden_id, False)
    page = world.web.get(f"/workspace/record/{world.patient_id}?lang=fr")
    assert world.hidden_id in page.text and 'id="not-visible"' not in page.text


def test_a_document_is_read_with_its_signature_verified(
        platform: Platform, world: World) -> None:
    path = f"/workspace/record/{world.patient_id}/document/{world.report_id}"
    page = world.web.get(path + "?lang=en")
    assert page.status_code == 200
    assert 'data-verified="true"' in page.text
    assert "HP-WS-GP" in page.text  # the signer, as their certificate names them
    content = world.web.get(path + "/content")
    assert content.status_code == 200
    assert content.content == REPORT
    assert content.headers["content-type"] == "application/pdf"
    # The browser's PDF viewer runs in its own origin and refuses a sandboxed frame: a PDF is
    # framed by the workspace only and loads nothing; other types are sandboxed.
    assert content.headers["content-security-policy"] == (
        "default-src 'none'; frame-ancestors 'self'")
    assert content.headers["x-frame-options"] == "SAMEORIGIN"
    reads = [e for e in entries(platform) if e.get("interaction") == "read"
             and e.get("entity_id") == world.report_id]
    assert len(reads) == 2 and all(e["patient"] == world.patient_id for e in reads)


def test_what_is_hidden_or_elsewhere_is_not_read(platform: Platform, world: World) -> None:
    hidden = world.web.get(f"/workspace/record/{world.patient_id}/document/{world.hidden_id}")
    assert hidden.status_code == 403
    assert "MARKER-Hidden" not in hidden.text
    content = world.web.get(
        f"/workspace/record/{world.patient_id}/document/{world.hidden_id}/content")
    assert content.status_code == 403 and b"MARKER-Hidden" not in content.content
    refused = [e for e in entries(platform) if e.get("entity_id") == world.hidden_id
               and e.get("interaction") == "read"]
    assert len(refused) == 2 and {e["outcome"] for e in refused} == {"4"}
    # A document named under another patient's record is no document of that record.
    wrong = world.web.get(f"/workspace/record/{world.stranger_id}/document/{world.report_id}")
    assert wrong.status_code == 404
    assert world.web.get(f"/workspace/record/{world.patient_id}/document/none").status_code == 404
    assert world.web.get("/workspace/record/no-such-patient").status_code == 404


def test_a_document_signed_with_the_card_is_published(platform: Platform, world: World) -> None:
    letter = b"%PDF-1.7\n% a letter MARKER-Published-3310\n%%EOF\n"
    answer = publish_form(world, world.patient_id, letter,
                          card_client.sign(world.card.folder, letter))
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"].endswith("published=1")
    page = world.web.get(f"/workspace/record/{world.patient_id}?lang=en")
    assert "Letter to the GP" in page.text
    created = [e for e in entries(platform) if e.get("interaction") == "create"
               and e.get("patient") == world.patient_id
               and e["agent"]["who"] == f"Practitioner/{world.card.practitioner_id}"]
    assert len(created) == 1 and created[0]["outcome"] == "0"
    document_id = created[0]["entity_id"]
    read = world.web.get(f"/workspace/record/{world.patient_id}/document/{document_id}")
    assert 'data-verified="true"' in read.text


def test_a_publication_is_refused_for_every_fault(platform: Platform, world: World) -> None:
    letter = b"%PDF-1.7\n% a letter\n%%EOF\n"
    signed = card_client.sign(world.card.folder, letter)
    cases = [
        (letter + b"tampered", signed, {}, 422, "does not verify"),
        (letter, b"not-a-jws", {}, 422, "not published"),
        (letter, b"", {}, 422, "signature file"),
        (b"", signed, {}, 422, "is empty"),
        (b"MZ\x90\x00 a program", signed, {}, 422, "PDF, JPEG, PNG"),
        (letter, signed, {"title": " "}, 422, "1 to 200"),
        (letter, signed, {"kind": "poem"}, 422, "kind of document"),
        (letter, signed, {"confidentiality": "Z"}, 422, "confidentiality level"),
    ]
    for content, signature, fields, status, words in cases:
        answer = publish_form(world, world.patient_id, content, signature, **fields)
        assert answer.status_code == status, (fields, answer.text)
        assert words in answer.text, (words, answer.text)
    # The GP's signature over the card holder's document: a signature, but not the author's.
    gp_signature = provide_bundle(world.patient_id, world.gp, letter)
    jws = next(e["resource"] for e in gp_signature["entry"]
               if e["resource"].get("relatesTo"))["content"][0]["attachment"]["data"]
    import base64
    answer = publish_form(world, world.patient_id, letter, base64.b64decode(jws))
    assert answer.status_code == 422 and "neither the author" in answer.text
    # Without the session's CSRF token; on a record the engine does not open to them.
    no_csrf = world.web.post(
        f"/workspace/record/{world.patient_id}/publish", data={"csrf": "forged"},
        files={"file": ("a.pdf", letter, "application/pdf"),
               "signature": ("a.jws", signed, "application/jose")}, follow_redirects=False)
    assert no_csrf.status_code == 400
    elsewhere = publish_form(world, world.stranger_id, letter, signed)
    assert elsewhere.status_code == 403
    stored = [e for e in entries(platform) if e.get("interaction") == "create"
              and e["agent"]["who"] == f"Practitioner/{world.card.practitioner_id}"]
    assert [e["outcome"] for e in stored] == ["4"]  # only the refused record, nothing stored


def test_the_glass_is_broken_with_a_reason_the_patient_is_told_and_the_officer_alerted(
        platform: Platform, world: World) -> None:
    record = f"/workspace/record/{world.stranger_id}"
    refused = world.web.get(record + "?lang=en")
    assert refused.status_code == 200
    assert 'id="refusal"' in refused.text and 'id="emergency-link"' in refused.text
    assert "Theirs" not in refused.text and 'id="not-visible"' not in refused.text
    assert [e["outcome"] for e in entries(platform) if e.get("patient") == world.stranger_id
            and e.get("interaction") == "search-type"] == ["4"]
    warning = world.web.get(record + "/emergency?lang=de")
    assert warning.status_code == 200 and "Sicherheitsbeauftragte" in warning.text
    csrf = CSRF.search(warning.text)
    assert csrf
    empty = world.web.post(record + "/emergency", data={"csrf": csrf.group(1), "reason": "  "},
                           follow_redirects=False)
    assert empty.status_code == 422
    forged = world.web.post(record + "/emergency", data={"csrf": "x", "reason": "unconscious"},
                            follow_redirects=False)
    assert forged.status_code == 400
    declared = world.web.post(record + "/emergency?lang=en",
                              data={"csrf": csrf.group(1), "reason": "unconscious, no relatives"},
                              follow_redirects=False)
    assert declared.status_code == 303
    opened = world.web.get(record + "?lang=en")
    assert 'id="emergency-banner"' in opened.text and "Theirs" in opened.text
    kinds = [(e["kind"], e.get("interaction")) for e in entries(platform)
             if e.get("patient") == world.stranger_id]
    assert ("policy", "emergency-access") in kinds and ("alert", "emergency-access") in kinds
    with platform.unit_of_work() as uow:
        _total, told = uow.records.notifications(world.stranger_id, 0, 50)
    assert any(n.kind == "emergency-access" and "unconscious" in json.dumps(n.payload)
               for n in told)
    # With access open, there is no glass to break.
    assert world.web.get(record + "/emergency").status_code == 403


def test_a_text_note_is_shown_in_the_page_and_its_bytes_are_sandboxed(
        platform: Platform, world: World) -> None:
    note = "Allergy to penicillin; creatinine < 80 & stable — noted today".encode()
    answer = publish_form(world, world.patient_id, note, card_client.sign(world.card.folder, note),
                          content_type="text/plain", title="A note")
    assert answer.status_code == 303, answer.text
    page = world.web.get(f"/workspace/record/{world.patient_id}?lang=en")
    document_id = re.findall(r'data-document="([0-9a-f]+)"', page.text)
    shown = [world.web.get(f"/workspace/record/{world.patient_id}/document/{d}")
             for d in document_id]
    (text,) = [p for p in shown if "Allergy to penicillin" in p.text]
    assert "creatinine &lt; 80 &amp; stable" in text.text  # escaped as text
    assert 'data-verified="true"' in text.text
    path = text.url.path + "/content"
    content = world.web.get(path)
    assert content.content == note
    assert content.headers["content-security-policy"].startswith("sandbox;")
    assert content.headers["x-content-type-options"] == "nosniff"


def test_an_emergency_beyond_the_quota_is_refused_in_words_and_alerts_the_officer(
        platform: Platform, world: World) -> None:
    """One declaration allowed in 24 hours: the second, on another record, is refused with the
    engine's reason on the page (403), nothing opens, and the officer is alerted."""
    platform.care.emergency_quota = 1
    first = f"/workspace/record/{world.stranger_id}/emergency"
    csrf = CSRF.search(world.web.get(first + "?lang=en").text)
    assert csrf
    assert world.web.post(first, data={"csrf": csrf.group(1), "reason": "unconscious"},
                          follow_redirects=False).status_code == 303
    second = f"/workspace/record/{world.patient_id}/emergency"
    refused = world.web.post(second + "?lang=fr", data={"csrf": csrf.group(1),
                                                       "reason": "unconscious again"},
                             follow_redirects=False)
    assert refused.status_code == 403
    assert "autant d&#39;urgences" in refused.text or "autant d'urgences" in refused.text
    assert "Traceback" not in refused.text
    mine = [e for e in entries(platform) if e.get("patient") == world.patient_id
            and e.get("interaction") == "emergency-access"]
    assert [(e["kind"], e["outcome"]) for e in mine] == [("policy", "4"), ("alert", "4")]
    assert mine[1]["detail"]["decision"] == "deny"
    with platform.unit_of_work() as uow:
        assert uow.records.emergencies_declared(world.card.practitioner_id,
                                                datetime.now(UTC) - timedelta(days=1)) == 1
