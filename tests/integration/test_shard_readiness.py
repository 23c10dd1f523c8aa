"""Ready to shard by patient (issue #21, docs/scaling.md): every patient-scoped table carries the
patient key, and every statement on one filters by it, or is listed here with the reason.

The schema half reads the migrated database (both backends), so a migration that forgets the key
fails as surely as a table definition that does: every table is classified in exactly one of
three lists — patient-scoped (with its key column), not patient-scoped (with why), or holding
patient data without a usable key yet (a known gap, with what would change). A new table in none
of them fails. The constraints a distributed table could not keep (a unique key without the
patient key; a foreign key between two patient-scoped tables that does not pair their keys) are
listed too, each with what it would become under Citus.

The statement half runs a representative workload on PostgreSQL through the real platform (the
HTTP API, the portal, the chores) and captures every statement SQLAlchemy sends
(``before_cursor_execute``); `support.patient_key` says which patient-scoped tables a statement
reaches without the key. Each statement that legitimately does is listed by the store method
that sends it, with why. The lists are exact: an entry the workload no longer needs fails, so
they only shrink. Not captured: the audit log's appends on PostgreSQL, which go through the
driver's own connection (one statement or COPY, `audit_store`); the audit tables are not
patient-scoped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, inspect
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.authorization import RecordState
from carevault.services import directory, invitations
from carevault.services.retention import Retention
from support import builders
from support.accounts import enrol_patient
from support.builders import national_id
from support.documents import FHIR_JSON, Pro, created_id, grant, provide_bundle, publish
from support.patient_key import references, storage_method, unkeyed
from support.portal import seen_by, signed_in
from support.records import patient_with_documents
from support.tokens import account_token

# --- the classification -----------------------------------------------------------------------

# Patient-scoped: every row belongs to one patient's record; the key column is its distribution
# column under Citus (docs/scaling.md). ``patient`` is keyed by its own id.
PATIENT_KEY: dict[str, str] = {
    "patient": "id",
    "patient_name": "patient_id",
    "patient_identifier": "patient_id",
    "patient_postal_code": "patient_id",
    "patient_merge": "patient_id",
    "record": "patient_id",
    "record_grant": "patient_id",
    "record_block": "patient_id",
    "record_delegation": "patient_id",
    "emergency_access": "patient_id",
    "encounter": "patient_id",
    "document": "patient_id",
    "document_metadata": "patient_id",
    "document_content": "patient_id",
    "submission_set": "patient_id",
    "presence_code": "patient_id",
    "mandate": "patient_id",
}

# Not patient-scoped: the directories (reference tables under Citus: small, read on every
# request, joined with anything), the audit log (one global sequence: it cannot be split by
# patient, docs/scaling.md), keys, tokens, sessions, and the platform's own state.
NOT_PATIENT_SCOPED: dict[str, str] = {
    "organization": "directory of organizations: a reference table",
    "practitioner": "directory of practitioners: a reference table",
    "practitioner_role": "directory: a practitioner's roles, a reference table",
    "care_team": "directory of care teams: a reference table",
    "care_team_member": "directory: a team's members, a reference table",
    "directory_authority": "who may write the directories: a reference table",
    "assistant_mandate": "between two professionals, no patient: a reference table",
    "audit_entry": "the Merkle log's leaves: one global sequence per stream, appended under one "
                   "lock; its patient_id (NULL for entries about no patient) only indexes the "
                   "patient's history",
    "audit_node": "the Merkle tree's nodes: global",
    "audit_log_state": "the tree's size and right edge, locked by every append: global",
    "audit_tree_head": "signed tree heads: global",
    "audit_chain_head": "each patient's hash-chain head, read and written under the stream's "
                        "append lock, with the log: it lives where the log lives",
    "audit_export_cursor": "delivery to the ATNA repository: global",
    "anomaly_cursor": "how far the detector read the log: global",
    "access_alert": "the security officer's work queue, searched by status and professional "
                    "across patients; patient_id is NULL for alerts about no one patient",
    "pki_authority": "the platform's certificate authorities",
    "pki_certificate": "certificates issued to professionals and systems",
    "oauth_client": "registered patient apps",
    "oauth_assertion": "replay protection of client assertions",
    "oauth_token": "access tokens, looked up by their id on every request",
    "oauth_code": "authorization codes, looked up by their hash; patient_id is the record the "
                  "code's session acts on (NULL for operators)",
    "account": "who signs in (patients, representatives, operators), looked up by login; "
               "patient_id is NULL for all but patients",
    "recovery_code": "an account's recovery codes",
    "account_passkey": "an account's passkeys",
    "passkey": "a professional's passkeys",
    "workspace_challenge": "single-use sign-in challenges",
    "portal_session": "portal sessions, looked up by their token's hash; patient_id is the "
                      "record the session acts on (NULL for operators)",
    "login_attempt_state": "sign-in throttling",
    "prescription_failure": "a pharmacist's failed attempts, for the rate limit",
    "enrolment_invitation": "activation codes, looked up by the code's hash (the person "
                            "activating knows only the code and their national number); a "
                            "handful per enrolment, short-lived: a reference table",
}

# Patient data whose table cannot be distributed by the patient key as the schema stands (the
# key is absent or may be NULL). Each says what would change; the test fails once it is fixed,
# so that the table moves to PATIENT_KEY.
NOT_YET_SHARDABLE: dict[str, str] = {
    "resource_history": "versions of every directory resource; patient_id is set on a Patient's "
                        "versions only: those would move to a patient_history table keyed by "
                        "patient, the rest stay a reference table",
    "notification": "a patient's notifications and an account's (a representative's, "
                    "patient_id NULL) share the table: the account ones would move to their own",
    "prescription_task": "a draft has no patient yet and a pharmacy finds a prescription by its "
                         "number: the patient is known at activation; a routing table (number "
                         "→ patient) would be needed",
}

# Constraints a Citus distributed table cannot keep as they are (a unique key must include the
# distribution column; a foreign key between distributed tables must pair them), with what each
# becomes. ``UNIQUE table(columns)`` and ``FK table(column) -> table(column)``.
CITUS_CHANGES: dict[str, str] = {
    "UNIQUE patient(national_id)": "a reference table national_id → patient id, which also "
                                   "routes the lookup by national identifier",
    "UNIQUE patient_identifier(system, value)": "the same lookup table, for every identifier",
    "FK patient(merged_into) -> patient(id)": "dropped: two patients may live on two shards; "
                                              "the merge service checks the survivor",
    "FK patient_merge(survivor_id) -> patient(id)": "dropped, as merged_into",
    "UNIQUE document(id)": "primary key (patient_id, id); ids stay random UUIDs",
    "UNIQUE document_metadata(document_id)": "primary key (patient_id, document_id)",
    "UNIQUE document_metadata(master_identifier)": "unique per patient only; the global check "
                                                   "(IHE: a uniqueId is unique) moves to a "
                                                   "reference lookup table",
    "FK document_metadata(document_id) -> document(id)": "(patient_id, document_id) -> "
                                                          "document(patient_id, id)",
    "UNIQUE document_content(document_id)": "primary key (patient_id, document_id)",
    "FK document_content(document_id) -> document(id)": "(patient_id, document_id) -> "
                                                         "document(patient_id, id)",
    "UNIQUE submission_set(id)": "primary key (patient_id, id)",
    "UNIQUE submission_set(master_identifier)": "as document_metadata(master_identifier)",
    "UNIQUE encounter(id)": "primary key (patient_id, id)",
    "UNIQUE record_grant(id)": "primary key (patient_id, id)",
    "UNIQUE record_block(id)": "primary key (patient_id, id)",
    "UNIQUE record_delegation(id)": "primary key (patient_id, id)",
    "UNIQUE emergency_access(id)": "primary key (patient_id, id)",
    "UNIQUE patient_merge(id)": "primary key (patient_id, id)",
    "UNIQUE mandate(id)": "primary key (patient_id, id)",
    "UNIQUE presence_code(code_hash)": "primary key (patient_id, code_hash): the encounter that "
                                       "uses a code names its patient",
    "FK account(patient_id) -> patient(id)": "dropped: a reference table may not point into a "
                                             "distributed one; enrolment checks the patient",
    "FK prescription_task(patient_id) -> patient(id)": "as account(patient_id)",
}


# --- the schema half --------------------------------------------------------------------------


def test_the_lists_do_not_overlap() -> None:
    assert not PATIENT_KEY.keys() & NOT_PATIENT_SCOPED.keys()
    assert not PATIENT_KEY.keys() & NOT_YET_SHARDABLE.keys()
    assert not NOT_PATIENT_SCOPED.keys() & NOT_YET_SHARDABLE.keys()


def test_every_table_of_the_migrated_database_is_classified(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
    classified = PATIENT_KEY.keys() | NOT_PATIENT_SCOPED.keys() | NOT_YET_SHARDABLE.keys()
    assert sorted(tables - classified) == [], "a new table: classify it in this module"
    assert sorted(classified - tables) == [], "a table no longer exists: remove it here"


def test_every_patient_scoped_table_carries_its_key_not_null_and_indexed(engine: Engine) -> None:
    schema = inspect(engine)
    wrong = []
    for table, key in sorted(PATIENT_KEY.items()):
        columns = {c["name"]: c for c in schema.get_columns(table)}
        if key not in columns:
            wrong.append(f"{table}: no {key}")
            continue
        if columns[key]["nullable"]:
            wrong.append(f"{table}.{key} may be NULL")
        leading: list[Sequence[str | None]] = [
            list(schema.get_pk_constraint(table)["constrained_columns"][:1])]
        leading += [i["column_names"][:1] for i in schema.get_indexes(table)]
        leading += [u["column_names"][:1] for u in schema.get_unique_constraints(table)]
        if [key] not in leading:
            wrong.append(f"{table}: no index leads with {key}")
    assert wrong == []


def test_the_known_gaps_are_still_gaps(engine: Engine) -> None:
    schema = inspect(engine)
    fixed = []
    for table in NOT_YET_SHARDABLE:
        key = {c["name"]: c for c in schema.get_columns(table)}.get("patient_id")
        if key is not None and not key["nullable"]:
            fixed.append(table)
    assert fixed == [], "patient_id is NOT NULL now: move the table to PATIENT_KEY"


def _citus_conflicts(engine: Engine) -> set[str]:
    schema = inspect(engine)
    found = set()
    for table, key in PATIENT_KEY.items():
        unique: list[Sequence[str | None]] = [
            list(schema.get_pk_constraint(table)["constrained_columns"])]
        unique += [u["column_names"] for u in schema.get_unique_constraints(table)]
        unique += [i["column_names"] for i in schema.get_indexes(table) if i["unique"]]
        found |= {f"UNIQUE {table}({', '.join(map(str, c))})" for c in unique
                  if c and key not in c}
    for table in PATIENT_KEY.keys() | NOT_PATIENT_SCOPED.keys() | NOT_YET_SHARDABLE.keys():
        for fk in schema.get_foreign_keys(table):
            target = fk["referred_table"]
            if target not in PATIENT_KEY:
                continue  # a reference to a directory (a reference table) is kept
            paired = table in PATIENT_KEY and (
                PATIENT_KEY[table], PATIENT_KEY[target]) in zip(
                    fk["constrained_columns"], fk["referred_columns"], strict=True)
            if not paired:
                found.add(f"FK {table}({', '.join(fk['constrained_columns'])}) -> "
                          f"{target}({', '.join(fk['referred_columns'])})")
    return found


def test_what_citus_would_refuse_is_listed_with_what_it_becomes(engine: Engine) -> None:
    found = _citus_conflicts(engine)
    assert sorted(found - CITUS_CHANGES.keys()) == [], "say in CITUS_CHANGES what it becomes"
    assert sorted(CITUS_CHANGES.keys() - found) == [], "no longer a conflict: remove it"


# --- the checker itself -----------------------------------------------------------------------

KEYS = {"document": "patient_id", "document_metadata": "patient_id", "patient": "id"}


@pytest.mark.parametrize(("statement", "flagged"), [
    ("SELECT document.id FROM document WHERE document.patient_id = %(p)s::VARCHAR", []),
    ("SELECT document.id FROM document WHERE document.id = %(id_1)s::VARCHAR", ["document"]),
    ("SELECT x FROM document JOIN document_metadata ON document_metadata.document_id = "
     "document.id WHERE document.patient_id = %(p)s", ["document_metadata"]),
    ("SELECT x FROM document JOIN document_metadata ON document_metadata.document_id = "
     "document.id AND document_metadata.patient_id = document.patient_id "
     "WHERE document.patient_id = %(p)s", []),
    ("SELECT x FROM patient LEFT OUTER JOIN document ON document.patient_id = patient.id "
     "WHERE patient.id = %(id)s", []),
    ("SELECT x FROM document, document_metadata AS m WHERE document.patient_id IN "
     "(%(a)s, %(b)s) AND m.document_id = document.id", ["document_metadata AS m"]),
    ("SELECT x FROM document WHERE document.id IN (SELECT document_metadata.replaces "
     "FROM document_metadata WHERE document_metadata.document_id = %(d)s) AND "
     "document.patient_id = %(p)s", ["document_metadata"]),
    ("INSERT INTO document (id, patient_id) VALUES (%(id)s, %(patient_id)s)", []),
    ("INSERT INTO document_metadata (document_id) VALUES (%(id)s)", ["document_metadata"]),
    ("UPDATE document SET hidden=%(h)s WHERE document.id = %(id_1)s", ["document"]),
    ("DELETE FROM document WHERE document.patient_id = %(p)s", []),
    ("SELECT organization.id FROM organization WHERE organization.name = %(n)s", []),
    ("SELECT document.patient_id FROM document WHERE document.patient_id > %(p)s",
     ["document"]),
])
def test_the_checker_flags_what_reaches_a_patient_table_without_its_key(
        statement: str, flagged: list[str]) -> None:
    assert unkeyed(statement, KEYS) == flagged


def test_the_checker_sees_every_table_a_statement_names() -> None:
    statement = ("SELECT a.x, 'b' AS kind, a.y AS d FROM a JOIN b AS c ON c.y = a.y, d "
                 "WHERE a.z IN (SELECT e.z FROM e) AND count(a.w) > 1")
    assert references(statement, {"a", "b", "d", "e", "w", "count"}) == [
        ("a", "a"), ("b", "c"), ("d", "d"), ("e", "e")]


# --- the statement half -----------------------------------------------------------------------

# Statements that reach a patient-scoped table without its key, by the store method that sends
# them, with why. Under Citus each is a query on every shard (docs/scaling.md says which would
# get a lookup table instead).
UNKEYED: dict[str, str] = {
    "document_store:DocumentStore.get": "a read by document id alone: ITI-67 read and ITI-68 "
        "retrieve name only the document (DocumentReference/[id], Binary/[id]); the gate then "
        "decides on that document's patient's facts. Callers who know the patient use "
        "of_patient",
    "document_store:DocumentStore.get_with_content": "the same read, with the content's row "
        "(ITI-68)",
    "document_store:DocumentStore.identifiers_taken": "a document's uniqueId and a "
        "SubmissionSet's are unique in the whole registry (IHE XDS): checked before a "
        "publication, across patients",
    "document_store:DocumentStore.due_for_release": "a chore: the held documents whose time "
        "has come, across patients (index on release_at); each is then released by its "
        "patient's key",
    "record_store:RecordStore.closed_with_documents": "the retention job's scan of closed "
        "records, across patients; each purge then checks its patient again by key "
        "(due_for_purge)",
    "directory_store:DirectoryStore.identifier_owners": "who bears an identifier (PDQm and "
        "PIX by identifier, the identity feed's duplicate check): the identifier is the "
        "question, the patient the answer",
    "directory_store:DirectoryStore._page": "PDQm search by name (birth date, postal code): a "
        "search across patients by nature, each on its index",
    "directory_store:DirectoryStore.family_name_shares": "the anomaly detector's statistic "
        "(how common each family name is) over every patient: an aggregate, run as a chore",
}


@contextmanager
def _capture(engine: Engine) -> Iterator[list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append((storage_method(), statement))

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def _workload(platform: Platform, client: TestClient) -> None:
    """What a record sees in its life: enrolment, a care event, publication, a grant, searches,
    retrievals, the history of accesses, the exports, the chores, and a retention purge."""
    account = enrol_patient(platform, family="Shard")
    patient_id = account.patient_id
    gp = seen_by(platform, client, patient_id, identifier="HP-SHARD-GP")
    document = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    held = created_id(publish(client, gp, provide_bundle(patient_id, gp, held=True)))
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    publish(client, gp, provide_bundle(patient_id, gp, held=soon))
    replacement = publish(client, gp, provide_bundle(patient_id, gp, replaces=document))
    assert replacement.status_code == 200, replacement.text
    with platform.unit_of_work() as uow:
        found = uow.accounts.by_patient(patient_id)
    assert found is not None
    mine = {"Authorization": f"Bearer {account_token(platform, found.id, patient_id)}"}
    colleague = Pro(platform, "HP-SHARD-COLLEAGUE")
    grant(client, {**mine, **FHIR_JSON}, patient_id, colleague.id)
    ok = [
        client.get("/fhir/Patient", params={"family": "shard"}, headers=gp.headers),
        client.get(f"/fhir/Patient/{patient_id}", headers=gp.headers),
        client.get("/fhir/DocumentReference", params={"patient": patient_id},
                   headers=gp.headers),
        client.get(f"/fhir/DocumentReference/{document}", headers=colleague.headers),
        client.get(f"/fhir/Binary/{document}", headers=colleague.headers),
        client.get("/fhir/Consent", params={"patient": patient_id}, headers=mine),
        client.get("/fhir/DocumentReference", params={"patient": patient_id}, headers=mine),
        client.post(f"/fhir/DocumentReference/{held}/$release", json={}, headers=gp.headers),
        client.get("/fhir/DocumentReference", params={"patient": patient_id,
                                                      "related": document}, headers=gp.headers),
        client.get("/fhir/Communication", params={"patient": f"Patient/{patient_id}"},
                   headers=mine),
        client.get(f"/fhir/Patient/{patient_id}/$access-history", headers=mine),
        client.get(f"/fhir/Patient/{patient_id}/$everything", headers=mine),
    ]
    assert [r.status_code for r in ok] == [200] * len(ok), [r.text[:300] for r in ok]
    portal = signed_in(platform, account, port=50041)
    pages = [portal.get(page) for page in ("/me", "/me/documents", "/me/access", "/me/export")]
    assert [p.status_code for p in pages] == [200] * len(pages)
    # The chores and the retention job (a record closed in 2027, purged ten years later).
    documents = platform.documents
    clock = documents.clock
    documents.clock = lambda: clock() + timedelta(hours=2)
    try:
        assert documents.publisher.release_due(platform.unit_of_work) == 1
    finally:
        documents.clock = clock
    if platform.alerts is not None:
        platform.alerts.catch_up()
    closed, _ = patient_with_documents(platform, client, 1, number=9, author="HP-SHARD-OLD")
    with platform.unit_of_work() as uow:
        uow.records.update_record(closed, datetime(2027, 3, 1, tzinfo=UTC),
                                  state=RecordState.CLOSED)
        uow.commit()
    # An activation code given at a desk, then typed by the patient; two entries merged.
    now = datetime.now(UTC)
    with platform.unit_of_work() as uow:
        code = invitations.invite(uow, closed, now)
    with platform.unit_of_work() as uow:
        assert invitations.redeemable(uow, code, national_id(9),
                                         platform.settings.national_id_system, now) == closed
    with platform.unit_of_work() as uow:
        invitations.mark_used(uow, code, now)
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        twins = [p.id for p in directory.register_patients(
            uow, ctx, [builders.patient(ctx.systems, n, family="Twin") for n in (11, 12)])]
    with platform.unit_of_work() as uow:
        directory.merge_patients(uow, ctx, twins[1], twins[0])
    assert client.get(f"/fhir/Patient/{twins[1]}", headers=gp.headers).status_code == 200
    later = datetime(2037, 3, 2, tzinfo=UTC)
    report = Retention(platform.unit_of_work, platform.audit, lambda: later).purge_due(
        by="os-user:test")
    assert report.patients == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_every_statement_on_a_patient_table_filters_by_the_patient_key(
        platform: Platform, client: TestClient) -> None:
    with _capture(platform.engine) as seen:
        _workload(platform, client)
    reached = {table for _, statement in seen for table, _ in references(statement, PATIENT_KEY)}
    assert sorted(PATIENT_KEY.keys() - reached) == [], "the workload reaches every table"
    offenders: dict[str, set[str]] = {}
    for method, statement in seen:
        missed = unkeyed(statement, PATIENT_KEY)
        if missed:
            offenders.setdefault(method, set()).update(missed)
    unlisted = {m: sorted(t) for m, t in offenders.items() if m not in UNKEYED}
    assert unlisted == {}, "filter by the patient key, or say in UNKEYED why not"
    unneeded = sorted(UNKEYED.keys() - offenders.keys())
    assert unneeded == [], "no longer sent without the key: remove from UNKEYED"
