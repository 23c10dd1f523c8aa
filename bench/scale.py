"""National scale (issue 21, items 1 and 2): a bulk loader through the real schema, and the
scaling curve of the hot operations measured on what it loaded.

``load`` fills a migrated PostgreSQL database with N patients and M documents by COPY, in
chunks of patients, each chunk one transaction with its documents and one operator-stream audit
entry appended through the real audit log (`AuditLog.append_with`). What is real and what is not:

- the directory (organizations, hospitals' authorities, professionals and their roles) is made
  by the demo loader, through the registration services, exactly as ``carevault demo`` does;
- patients come from `carevault.demo.population` (valid national numbers, local numbers of the
  hospitals), built into FHIR by `new_patient` and indexed by `patient_entry` (the directory's
  own index extraction), into ``patient``, ``patient_name``, ``patient_identifier``,
  ``patient_postal_code`` and ``resource_history``. The registration path also validates each
  resource with ``fhir.resources`` (0.85 ms a patient, 14 min for a million on one core): the
  loader validates the first patient of every chunk only, the others being built by the same
  code;
- each patient has a record, one encounter with their GP (a generated physician) and the
  care-event grant it gives, as `CareAccess.record_care_event` writes them;
- each document has its ``document``, ``document_metadata`` (class and type codes from the
  affinity domain and their engine class, format, practice setting, facility type, a
  confidentiality mix of 85 % N, 12 % R, 3 % V, an author among the generated professionals
  with their organization), a ``submission_set`` of its own, and ``document_content`` sealed by
  the platform's vault (`EnvelopeVault.seal`: a fresh data key per document, wrapped by the
  KEK, bound to the document id), its title sealed the same way: every document is its own
  ciphertext, retrievable and integrity-checked by ITI-68. No signature documents are loaded
  (a real ITI-65 from a professional adds one per document).

Ids are deterministic (UUID 5 of the sequence number), so a re-run finds how many patients are
loaded (a binary search over the ids: chunks commit in order, whole) and continues after them;
a chunk can never be loaded twice (its ids would collide).

``measure`` builds the production app in this process on that database (as bench/soak.py does),
with real tokens (tests/support), and times each operation for random patients of the loaded
set; ``curve`` runs load and measure at several sizes, each in its own database, and writes
bench/results/scale.json, an SVG plot and the EXPLAIN plans of the hot queries.

Run: ``.venv/bin/python bench/scale.py curve --sizes 10000,100000`` (README, "scale").
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing
import os
import platform as host
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NAMESPACE = uuid.UUID("6f1c2a5e-3d1b-4c57-9a7e-2b8f0e6d4a11")
SOURCE_ID = "urn:oid:1.3.6.1.4.1.21367.2026.21"
LOINC = "http://loinc.org"
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
CONFIDENTIALITY = (("N", 0.85), ("R", 0.12), ("V", 0.03))
OPERATIONS = (
    "pdqm_family",
    "pdqm_identifier",
    "iti67_find",
    "iti68_retrieve",
    "iti65_submit",
    "access_history",
    "engine_decision",
)


def det_id(kind: str, number: int) -> str:
    """The id of the ``number``-th patient, document, … of the load: the same on every run."""
    return hashlib.blake2b(f"{kind}:{number}".encode(), digest_size=16,
                           key=NAMESPACE.bytes).hexdigest()


def _as_uuid(hex_id: str) -> str:
    """An id in the 8-4-4-4-12 form of a uniqueId (``urn:uuid:…``)."""
    return f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"


def key_file_for(database_url: str) -> Path:
    """Where the load keeps its database's key file (the measure needs the same keys)."""
    from sqlalchemy.engine import make_url

    name = make_url(database_url).database or "carevault"
    return Path(os.environ.get("CAREVAULT_SCALE_KEYS", Path.home() / ".cache/carevault-scale")) / (
        f"{name}.key"
    )


def platform_for(database_url: str, key_file: Path | None = None, pool: int = 8) -> Any:
    """The production platform on ``database_url`` (migrated first), with its key file."""
    from carevault.adapters.keys.local_file import create_key_file
    from carevault.adapters.storage.database import connect, upgrade
    from carevault.bootstrap import build
    from carevault.settings import Settings

    key = key_file or key_file_for(database_url)
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        create_key_file(key)
    engine = connect(database_url, pool_size=pool)
    upgrade(engine)
    settings = Settings(database_url=database_url, key_source=f"file:{key}", environment="dev",
                        rate_limit_per_minute=10_000_000, request_threads=pool,
                        _env_file=None)  # type: ignore[call-arg]
    return build(settings, engine)


# --- load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Professional:
    id: str
    identifier: str
    organization_id: str
    profession: str


@dataclass
class LoadReport:
    patients: int
    documents: int
    loaded_now: int
    seconds: float
    patients_per_s: float
    documents_per_s: float
    chunks: int
    operator_log_verified: str


def documents_before(patient: int, patients: int, documents: int) -> int:
    """How many documents the patients before ``patient`` have (spread evenly)."""
    per, extra = divmod(documents, patients)
    return patient * per + min(patient, extra)


def loaded_patients(connection: Any, patients: int) -> int:
    """How many of the load's patients are in the database: chunks commit whole and in order,
    so the loaded ones are a prefix of the sequence, found by binary search on their ids."""
    low, high = 0, patients  # patient[low - 1] is loaded (or low == 0); patient[high] is not
    while low < high:
        middle = (low + high) // 2
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM patient WHERE id = %s", (det_id("patient", middle),))
            found = cursor.fetchone() is not None
        if found:
            low = middle + 1
        else:
            high = middle
    return low


def _directory(platform: Any, professionals: int, seed: int) -> list[Professional]:
    """The organizations and professionals, through the demo loader (the registration
    services, audited), once; then the professionals who work for an organization."""
    from carevault.adapters.storage import schema as t
    from carevault.demo import loader

    if not loader.demo_loaded(platform.unit_of_work):
        loader.load(platform.unit_of_work, platform.directory, patients=0,
                    professionals=professionals, seed=seed)
    p, r = t.practitioner, t.practitioner_role
    from sqlalchemy import select

    with platform.engine.connect() as connection:
        rows = connection.execute(
            select(p.c.id, p.c.identifier, r.c.organization_id, r.c.profession)
            .join(r, r.c.practitioner_id == p.c.id)
            .where(r.c.organization_id.is_not(None), r.c.active.is_(True))
            .order_by(p.c.identifier)
        ).all()
    return [Professional(row.id, row.identifier, row.organization_id, row.profession)
            for row in rows]


class _Codes:
    """The affinity domain's codes the documents are drawn from: (class, type) pairs whose
    engine classes agree, and the format, practice setting and facility type value sets."""

    def __init__(self, affinity: Any) -> None:
        domain = json.loads((ROOT / "src/carevault/config/affinity-domain.json").read_text())
        sets = domain["valuesets"]

        def codes(name: str) -> list[tuple[str, str, str | None]]:
            return [(c["system"], c["code"], c.get("engine_class")) for c in sets[name]["codes"]]

        classes, types = codes("xds-classcode"), codes("xds-typecode")
        self.pairs: list[tuple[tuple[str, str], tuple[str, str], str]] = []
        for c_system, c_code, c_engine in classes:
            for t_system, t_code, t_engine in types:
                if t_engine not in (None, c_engine):
                    continue
                engine = affinity.engine_class((c_system, c_code), (t_system, t_code))
                if engine is not None:
                    self.pairs.append(((c_system, c_code), (t_system, t_code), engine))
        self.formats = [f"{s}|{c}" for s, c, _ in codes("xds-formatcode")
                        if "dsg" not in c]
        self.settings = [f"{s}|{c}" for s, c, _ in codes("xds-practicesettingcode")]
        self.facilities = [f"{s}|{c}" for s, c, _ in codes("xds-healthcarefacilitytypecode")]


_PATIENT_COLUMNS = ("id", "version_id", "national_id", "birth_date", "gender", "active",
                    "merged_into", "resource", "updated_at")
_COPIES: dict[str, tuple[str, ...]] = {
    "patient": _PATIENT_COLUMNS,
    "patient_name": ("patient_id", "position", "family_folded", "given_folded"),
    "patient_identifier": ("patient_id", "system", "value"),
    "patient_postal_code": ("patient_id", "postal_code"),
    "resource_history": ("resource_type", "resource_id", "version_id", "patient_id", "resource",
                         "recorded_at"),
    "record": ("patient_id", "state", "referring_physician_id", "emergency_setting",
               "delegation_allowed", "default_confidentiality", "updated_at"),
    "encounter": ("id", "version_id", "patient_id", "practitioner_id", "organization_id",
                  "period_start", "period_end", "resource", "created_at"),
    "record_grant": ("id", "patient_id", "party", "party_id", "level", "starts_at", "ends_at",
                     "granted_by", "delegable", "source", "source_ref", "created_at"),
    "document": ("id", "patient_id", "author_id", "author_organization_id", "class_code",
                 "type_code", "confidentiality", "hidden", "not_yet_visible", "held_until",
                 "created_at"),
    "submission_set": ("id", "patient_id", "master_identifier", "source_id", "author_id",
                       "submitted_at", "document_ids", "details"),
    "document_metadata": ("document_id", "patient_id", "status", "master_identifier",
                          "xds_class", "xds_type", "format", "practice_setting",
                          "facility_type", "events", "content_type", "size", "sha256", "sha1",
                          "created", "service_start", "service_end", "language", "replaces",
                          "signs", "submission_set_id", "patient_authored", "release_at",
                          "sealed_text", "text_kek_id"),
    "document_content": ("document_id", "patient_id", "kek_id", "wrapped_key", "nonce",
                         "ciphertext", "location", "created_at"),
}


class _Chunk:
    """The rows of one chunk, table by table, in COPY column order."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in _COPIES}

    def add(self, table: str, *values: Any) -> None:
        self.rows[table].append(values)


def _column_types(driver: Any) -> dict[str, list[str]]:
    """Each copied column's PostgreSQL type, in COPY order (binary COPY needs them)."""
    types: dict[str, list[str]] = {}
    with driver.cursor() as cursor:
        for table, columns in _COPIES.items():
            cursor.execute(
                "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a "
                "WHERE a.attrelid = %s::regclass AND a.attnum > 0", (table,))
            found = dict(cursor.fetchall())
            types[table] = ["text" if found[c] == "character varying" else found[c]
                            for c in columns]
    return types


def _content(number: int, title: str, patient: str, size: int) -> bytes:
    """A PDF-like document of about ``size`` bytes, distinct for every document."""
    head = (f"%PDF-1.7\n% CareVault scale document {number}\n% {title} for {patient}\n"
            ).encode()
    filler = hashlib.sha256(head).hexdigest().encode() * (max(0, size - len(head) - 7) // 64 + 1)
    return head + filler[: max(0, size - len(head) - 7)] + b"\n%%EOF\n"


class Loader:
    """Builds and copies chunks; one instance per load."""

    def __init__(self, platform: Any, professionals: list[Professional], *, patients: int,
                 documents: int, seed: int, content_bytes: int) -> None:
        from carevault.adapters.crypto.envelope import CONTENT
        from carevault.services.document_publication import TEXT

        self.platform = platform
        self.patients = patients
        self.documents = documents
        self.seed = seed
        self.content_bytes = content_bytes
        self.codes = _Codes(platform.documents.affinity)
        self.physicians = [p for p in professionals if p.profession == "physician"]
        self.authors = [p for p in professionals
                        if p.profession in ("physician", "laboratory-biologist", "nurse")]
        if not self.physicians:
            raise SystemExit("the directory has no physician with an organization")
        self.care = platform.care.care_relationship
        self.national = platform.directory.systems.national
        self.purposes = (CONTENT, TEXT)
        self.now = datetime.now(UTC)
        self.types: dict[str, list[str]] = {}

    def chunk(self, first: int, people: Sequence[Any]) -> _Chunk:
        from carevault.adapters.storage.directory_store import dump
        from carevault.demo.loader import local_id_system
        from carevault.domain.authorization import RecordFacts
        from carevault.domain.directory import Identifier
        from carevault.domain.text import fold
        from carevault.fhirmodel.directory import new_patient, patient_entry, with_national_id
        from carevault.fhirmodel.validate import validate_resource

        chunk = _Chunk()
        now = self.now
        stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        defaults = RecordFacts(patient_id="-")
        vault = self.platform.vault
        content_purpose, text_purpose = self.purposes
        for offset, person in enumerate(people):
            number = first + offset
            rng = random.Random(f"scale:{self.seed}:{number}")
            patient_id = det_id("patient", number)
            resource = new_patient(
                self.platform.directory.systems, national_id=person.national_id,
                family=person.family, given=list(person.given), birth_date=person.birth_date,
                gender=person.gender, postal_code=person.postal_code, city=person.city,
                line=person.street, phone=person.phone,
                local_ids=[Identifier(local_id_system(k), v) for k, v in person.local_ids])
            if offset == 0:
                resource = validate_resource(resource, "Patient")
            entry = patient_entry(resource, self.platform.directory.systems)
            with_national_id(resource, self.platform.directory.systems, entry.national_id)
            resource["id"] = patient_id
            resource["meta"] = {"versionId": "1", "lastUpdated": stamp}
            text = dump(resource)
            chunk.add("patient", patient_id, 1, entry.national_id, entry.birth_date,
                      entry.gender, entry.active, None, text, now)
            for position, name in enumerate(entry.names):
                chunk.add("patient_name", patient_id, position, fold(name.family),
                          fold(" ".join(name.given)))
            chunk.add("patient_identifier", patient_id, self.national, entry.national_id)
            for local in entry.local_ids:
                chunk.add("patient_identifier", patient_id, local.system, local.value)
            for code in entry.postal_codes:
                chunk.add("patient_postal_code", patient_id, code.strip().upper())
            chunk.add("resource_history", "Patient", patient_id, 1, patient_id, text, now)
            chunk.add("record", patient_id, defaults.state.value, None,
                      defaults.emergency_setting.value, defaults.delegation_allowed,
                      defaults.default_confidentiality.value, now)
            gp = self.physicians[number % len(self.physicians)]
            encounter_id = det_id("encounter", number)
            start = now - timedelta(days=rng.randrange(0, 30), minutes=rng.randrange(1440))
            encounter = {
                "resourceType": "Encounter", "id": encounter_id, "status": "finished",
                "meta": {"versionId": "1", "lastUpdated": stamp},
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                          "code": "AMB"},
                "subject": {"reference": f"Patient/{patient_id}"},
                "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
                "serviceProvider": {"reference": f"Organization/{gp.organization_id}"},
                "period": {"start": start.isoformat()},
            }
            chunk.add("encounter", encounter_id, 1, patient_id, gp.id, gp.organization_id,
                      start, None, json.dumps(encounter, separators=(",", ":")), now)
            chunk.add("record_grant", det_id("grant", number), patient_id, "practitioner",
                      gp.id, "normal", start, start + self.care, f"Practitioner/{gp.id}", False,
                      "care-event", f"Encounter/{encounter_id}", now)
            low = documents_before(number, self.patients, self.documents)
            high = documents_before(number + 1, self.patients, self.documents)
            for document in range(low, high):
                self._document(chunk, rng, document, patient_id, gp, vault,
                               content_purpose, text_purpose)
        return chunk

    def _document(self, chunk: _Chunk, rng: random.Random, number: int, patient_id: str,
                  gp: Professional, vault: Any, content_purpose: str, text_purpose: str) -> None:
        document_id = det_id("document", number)
        set_id = det_id("submission-set", number)
        author = gp if rng.random() < 0.5 else rng.choice(self.authors)
        (c_system, c_code), (t_system, t_code), engine = rng.choice(self.codes.pairs)
        draw, confidentiality = rng.random(), "N"
        for level, weight in CONFIDENTIALITY:
            if draw < weight:
                confidentiality = level
                break
            draw -= weight
        created = self.now - timedelta(days=rng.randrange(0, 3650), seconds=rng.randrange(86400))
        title = f"{engine.replace('-', ' ').capitalize()} {created:%Y-%m-%d}"
        content = _content(number, title, patient_id, self.content_bytes)
        sealed = vault.seal(content, document_id=document_id, version=1, purpose=content_purpose)
        text = f'{{"title": "{title}", "description": null}}'.encode()
        sealed_text = vault.seal(text, document_id=document_id, version=1, purpose=text_purpose)
        master = f"urn:uuid:{_as_uuid(document_id)}"
        chunk.add("document", document_id, patient_id, author.id, author.organization_id,
                  engine, t_code, confidentiality, False, False, None, created)
        chunk.add("submission_set", set_id, patient_id, f"urn:uuid:{_as_uuid(set_id)}",
                  SOURCE_ID, author.id, created, f'["{document_id}"]', None)
        chunk.add("document_metadata", document_id, patient_id, "current", master,
                  f"{c_system}|{c_code}", f"{t_system}|{t_code}",
                  rng.choice(self.codes.formats), rng.choice(self.codes.settings),
                  rng.choice(self.codes.facilities), "", "application/pdf", len(content),
                  hashlib.sha256(content).hexdigest(),
                  base64.b64encode(hashlib.sha1(content).digest()).decode(),
                  created, None, None, "fr", None, None, set_id, False, None,
                  sealed_text.pack(), sealed_text.kek_id)
        chunk.add("document_content", document_id, patient_id, sealed.kek_id,
                  sealed.wrapped_key, sealed.nonce, sealed.ciphertext, None, created)

    def write(self, chunk: _Chunk, first: int, count: int) -> int:
        """COPY the chunk and append its operator entry, in one transaction."""
        from carevault.adapters.storage.audit_store import AuditStore
        from carevault.cli.context import operator_record

        documents = len(chunk.rows["document"])
        with self.platform.engine.begin() as connection:
            driver = connection.connection.driver_connection
            if not self.types:
                self.types = _column_types(driver)
            with driver.cursor() as cursor:
                for table, columns in _COPIES.items():
                    rows = chunk.rows[table]
                    if not rows:
                        continue
                    # Binary: no text escaping of the ciphertexts on either side.
                    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
                    with cursor.copy(statement) as copy:
                        copy.set_types(self.types[table])
                        for row in rows:
                            copy.write_row(row)
            self.platform.audit.append_with(AuditStore(connection), [operator_record(
                "C", "bulk load", entity_type="Patient",
                detail={"tool": "bench/scale.py load", "patients": f"{first}-{first + count - 1}",
                        "first": det_id("patient", first), "documents": str(documents)})])
        return documents


def _progress(quiet: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class Rate(TextColumn):
        def render(self, task: Any) -> Any:
            from rich.text import Text

            speed = task.speed or 0
            return Text(f"{speed:,.0f} patients/s, {speed * task.fields['docs']:,.0f} docs/s")

    bar = Progress(TextColumn("loading"), BarColumn(), MofNCompleteColumn(),
                   TaskProgressColumn(), Rate(""), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn(), refresh_per_second=1, speed_estimate_period=60,
                   disable=quiet)
    return bar


_LOADER: Loader | None = None  # the forked workers' loader (set before the fork)


def _build(job: tuple[int, list[Any]]) -> tuple[int, int, _Chunk]:
    first, batch = job
    assert _LOADER is not None
    return first, len(batch), _LOADER.chunk(first, batch)


def verify_operator_log(platform: Any) -> str:
    """Recompute the operator stream (every entry, stored hash and signed tree head), as
    ``carevault audit verify --stream operator`` does; the message or a raised error."""
    from carevault.verifier import verify_log

    stream = "operator"
    platform.audit.sign_tree_head(stream)
    read = platform.audit.for_verifier(stream)
    report = verify_log(platform.audit.public_key_pem(stream), read.size, read.entries,
                        read.nodes, read.heads)
    return (f"verified {report.verified_size} entries of the operator log and "
            f"{report.tree_heads_checked} signed tree heads")


def load(database_url: str, *, patients: int, documents: int, chunk: int = 1000, seed: int = 21,
         professionals: int | None = None, content_bytes: int = 1024,
         stop_after_chunks: int | None = None, quiet: bool = False,
         key_file: Path | None = None, workers: int = 1) -> LoadReport:
    """Load (or finish loading) ``patients`` and ``documents``; ``stop_after_chunks`` stops
    early, as an interrupted load would (the smoke test's resume)."""
    from carevault.demo import population

    if patients <= 0 or documents < 0:
        raise SystemExit("--patients must be positive and --documents not negative")
    platform = platform_for(database_url, key_file)
    try:
        wanted = professionals or min(5000, max(50, patients // 400))
        directory = _directory(platform, wanted, seed)
        loader = Loader(platform, directory, patients=patients, documents=documents, seed=seed,
                        content_bytes=content_bytes)
        with platform.engine.connect() as connection:
            done = loaded_patients(connection.connection.driver_connection, patients)
        start_done = done
        people: Iterator[Any] = population.patients(patients, seed)
        for _ in range(done):  # the generator is sequential: skip what is loaded
            next(people)
        began = time.monotonic()
        loaded_documents = 0
        chunks = 0
        bar = _progress(quiet)
        def batches() -> Iterator[tuple[int, list[Any]]]:
            first, count = done, 0
            while first < patients:
                if stop_after_chunks is not None and count >= stop_after_chunks:
                    return
                batch = [next(people) for _ in range(min(chunk, patients - first))]
                yield first, batch
                first += len(batch)
                count += 1

        global _LOADER
        _LOADER = loader
        # Chunks are built (rows, sealing) in forked workers while this process copies the
        # previous ones: the building is pure CPU, the copying mostly waits on the server.
        pool = multiprocessing.get_context("fork").Pool(workers)
        try:
            with bar:
                task = bar.add_task("load", total=patients, completed=done,
                                    docs=documents / patients)
                for first, count, rows in pool.imap(_build, batches()):
                    loaded_documents += loader.write(rows, first, count)
                    done = first + count
                    chunks += 1
                    bar.update(task, completed=done)
        finally:
            pool.terminate()
        seconds = time.monotonic() - began
        verified = verify_operator_log(platform)
        # What autovacuum does to a live platform's tables, done now: statistics for every
        # big table, and the visibility map of those the searches read from their indexes
        # alone (a bulk-loaded table has none until vacuumed). VACUUM runs outside a
        # transaction.
        raw = platform.engine.raw_connection()
        try:
            driver = raw.driver_connection
            driver.autocommit = True
            for table in ("patient", "patient_name", "patient_identifier", "record_grant"):
                driver.execute(f"VACUUM (ANALYZE) {table}")
            for table in ("document", "document_metadata", "document_content", "audit_entry"):
                driver.execute(f"ANALYZE {table}")
            driver.autocommit = False
        finally:
            raw.close()
        loaded_now = done - start_done
        return LoadReport(
            patients=done,
            documents=documents_before(done, patients, documents),
            loaded_now=loaded_now,
            seconds=round(seconds, 1),
            patients_per_s=round(loaded_now / seconds, 1) if seconds else 0.0,
            documents_per_s=round(loaded_documents / seconds, 1) if seconds else 0.0,
            chunks=chunks,
            operator_log_verified=verified,
        )
    finally:
        platform.audit.close()
        platform.engine.dispose()


# --- measure ---------------------------------------------------------------------------------


def _percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


class _Statements:
    """The SELECTs the platform sends while ``current`` is set (for EXPLAIN)."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.current: str | None = None
        self.seen: dict[str, list[tuple[str, Any]]] = {}
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        head = statement.lstrip().upper()
        if self.current is None or not head.startswith(("SELECT", "WITH")):
            return
        if head.startswith("SELECT 1"):
            return
        found = self.seen.setdefault(self.current, [])
        if all(statement != known for known, _ in found):
            found.append((statement, parameters))


def _explain(engine: Any, statements: _Statements, into: Path) -> dict[str, list[str]]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of every SELECT each operation sent, one file per
    operation (in a transaction rolled back); the sequential scans found, per operation."""
    into.mkdir(parents=True, exist_ok=True)
    seq_scans: dict[str, list[str]] = {}
    with engine.connect() as connection:
        driver = connection.connection.driver_connection
        for operation, found in statements.seen.items():
            lines: list[str] = [f"-- {operation}: the SELECTs of one request, as sent\n"]
            for statement, parameters in found:
                with driver.cursor() as cursor:
                    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                    plan = [row[0] for row in cursor.fetchall()]
                driver.rollback()
                lines += [statement.strip(), f"-- parameters: {parameters!r}"[:2000], *plan, ""]
                seq_scans.setdefault(operation, []).extend(
                    line.strip() for line in plan if "Seq Scan" in line)
            (into / f"{operation}.txt").write_text("\n".join(lines) + "\n")
    return {k: v for k, v in seq_scans.items() if v}


def measure(database_url: str, *, samples: int = 300, plans: Path | None = None,
            seed: int = 5, key_file: Path | None = None) -> dict[str, Any]:
    """p50/p99 of each hot operation through the production app, in this process, for random
    patients of the loaded set (those of a few GPs, whose tokens are real)."""
    from starlette.testclient import TestClient

    from carevault.domain.authorization import Action, decide
    from carevault.services.record_policy import practitioner_subject
    from support.documents import Pro, provide_bundle
    from support.tokens import account_token, patient_account

    rng = random.Random(seed)
    platform = platform_for(database_url, key_file, pool=8)
    client = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                        client=("127.0.0.1", 50000))
    client.__enter__()
    statements = _Statements(platform.engine)
    try:
        with platform.engine.connect() as connection:
            driver = connection.connection.driver_connection
            patients = driver.execute("SELECT count(*) FROM patient").fetchone()[0]
            documents = driver.execute("SELECT count(*) FROM document").fetchone()[0]
            physicians = driver.execute(
                "SELECT DISTINCT g.party_id, p.identifier FROM record_grant g "
                "JOIN practitioner p ON p.id = g.party_id WHERE g.source = 'care-event' "
                "AND g.party_id IN (SELECT party_id FROM record_grant TABLESAMPLE SYSTEM (5) "
                "LIMIT 200) ORDER BY 2").fetchall()
            gps = rng.sample(physicians, min(6, len(physicians)))
            records = driver.execute(
                "SELECT patient_id, party_id FROM record_grant WHERE party = 'practitioner' "
                "AND party_id = ANY(%s)", ([g[0] for g in gps],)).fetchall()
            chosen = rng.sample(records, min(len(records), 400))
            ids = [patient for patient, _ in chosen]
            identity = dict(driver.execute(
                "SELECT patient_id, value FROM patient_identifier WHERE patient_id = ANY(%s) "
                "AND system = %s", (ids, platform.directory.systems.national)).fetchall())
            families = dict(driver.execute(
                "SELECT patient_id, family_folded FROM patient_name WHERE patient_id = ANY(%s) "
                "AND position = 0", (ids,)).fetchall())
            readable = driver.execute(
                "SELECT id, patient_id FROM document WHERE patient_id = ANY(%s) "
                "AND confidentiality = 'N' AND author_id = ANY(%s)",
                (ids, [g[0] for g in gps])).fetchall()
        gp_of = dict(chosen)
        pros = {gp_id: Pro(platform, identifier) for gp_id, identifier in gps}
        mine: dict[str, dict[str, str]] = {}
        for patient_id in ids[:8]:
            # A database measured before keeps the accounts that run enrolled.
            with platform.unit_of_work() as uow:
                existing = uow.accounts.by_patient(patient_id)
            account = existing.id if existing is not None else patient_account(platform,
                                                                                patient_id)
            mine[patient_id] = {"Authorization":
                                f"Bearer {account_token(platform, account, patient_id)}"}
        national = platform.directory.systems.national

        def pick() -> tuple[str, Any]:
            patient_id = rng.choice(ids)
            return patient_id, pros[gp_of[patient_id]]

        def pdqm_family() -> int:
            patient_id, gp = pick()
            return client.get("/fhir/Patient", params={"family": families[patient_id]},
                              headers=gp.headers).status_code

        def pdqm_identifier() -> int:
            patient_id, gp = pick()
            return client.get("/fhir/Patient",
                              params={"identifier": f"{national}|{identity[patient_id]}"},
                              headers=gp.headers).status_code

        def iti67_find() -> int:
            patient_id, gp = pick()
            return client.get("/fhir/DocumentReference",
                              params={"patient": f"Patient/{patient_id}"},
                              headers=gp.headers).status_code

        def iti68_retrieve() -> int:
            document_id, patient_id = rng.choice(readable)
            return client.get(f"/fhir/Binary/{document_id}",
                              headers=pros[gp_of[patient_id]].headers).status_code

        def iti65_submit() -> int:
            patient_id, gp = pick()
            content = b"%PDF-1.4\n% scale " + uuid.uuid4().hex.encode() + b"\n%%EOF\n"
            return client.post("/fhir", json=provide_bundle(patient_id, gp, content),
                               headers=gp.headers).status_code

        def access_history() -> int:
            patient_id = rng.choice(list(mine))
            return client.get(f"/fhir/Patient/{patient_id}/$access-history",
                              headers=mine[patient_id]).status_code

        subjects: dict[str, Any] = {}

        def engine_decision() -> int:
            document_id, patient_id = rng.choice(readable)
            gp_id = gp_of[patient_id]
            with platform.unit_of_work() as uow:
                if gp_id not in subjects:
                    subjects[gp_id] = practitioner_subject(uow, gp_id)
                stored = uow.documents.of_patient(patient_id, document_id)
                assert stored is not None
                began = time.perf_counter()
                now = datetime.now(UTC)
                record = platform.policy.facts(uow, patient_id, now)
                decision = decide(subjects[gp_id], Action.READ, record, stored.metadata.facts(),
                                  now, platform.policy.matrix)
                engine_decision.seconds = time.perf_counter() - began  # type: ignore[attr-defined]
            return 200 if decision.permit else 403

        operations: dict[str, Callable[[], int]] = {
            "pdqm_family": pdqm_family, "pdqm_identifier": pdqm_identifier,
            "iti67_find": iti67_find, "iti68_retrieve": iti68_retrieve,
            "iti65_submit": iti65_submit, "access_history": access_history,
            "engine_decision": engine_decision,
        }
        results: dict[str, Any] = {}
        for name, operation in operations.items():
            statements.current = name if plans is not None else None
            operation()  # the plans are of this first request
            statements.current = None
            for _ in range(10):
                operation()
            latencies: list[float] = []
            statuses: dict[str, int] = {}
            for _ in range(samples):
                began = time.perf_counter()
                status = operation()
                seconds = time.perf_counter() - began
                if name == "engine_decision":
                    seconds = engine_decision.seconds  # type: ignore[attr-defined]
                latencies.append(seconds * 1000)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            latencies.sort()
            results[name] = {"p50_ms": round(_percentile(latencies, 0.50), 3),
                             "p99_ms": round(_percentile(latencies, 0.99), 3),
                             "mean_ms": round(statistics.fmean(latencies), 3),
                             "samples": samples, "statuses": statuses}
        figures: dict[str, Any] = {
            "patients": patients, "documents": documents, "operations": results,
            "sampled": {"gps": len(gps), "patients": len(ids),
                        "readable_documents": len(readable), "patient_accounts": len(mine)},
        }
        if plans is not None:
            figures["seq_scans"] = _explain(platform.engine, statements, plans)
        return figures
    finally:
        client.__exit__(None, None, None)
        platform.audit.close()
        platform.engine.dispose()


# --- curve -----------------------------------------------------------------------------------


def _label(patients: int) -> str:
    return f"{patients // 1_000_000}m" if patients % 1_000_000 == 0 else f"{patients // 1000}k"


def _ensure_database(server: str, name: str) -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                    {"n": name}).first()
        if exists is None:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{server}/{name}"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": host.python_version(),
            "system": f"{host.system()} {host.release()}",
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def svg_plot(sizes: dict[str, Any]) -> str:
    """p99 of each operation against the number of patients (log scale)."""
    import math

    width, height, left, bottom, top, right = 760, 420, 60, 50, 20, 190
    labels = sorted(sizes, key=lambda k: sizes[k]["patients"])
    xs = [math.log10(sizes[k]["patients"]) for k in labels]
    values = [sizes[k]["operations"][op]["p99_ms"] for k in labels for op in OPERATIONS]
    top_value = max(values) * 1.1 if values else 1
    low_x, high_x = min(xs) - 0.2, max(xs) + 0.2
    colours = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#666666")

    def x(value: float) -> float:
        return left + (value - low_x) / (high_x - low_x) * (width - left - right)

    def y(value: float) -> float:
        return height - bottom - value / top_value * (height - bottom - top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" '
             f'y2="{height - bottom}" stroke="black"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
             f'<text x="{left}" y="{height - 10}">patients (log scale)</text>',
             f'<text x="5" y="{top + 5}">p99 ms</text>']
    for k, value in zip(labels, xs, strict=True):
        parts.append(f'<text x="{x(value) - 12:.0f}" y="{height - bottom + 18}">{k}</text>')
    for step in range(5):
        tick = top_value * step / 4
        parts.append(f'<text x="{left - 45}" y="{y(tick) + 4:.0f}">{tick:.0f}</text>')
    for n, op in enumerate(OPERATIONS):
        points = " ".join(f"{x(value):.1f},{y(sizes[k]['operations'][op]['p99_ms']):.1f}"
                          for k, value in zip(labels, xs, strict=True))
        colour = colours[n % len(colours)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{points}"/>')
        parts.append(f'<text x="{width - right + 10}" y="{top + 20 + 18 * n}" '
                     f'fill="{colour}">{op}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def curve(sizes: list[int], documents_per_patient: int, *, server: str = DEFAULT_SERVER,
          samples: int = 300, out: Path = RESULTS / "scale.json", note: str = "") -> dict[str, Any]:
    """Load and measure at each size, in a database of its own (``scale_10k``…), then write
    the figures, the ratios of the largest size's p99 over the smallest's and the plot."""
    results: dict[str, Any] = {}
    largest = max(sizes)
    for patients in sorted(sizes):
        label = _label(patients)
        url = _ensure_database(server, f"scale_{label}")
        before = machine()
        report = load(url, patients=patients, documents=patients * documents_per_patient)
        figures = measure(url, samples=samples,
                          plans=RESULTS / "scale-plans" if patients == largest else None)
        figures["load"] = report.__dict__
        figures["machine"] = {"before": before, "after": machine()}
        results[label] = figures
        print(json.dumps({label: figures["operations"]}, indent=1))
    smallest = _label(min(sizes))
    document: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "bench/scale.py curve --sizes " + ",".join(map(str, sizes)),
        "note": note,
        "sizes": results,
    }
    if "1m" not in results:
        document["p99_ratio_1m_over_10k"] = None
        document["p99_ratio_1m_over_10k_absent"] = (
            "1M was not run here: see bench/README.md, 'scale', for the command and the load "
            "time it needs"
        )
    for label in results:
        if label == smallest:
            continue
        document[f"p99_ratio_{label}_over_{smallest}"] = {
            op: round(results[label]["operations"][op]["p99_ms"]
                      / results[smallest]["operations"][op]["p99_ms"], 2)
            for op in OPERATIONS
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1) + "\n")
    out.with_suffix(".svg").write_text(svg_plot(results))
    return document


# --- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    loading = commands.add_parser("load", help="bulk-load N patients and M documents")
    loading.add_argument("--patients", type=int, required=True)
    loading.add_argument("--documents", type=int, required=True)
    loading.add_argument("--database-url", required=True)
    loading.add_argument("--chunk", type=int, default=1000, help="patients per transaction")
    loading.add_argument("--seed", type=int, default=21)
    loading.add_argument("--content-bytes", type=int, default=1024)
    loading.add_argument("--quiet", action="store_true")
    measuring = commands.add_parser("measure", help="p50/p99 of the hot operations")
    measuring.add_argument("--database-url", required=True)
    measuring.add_argument("--samples", type=int, default=300)
    measuring.add_argument("--plans", type=Path, help="write EXPLAIN plans here")
    measuring.add_argument("--out", type=Path)
    curve_parser = commands.add_parser("curve", help="load and measure at several sizes")
    curve_parser.add_argument("--sizes", default="10000,100000",
                              help="patients per size (documents: --documents-per-patient×)")
    curve_parser.add_argument("--documents-per-patient", type=int, default=10)
    curve_parser.add_argument("--server", default=DEFAULT_SERVER)
    curve_parser.add_argument("--samples", type=int, default=300)
    curve_parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    curve_parser.add_argument("--note", default="", help="how the machine was (shared, quiet)")
    args = parser.parse_args(argv)
    if args.command == "load":
        report = load(args.database_url, patients=args.patients, documents=args.documents,
                      chunk=args.chunk, seed=args.seed, content_bytes=args.content_bytes,
                      quiet=args.quiet)
        print(json.dumps(report.__dict__, indent=1))
        return report
    if args.command == "measure":
        figures = measure(args.database_url, samples=args.samples, plans=args.plans)
        text = json.dumps(figures, indent=1)
        if args.out:
            args.out.write_text(text + "\n")
        print(text)
        return figures
    return curve([int(s) for s in args.sizes.split(",")], args.documents_per_patient,
                 server=args.server, samples=args.samples, out=args.out, note=args.note)


if __name__ == "__main__":
    main()
