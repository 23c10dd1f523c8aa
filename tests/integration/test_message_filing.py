"""Into the record (issue #22, item 6), on SQLite and PostgreSQL: Anne sends Paul and Léa a
message with a PDF; Paul files it into a patient's record with ``carevault message file``
(decrypted on his side with his messaging key, signed with his card, submitted as ITI-65 over
the HTTP API); the document is in the record, authored and signed by Paul. Léa, to whom the
patient gave no access, is refused by the engine. The command line's HTTP client is handed the
application itself (no sockets)."""

from __future__ import annotations

import base64
import json
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from sqlalchemy import Engine
from starlette.testclient import TestClient
from typer.testing import CliRunner

from carevault.bootstrap import Platform, build
from carevault.cli import messaging_commands
from carevault.cli.main import app
from carevault.client import messaging as client
from carevault.services import directory as svc
from carevault.services.messaging import Sender
from carevault.settings import Settings
from support.builders import patient
from support.documents import PDF, grant
from support.messaging import World, build_world
from support.tokens import patient_headers


class InProcess(TestClient):
    """The application as the command line's HTTP client: entering and leaving it does not
    run the application's lifespan (which would close the platform's audit log)."""

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *_: object) -> None:
        return None


@dataclass
class Filing:
    platform: Platform
    world: World
    http: TestClient
    patient_id: str
    mine: dict[str, str]  # the patient's app

    def run(self, *args: str) -> Any:
        return CliRunner().invoke(app, ["message", *args, "--api",
                                        self.platform.settings.public_url])


@pytest.fixture
def filing(settings: Settings, engine: Engine, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Filing]:
    settings = settings.model_copy(update={"messaging_maildir": tmp_path / "mail"})
    platform = build(settings, engine)
    world = build_world(settings, engine, tmp_path / "people", ("anne", "paul", "lea"))
    with platform.unit_of_work() as uow:
        patient_id = svc.create_patient(uow, platform.directory,
                                        patient(platform.directory.systems, 11)).id
    monkeypatch.setattr(messaging_commands, "_http",
                        lambda _ca: InProcess(platform.app, raise_server_exceptions=True))
    with TestClient(platform.app) as http:
        mine = patient_headers(platform, patient_id)
        grant(http, mine, patient_id, world.people["paul"].practitioner_id)
        yield Filing(platform, world, http, patient_id, mine)


def send_with_pdf(f: Filing) -> bytes:
    world = f.world
    anne = world.people["anne"]
    message = world.compose("anne", ["paul", "lea"], "ECG de Mme X, à verser au dossier",
                            attachments=[client.Attachment("ecg.pdf", "application/pdf", PDF)])
    world.service(f.platform.audit).submit(
        Sender(anne.address, anne.practitioner_id, anne.card_serial),
        [world.people["paul"].address, world.people["lea"].address], message, "127.0.0.1")
    return message


def test_a_colleague_files_an_attachment_into_the_record(filing: Filing) -> None:
    paul, lea = filing.world.people["paul"], filing.world.people["lea"]
    send_with_pdf(filing)
    listed = filing.run("list", "--card", str(paul.folder), "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert row["from"] == filing.world.people["anne"].address and row["warnings"] == []
    assert row["attachments"] == ["ecg.pdf"]

    done = filing.run("file", row["uid"], "--card", str(paul.folder), "--attachment", "1",
                      "--patient", filing.patient_id, "--title", "ECG du 12/03")
    assert done.exit_code == 0, done.output
    made = [line.split("/")[1] for line in done.output.splitlines()
            if line.startswith("DocumentReference/")]
    assert len(made) == 2  # the document and Paul's signature of it

    # In the record: what the patient sees is Anne's PDF, authored by Paul, signed by him.
    found = filing.http.get("/fhir/DocumentReference", headers=filing.mine,
                            params={"patient": f"Patient/{filing.patient_id}"})
    assert found.status_code == 200, found.text
    documents = {e["resource"]["id"]: e["resource"] for e in found.json().get("entry", [])
                 if e["resource"]["resourceType"] == "DocumentReference"}
    document = documents[made[0]]
    assert document["author"][0]["reference"] == f"Practitioner/{paul.practitioner_id}"
    assert document["content"][0]["attachment"]["title"] == "ECG du 12/03"
    assert document["content"][0]["attachment"]["contentType"] == "application/pdf"
    binary = filing.http.get(document["content"][0]["attachment"]["url"], headers=filing.mine)
    assert binary.status_code == 200 and binary.content == PDF
    signature = filing.http.get(f"/fhir/DocumentReference/{made[1]}", headers=filing.mine)
    assert signature.status_code == 200, signature.text
    signed = signature.json()
    assert signed["relatesTo"][0]["target"]["reference"].endswith(made[0])
    jws = filing.http.get(signed["content"][0]["attachment"]["url"], headers=filing.mine).content
    protected, payload, mac = jws.split(b".")
    assert payload == b""  # detached: the signature covers the document's own bytes
    header = json.loads(urlsafe_b64decode(protected + b"=="))
    signer = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    assert signer == paul.card_certificate  # Paul's card, not Anne's
    raw = urlsafe_b64decode(mac + b"==")
    key = signer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:])),
               protected + b"." + urlsafe_b64encode(PDF).rstrip(b"="), ec.ECDSA(hashes.SHA256()))

    # Léa received the same message but has no access to this patient's record.
    listed = filing.run("list", "--card", str(lea.folder), "--json")
    (hers,) = json.loads(listed.output)
    refused = filing.run("file", hers["uid"], "--card", str(lea.folder), "--attachment", "1",
                         "--patient", filing.patient_id)
    assert refused.exit_code == 1
    assert "refused (403)" in refused.output, refused.output
    after = filing.http.get("/fhir/DocumentReference", headers=filing.mine,
                            params={"patient": f"Patient/{filing.patient_id}"})
    assert len(after.json().get("entry", [])) == len(found.json().get("entry", []))


def test_what_is_not_filed(filing: Filing) -> None:
    paul = filing.world.people["paul"]
    send_with_pdf(filing)
    (row,) = json.loads(filing.run("list", "--card", str(paul.folder), "--json").output)
    no_such = filing.run("file", row["uid"], "--card", str(paul.folder), "--attachment", "2",
                         "--patient", filing.patient_id)
    assert no_such.exit_code == 1 and "1 attachment(s)" in no_such.output
    # A message the mailbox does not hold.
    unknown = filing.run("file", "1700000000.0123456789abcdef.x,S=1", "--card",
                         str(paul.folder), "--attachment", "1", "--patient", filing.patient_id)
    assert unknown.exit_code == 1 and "refused (404)" in unknown.output
    # A message that is flagged (here: the CRL says the sender's card is revoked) is not filed.
    from carevault.services import pki

    with filing.platform.unit_of_work() as uow:
        pki.revoke(uow, filing.world.people["anne"].card_serial, "keyCompromise",
                   filing.platform.policy.clock())
    crl = filing.http.get("/pki/crl").content
    crl_file = paul.folder / "platform.crl"
    crl_file.write_bytes(crl)
    flagged = filing.run("file", row["uid"], "--card", str(paul.folder), "--attachment", "1",
                         "--patient", filing.patient_id, "--crl", str(crl_file))
    assert flagged.exit_code == 1 and "signer-revoked" in flagged.output, flagged.output
