"""The ground the OWASP API Security Top 10 attacks (``tests/security/owasp_api/``) are played
on, and what they report.

`World` is one small population written the production way (HTTP and the services): two
patients, their apps, the physicians who saw them and their signed documents, a stranger who
saw nobody, a pharmacist the first patient granted, and a notification, a consent and an
encounter on each record. `Target` is an application under attack (the real one, or a
deliberately weakened variant sharing the same database) with the world it holds.

Every attack is a callable ``attack(target) -> list[str]``: the findings, in words; an empty list
means the attack was refused, nothing was written and nothing leaked. So one attack runs against
the real platform (where it must find nothing) and against a weakened one (where it must find the
weakness): see ``test_planted_bugs.py``. `Findings` collects them, `data_fingerprint` tells
whether anything was written, `records_since` reads the audit entries a request left.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import select
from starlette.testclient import TestClient

from carevault.adapters.keys.pki_keys import ca_key_password
from carevault.adapters.storage import schema
from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.domain.authorization import Authority
from carevault.fhirmodel.directory import new_role
from carevault.services import directory as svc
from carevault.services import pki
from support.authorities import authorize, presence_code, registrar_headers, with_presence
from support.backend import Holder, get_token, holder
from support.builders import hospital, patient
from support.documents import FHIR_JSON, Pro, created_id, grant, provide_bundle, publish
from support.tokens import officer_headers, patient_headers

MARKER_A = "MARKER-A-Zo\u00eb-4417"  # in the bytes of patient A's report
MARKER_SECRET = "MARKER-SECRET-7713"  # in the bytes of A's secret (V) document
MARKER_B = "MARKER-B-Lux-9052"  # in the bytes of patient B's report
TITLE_SECRET = "Title-SECRET-of-A-5531"  # the sealed title of A's secret document

# Tables whose rows are the facts the engine trusts and the clinical content: an attack that
# is refused leaves every one of them as it was. What a refused request may legitimately
# leave behind is named here and nothing else (the audit log, the tokens and assertions spent
# to make the attack, throttling state, sessions).
NOT_DATA = frozenset({
    "audit_entry", "audit_node", "audit_log_state", "audit_tree_head", "audit_export_cursor",
    "audit_chain_head",  # the per-patient chain's head moves with every audited refusal
    "oauth_assertion", "oauth_token", "oauth_code", "oauth_client",
    "login_attempt_state", "portal_session",
    # The anomaly detector's place in the log, and the alerts an attack may rightly raise.
    "anomaly_cursor", "access_alert",
})


def pdf(marker: str) -> bytes:
    return (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
            + f"% {marker}\n".encode() + b"trailer\n<< /Root 1 0 R >>\n%%EOF\n")


def encounter(patient_id: str, practitioner_id: str) -> dict[str, Any]:
    return {"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "subject": {"reference": f"Patient/{patient_id}"},
            "participant": [{"individual": {"reference": f"Practitioner/{practitioner_id}"}}],
            "period": {"start": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}}


@dataclass
class World:
    """Who and what the attacks are aimed at (ids and ready-made headers)."""

    platform: Platform
    hospital_id: str
    doctor: Pro  # saw patient A (a care event proved by A's code); author of A's documents
    doctor_b: Pro  # saw patient B; author of B's report
    stranger: Pro  # a physician who saw nobody and was granted nothing
    pharmacist: Pro  # granted a normal access by A
    patient_a: str
    patient_b: str
    app_a: dict[str, str]  # patient A's app (patient/*.cruds, launch context A)
    app_b: dict[str, str]
    report_a: str  # DocumentReference (and Binary) id: a consultation report on A, N
    secret_a: str  # a consultation report on A, V: its author and A only
    report_b: str
    set_b: str  # the SubmissionSet (List) id of B's report
    encounter_a: str
    encounter_b: str
    consent_b: str  # B's grant to doctor_b's colleague... any Consent id of B's record
    notice_b: str  # a Communication id of B's record

    @cached_property
    def registrar(self) -> dict[str, str]:
        return registrar_headers(self.platform)

    @cached_property
    def officer(self) -> dict[str, str]:
        return {**officer_headers(self.platform), **FHIR_JSON}


def _see(http: TestClient, platform: Platform, who: Pro, patient_id: str) -> str:
    """A care event the patient proved with their presence code; returns the Encounter id."""
    seen = http.post("/fhir/Encounter", headers=who.headers, json=with_presence(
        encounter(patient_id, who.id), presence_code(platform, patient_id)))
    assert seen.status_code == 201, seen.text
    return str(seen.json()["id"])


def _set_of(response: Any) -> str:
    locations = [e["response"]["location"] for e in response.json()["entry"]]
    return next(loc.split("/")[-3] for loc in locations if "/List/" in loc)


def build_world(platform: Platform, http: TestClient) -> World:
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        organization = svc.create_organization(uow, ctx, hospital(ctx.systems))
    with platform.unit_of_work() as uow:
        a, b = svc.register_patients(uow, ctx, [patient(ctx.systems, 1, local="H-1"),
                                                patient(ctx.systems, 2, family="Schmit",
                                                        local="H-2")])
    doctor, doctor_b = Pro(platform, "HP-OWASP-A"), Pro(platform, "HP-OWASP-B")
    stranger = Pro(platform, "HP-OWASP-STRANGER")
    pharmacist = Pro(platform, "HP-OWASP-PHARMA", "pharmacist", None)
    app_a = {**patient_headers(platform, a.id), **FHIR_JSON}
    app_b = {**patient_headers(platform, b.id), **FHIR_JSON}
    encounter_a = _see(http, platform, doctor, a.id)
    encounter_b = _see(http, platform, doctor_b, b.id)
    grant(http, app_a, a.id, pharmacist.id)
    report_a = created_id(publish(http, doctor, provide_bundle(
        a.id, doctor, pdf(MARKER_A))))
    secret_a = created_id(publish(http, doctor, provide_bundle(
        a.id, doctor, pdf(MARKER_SECRET), confidentiality="V", title=TITLE_SECRET)))
    published_b = publish(http, doctor_b, provide_bundle(b.id, doctor_b, pdf(MARKER_B)))
    assert published_b.status_code == 200, published_b.text
    consents_b = http.get("/fhir/Consent", params={"patient": f"Patient/{b.id}"},
                          headers=app_b).json()
    notices_b = http.get("/fhir/Communication", params={"patient": f"Patient/{b.id}"},
                         headers=app_b).json()
    return World(
        platform, organization.id, doctor, doctor_b, stranger, pharmacist, a.id, b.id,
        app_a, app_b, report_a, secret_a, created_id(published_b), _set_of(published_b),
        encounter_a, encounter_b, consents_b["entry"][0]["resource"]["id"],
        notices_b["entry"][0]["resource"]["id"])


@dataclass
class Target:
    """An application under attack: its HTTP client, its platform (for reading back what was
    stored and recorded) and the world in its database."""

    http: TestClient
    platform: Platform
    world: World

    def client(self, address: str) -> TestClient:
        """Another client of the same application, from ``address`` (rate limits are per
        address): used as a context manager by the attack that needs it."""
        return TestClient(self.http.app, base_url="http://127.0.0.1:8000",
                          client=(address, 4300), raise_server_exceptions=False)


Attack = Callable[[Target], list[str]]


# --- what an attack reports ------------------------------------------------------------------


@dataclass
class Findings:
    """What an attack found, in words. Each check adds a finding when the defence failed."""

    items: list[str] = field(default_factory=list)

    def add(self, finding: str) -> None:
        self.items.append(finding)

    def status(self, response: Any, expected: int | Iterable[int], what: str) -> bool:
        """The refusal has the expected status and is a FHIR OperationOutcome (or an OAuth
        error); True when it does."""
        wanted = {expected} if isinstance(expected, int) else set(expected)
        if response.status_code not in wanted:
            self.add(f"{what}: answered {response.status_code} (expected "
                     f"{' or '.join(map(str, sorted(wanted)))}): {response.text[:300]}")
            return False
        return True

    def outcome(self, response: Any, what: str) -> None:
        """The refusal is an OperationOutcome, with no stack trace."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
            self.add(f"{what}: the refusal is not an OperationOutcome: {response.text[:200]}")
        if "Traceback" in response.text:
            self.add(f"{what}: the answer holds a stack trace")

    def refused(self, response: Any, expected: int | Iterable[int], what: str) -> bool:
        ok = self.status(response, expected, what)
        if ok:
            self.outcome(response, what)
        return ok

    def absent(self, text: str, secrets: Iterable[str], what: str) -> None:
        for secret in secrets:
            if secret and secret in text:
                self.add(f"{what}: the answer reveals {secret!r}")

    def unchanged(self, before: dict[str, str], after: dict[str, str], what: str) -> None:
        changed = sorted(name for name in before if before[name] != after.get(name))
        if changed:
            self.add(f"{what}: it wrote to {', '.join(changed)}")

    def recorded(self, platform: Platform, since: dict[str, int], status: int, what: str,
                 *, alert: bool = False) -> list[AuditRecord]:
        """The audit log holds the refusal (outcome not 0, its status), and an alert for the
        security officer when ``alert``."""
        entries = records_since(platform, since)
        refusals = [r for r in entries if r.kind != "alert" and r.outcome != "0"
                    and r.status == status]
        if not refusals:
            self.add(f"{what}: no audit entry records the refusal ({status})")
        if alert and not [r for r in entries if r.kind == "alert"]:
            self.add(f"{what}: the security officer was not alerted")
        return refusals

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)


def data_fingerprint(platform: Platform) -> dict[str, str]:
    """A digest of every row of every data table (all but `NOT_DATA`), table by table: equal
    before and after a request means it wrote nothing there."""
    digests = {}
    with platform.engine.connect() as connection:
        for table in schema.metadata.sorted_tables:
            if table.name in NOT_DATA:
                continue
            rows = connection.execute(select(table).order_by(*table.primary_key.columns)
                                      if table.primary_key.columns else select(table)).all()
            digests[table.name] = hashlib.sha256(
                "\n".join(sorted(repr(tuple(row)) for row in rows)).encode()).hexdigest()
    return digests


def audit_sizes(platform: Platform) -> dict[str, int]:
    return {stream: platform.audit.size(stream) for stream in ("clinical", "operator")}


def records_since(platform: Platform, since: dict[str, int]) -> list[AuditRecord]:
    found = []
    for stream, start in since.items():
        size = platform.audit.size(stream)
        found += [AuditRecord.from_canonical(data)
                  for _, data in platform.audit.entries(stream, start, size)]
    return found


def attempt(findings: Findings, target: Target, what: str, send: Callable[[], Any],
            expected: int | Iterable[int], *, secrets: Iterable[str] = (),
            alert: bool = False, recorded: bool = True) -> Any:
    """One refused attempt, checked completely: its status and OperationOutcome, nothing
    written, nothing of ``secrets`` in the answer, and its refusal in the audit log."""
    before, since = data_fingerprint(target.platform), audit_sizes(target.platform)
    response = send()
    if findings.refused(response, expected, what):
        findings.absent(response.text, secrets, what)
        if recorded:
            status = response.status_code
            findings.recorded(target.platform, since, status, what, alert=alert)
    else:
        findings.absent(response.text, secrets, what)
    findings.unchanged(before, data_fingerprint(target.platform), what)
    return response


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def card(platform: Platform, practitioner_id: str) -> Holder:
    """A new card (certificate, key, chain) of a registered professional."""
    ctx = pki.PkiContext(systems=platform.directory.systems,
                         ca_password=ca_key_password(platform.settings.key_source),
                         clock=lambda: datetime.now(UTC))
    issued: list[pki.Credentials] = []
    with platform.unit_of_work() as uow:
        pki.issue_practitioner_certificate(uow, ctx, practitioner_id, issued.append)
    return holder(issued[0])


def hospital_system(target: Target, *authorities: Authority) -> dict[str, str]:
    """The token of the hospital's own system (a system certificate of the world's hospital,
    registered as ``authorities``), acting for patient A's physician, who works there."""
    platform, world = target.platform, target.world
    ctx = platform.directory
    pki_ctx = pki.PkiContext(systems=ctx.systems,
                             ca_password=ca_key_password(platform.settings.key_source),
                             clock=lambda: datetime.now(UTC))
    with platform.unit_of_work() as uow:
        svc.create_role(uow, ctx, new_role(ctx.professions, practitioner_id=world.doctor.id,
                                           profession="physician",
                                           organization_id=world.hospital_id))
    issued: list[pki.Credentials] = []
    with platform.unit_of_work() as uow:
        pki.issue_system_certificate(uow, pki_ctx, world.hospital_id, issued.append)
    for authority in authorities:
        authorize(platform, world.hospital_id, authority)
    token = get_token(target.http, holder(issued[0]), platform, scope="system/*.cruds",
                      act={"sub": "HP-OWASP-A"})
    return {"Authorization": f"Bearer {token}", **FHIR_JSON}


class Listener:
    """A listening TCP socket on the loopback that nobody is meant to call: after a request
    has been answered, `connections` says whether the server under attack connected to it
    while serving it (the kernel completes a connection into the backlog before the caller's
    connect returns, so a fetch made during the request is there to be counted)."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.socket.setblocking(False)
        self.port = int(self.socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0

    def connections(self) -> int:
        while True:
            try:
                connection, _ = self.socket.accept()
            except BlockingIOError:
                return self.accepted
            connection.close()
            self.accepted += 1

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *_: object) -> None:
        self.socket.close()


class Impostor:
    """An HTTP server on the loopback that answers every POST with ``status``, ``headers``
    and ``body``: a time-stamping authority (or any service CareVault calls) gone wrong."""

    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                 ) -> None:
        answer = (status, body, headers or {})

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                code, content, extra = answer
                self.send_response(code)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tsa"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Impostor:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
