"""A unit of work in memory, for testing services without a database.

It lives with the tests, not in the package: nothing in production may ever be wired to it,
and the real stores keep their own suite on SQLite and PostgreSQL (tests/integration). Each fake
store answers as its real one does (`tests/integration/test_store_contracts.py` runs the same
checks on both), and the unit of work keeps its promise: leaving the block without `commit`
puts every store back as it was at the last commit.

Stores faked so far: `authorities` and `presence_codes` (services/authorities.py,
services/presence.py), `sessions` (services/portal_sessions.py), `passkeys`
(services/workspace_signin.py: challenges and passkeys; the accounts' passkeys are
`support.fake_passkeys`'s), `invitations`
(services/invitations.py), `apps` (services/patient_apps.py: registration, requests,
codes), the key-rotation part of `documents` (services/key_rotation.py: which KEK wraps
each content's data key and each sealed free text), `prescriptions` (services/prescriptions.py:
tasks and their conditional changes of status, wrong-code attempts), the patients'
notifications of `records`, `alerts` (services/anomaly_detection.py: the officer's
alerts and the detector's cursor), and the part of `directory` those services read (organizations,
patients by id and by identifier, practitioners by identifier); `support.fake_documents`
adds the documents' purge and the notifications' outbox; `accounts`, `pki` and `oauth`
(services/accounts.py, services/tokens.py, services/signatures.py) are in
`support.fake_accounts`. A service that reaches for anything else fails loudly with
AttributeError.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from carevault.adapters.storage.alert_store import MAX_EVIDENCE
from carevault.adapters.storage.authority_store import RegisteredAuthority
from carevault.adapters.storage.directory_store import Stored
from carevault.adapters.storage.document_store import SealedParts
from carevault.adapters.storage.oauth_store import AppClient, AuthorizationCode
from carevault.adapters.storage.passkey_store import StoredChallenge, StoredPasskey
from carevault.adapters.storage.portal_store import StoredInvitation, StoredSession
from carevault.domain.anomaly import StoredAlert
from carevault.domain.prescriptions import StoredTask
from support.fake_accounts import FakeAccountStore, FakeOAuthStore, FakePkiStore


class FakeDirectory:
    """Organizations and patients read by id: enough for registering authorities and for
    invitations."""

    def __init__(self) -> None:
        self.organizations: dict[str, tuple[dict[str, Any], str | None]] = {}
        self.patients: dict[str, dict[str, Any]] = {}
        self.practitioners: dict[str, str] = {}  # professional identifier -> id

    def add_practitioner(self, practitioner_id: str, identifier: str) -> None:
        self.practitioners[identifier] = practitioner_id

    def patients_by_identifier(self, system: str, value: str) -> list[str]:
        return [
            patient_id for patient_id, resource in self.patients.items()
            if {"system": system, "value": value} in resource["identifier"]
        ]

    def practitioner_ids_by_identifier(self, values: Any) -> dict[str, str]:
        return {v: self.practitioners[v] for v in set(values) if v in self.practitioners}

    def add_patient(self, patient_id: str, identifiers: list[dict[str, str]]) -> None:
        self.patients[patient_id] = {
            "resourceType": "Patient", "id": patient_id, "identifier": identifiers}

    def add_organization(self, organization_id: str, patient_id_system: str | None = None,
                         resource: dict[str, Any] | None = None) -> None:
        resource = resource or {"resourceType": "Organization", "id": organization_id}
        self.organizations[organization_id] = (resource, patient_id_system)

    def read(self, resource_type: str, resource_id: str) -> Stored | None:
        if resource_type == "Patient":
            patient = self.patients.get(resource_id)
            return None if patient is None else Stored(resource_id, 1, patient)
        if resource_type != "Organization":
            raise NotImplementedError(f"the fake directory holds no {resource_type}")
        found = self.organizations.get(resource_id)
        return None if found is None else Stored(resource_id, 1, found[0])

    def organization_patient_id_system(self, organization_id: str) -> str | None:
        found = self.organizations.get(organization_id)
        return None if found is None else found[1]

    def assigning_authorities(self) -> set[str]:
        return {system for _, system in self.organizations.values() if system is not None}


class FakeAuthorityStore:
    def __init__(self) -> None:
        self.rows: dict[str, RegisteredAuthority] = {}

    def add(self, authority: RegisteredAuthority) -> None:
        if authority.id in self.rows:
            raise KeyError(f"authority {authority.id} exists")
        self.rows[authority.id] = authority

    def end(self, authority_id: str, by: str, now: datetime) -> bool:
        found = self.rows.get(authority_id)
        if found is None or found.ended_at is not None:
            return False
        self.rows[authority_id] = replace(found, ended_at=now, ended_by=by)
        return True

    def active_of(self, organization_id: str) -> list[RegisteredAuthority]:
        return [
            a for a in self.rows.values()
            if a.organization_id == organization_id and a.ended_at is None
        ]

    def listing(self, *, include_ended: bool = False) -> list[RegisteredAuthority]:
        found = [a for a in self.rows.values() if include_ended or a.ended_at is None]
        return sorted(found, key=lambda a: (a.created_at, a.id))


@dataclass
class _Code:
    patient_id: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    used_by: str | None = None


@dataclass
class FakePresenceCodeStore:
    codes: dict[str, _Code] = field(default_factory=dict)

    def add(self, code_hash: str, patient_id: str, created_by: str, now: datetime,
            expires: datetime) -> None:
        if code_hash in self.codes:
            raise KeyError("a presence code is stored once")
        self.codes[code_hash] = _Code(patient_id, created_by, now, expires)

    def usable(self, code_hash: str, patient_id: str, now: datetime) -> bool:
        code = self.codes.get(code_hash)
        return (code is not None and code.patient_id == patient_id and code.used_at is None
                and code.expires_at > now)

    def use(self, code_hash: str, patient_id: str, by: str, now: datetime) -> bool:
        if not self.usable(code_hash, patient_id, now):
            return False
        code = self.codes[code_hash]
        code.used_at, code.used_by = now, by
        return True


class FakeSessionStore:
    def __init__(self) -> None:
        self.rows: dict[str, StoredSession] = {}

    def add(self, session: StoredSession) -> None:
        if session.token_hash in self.rows:
            raise KeyError("a session is stored once")
        self.rows[session.token_hash] = session

    def get(self, token_hash: str) -> StoredSession | None:
        return self.rows.get(token_hash)

    def extend(self, token_hash: str, expires_at: datetime) -> None:
        if token_hash in self.rows:
            self.rows[token_hash] = replace(self.rows[token_hash], expires_at=expires_at)

    def act_for(self, token_hash: str, patient_id: str) -> None:
        found = self.rows.get(token_hash)
        if found is not None and found.kind == "representative":
            self.rows[token_hash] = replace(found, patient_id=patient_id)

    def act_for_practitioner(self, token_hash: str, practitioner_id: str | None) -> None:
        found = self.rows.get(token_hash)
        if found is not None and found.kind == "practitioner":
            self.rows[token_hash] = replace(found, acting_for=practitioner_id)

    def end(self, token_hash: str, at: datetime) -> None:
        found = self.rows.get(token_hash)
        if found is not None and found.ended_at is None:
            self.rows[token_hash] = replace(found, ended_at=at)

    def end_all(self, account_id: str, at: datetime) -> int:
        ended = [h for h, s in self.rows.items()
                 if s.account_id == account_id and s.ended_at is None]
        for token_hash in ended:
            self.rows[token_hash] = replace(self.rows[token_hash], ended_at=at)
        return len(ended)


class FakePasskeyStore:
    def __init__(self) -> None:
        self.challenges: dict[str, StoredChallenge] = {}
        self.rows: dict[str, StoredPasskey] = {}

    def add_challenge(self, challenge: StoredChallenge) -> None:
        floor = challenge.expires_at - timedelta(hours=1)
        self.challenges = {k: v for k, v in self.challenges.items() if v.expires_at > floor}
        if challenge.challenge_hash in self.challenges:
            raise KeyError("a challenge is stored once")
        self.challenges[challenge.challenge_hash] = challenge

    def take_challenge(self, challenge_hash: str, purpose: str, now: datetime
                       ) -> StoredChallenge | None:
        found = self.challenges.get(challenge_hash)
        if (found is None or found.purpose != purpose or found.used_at is not None
                or found.expires_at <= now):
            return None
        self.challenges[challenge_hash] = replace(found, used_at=now)
        return self.challenges[challenge_hash]

    def add(self, passkey: StoredPasskey) -> None:
        if passkey.credential_id in self.rows:
            raise KeyError("a passkey is stored once")
        self.rows[passkey.credential_id] = passkey

    def get(self, credential_id: str) -> StoredPasskey | None:
        return self.rows.get(credential_id)

    def of_practitioner(self, practitioner_id: str) -> list[StoredPasskey]:
        return sorted((p for p in self.rows.values() if p.practitioner_id == practitioner_id),
                      key=lambda p: p.created_at)

    def used(self, credential_id: str, sign_count: int, at: datetime) -> None:
        if credential_id in self.rows:
            self.rows[credential_id] = replace(self.rows[credential_id], sign_count=sign_count,
                                               last_used_at=at)


class FakeInvitationStore:
    def __init__(self) -> None:
        self.rows: dict[str, StoredInvitation] = {}

    def add(self, invitation: StoredInvitation) -> None:
        if invitation.code_hash in self.rows:
            raise KeyError("an invitation is stored once")
        self.rows[invitation.code_hash] = invitation

    def get(self, code_hash: str) -> StoredInvitation | None:
        return self.rows.get(code_hash)

    def use(self, code_hash: str, at: datetime) -> None:
        found = self.rows.get(code_hash)
        if found is not None and found.used_at is None:
            self.rows[code_hash] = replace(found, used_at=at)


class FakeAppStore:
    def __init__(self) -> None:
        self.clients: dict[str, AppClient] = {}
        self.codes: dict[str, AuthorizationCode] = {}

    def add_client(self, client: AppClient) -> None:
        if client.client_id in self.clients:
            raise KeyError("a client is stored once")
        self.clients[client.client_id] = client

    def client(self, client_id: str) -> AppClient | None:
        return self.clients.get(client_id)

    def set_scopes(self, client_id: str, scopes: str) -> bool:
        found = self.clients.get(client_id)
        if found is None:
            return False
        self.clients[client_id] = replace(found, scopes=scopes)
        return True

    def add_code(self, code: AuthorizationCode) -> None:
        if code.code_hash in self.codes:
            raise KeyError("a code is stored once")
        self.codes[code.code_hash] = code

    def code(self, code_hash: str) -> AuthorizationCode | None:
        return self.codes.get(code_hash)

    def use_code(self, code_hash: str, at: datetime) -> bool:
        found = self.codes.get(code_hash)
        if found is None or found.used_at is not None:
            return False
        self.codes[code_hash] = replace(found, used_at=at)
        return True

    def spend_codes_of(self, account_id: str, at: datetime) -> int:
        pending = [c for c in self.codes.values()
                   if c.account_id == account_id and c.used_at is None and c.expires_at > at]
        for code in pending:
            self.codes[code.code_hash] = replace(code, used_at=at)
        return len(pending)


class FakeDocumentKeys:
    """The sealed parts of documents, as key rotation sees them: each content's wrapped data
    key (by document id) and each sealed free text."""

    def __init__(self) -> None:
        self.contents: dict[str, SealedParts] = {}
        self.texts: dict[str, SealedParts] = {}

    def kek_usage(self) -> dict[str, int]:
        usage: dict[str, int] = {}
        for sealed in [*self.contents.values(), *self.texts.values()]:
            usage[sealed.kek_id] = usage.get(sealed.kek_id, 0) + 1
        return usage

    @staticmethod
    def _not_under(rows: dict[str, SealedParts], kek_id: str, after: str,
                   limit: int) -> list[tuple[str, SealedParts]]:
        found = sorted((i, p) for i, p in rows.items() if p.kek_id != kek_id and i > after)
        return found[:limit]

    def contents_not_under(self, kek_id: str, *, after: str,
                           limit: int) -> list[tuple[str, SealedParts]]:
        return [(i, SealedParts(p.kek_id, p.wrapped_key, b"", b""))
                for i, p in self._not_under(self.contents, kek_id, after, limit)]

    def texts_not_under(self, kek_id: str, *, after: str,
                        limit: int) -> list[tuple[str, SealedParts]]:
        return self._not_under(self.texts, kek_id, after, limit)

    def set_content_key(self, document_id: str, old_kek: str, kek_id: str,
                        wrapped: bytes) -> bool:
        found = self.contents.get(document_id)
        if found is None or found.kek_id != old_kek:
            return False
        self.contents[document_id] = replace(found, kek_id=kek_id, wrapped_key=wrapped)
        return True

    def set_text(self, document_id: str, old_kek: str, sealed: SealedParts) -> bool:
        found = self.texts.get(document_id)
        if found is None or found.kek_id != old_kek:
            return False
        self.texts[document_id] = sealed
        return True


class FakeAlertStore:
    """The security officer's alerts and the detector's cursors (`AlertStore`), in memory."""

    WORKFLOW = frozenset({"status", "verdict", "assignee", "acknowledged_by", "closed_by",
                          "note", "patient_notified_at"})

    def __init__(self) -> None:
        self.rows: dict[str, StoredAlert] = {}
        self.cursors: dict[str, int] = {}

    def raise_or_extend(self, alert: StoredAlert) -> StoredAlert:
        old = next((a for a in self.rows.values() if a.group_key == alert.group_key), None)
        if old is None:
            self.rows[alert.id] = replace(alert, verdict=None, version=1)
            return self.rows[alert.id]
        evidence = sorted(set(old.evidence) | set(alert.evidence))
        if len(evidence) > MAX_EVIDENCE:
            evidence = evidence[:MAX_EVIDENCE // 2] + evidence[-(MAX_EVIDENCE // 2):]
        self.rows[old.id] = replace(
            old, severity=max(old.severity, alert.severity),
            explanation=alert.explanation if alert.severity > old.severity else old.explanation,
            evidence=tuple(evidence), updated_at=alert.updated_at, version=old.version + 1)
        return self.rows[old.id]

    def get(self, alert_id: str) -> StoredAlert | None:
        return self.rows.get(alert_id)

    def search(self, *, status: tuple[str, ...] = (), kind: tuple[str, ...] = (),
               offset: int = 0, count: int = 50) -> tuple[int, list[StoredAlert]]:
        found = [a for a in self.rows.values()
                 if (not status or a.status in status) and (not kind or a.kind in kind)]
        found.sort(key=lambda a: a.id)
        found.sort(key=lambda a: (a.severity, a.raised_at), reverse=True)
        return len(found), found[offset:offset + count]

    def closed_verdicts(self) -> list[tuple[str, str, str]]:
        closed = sorted((a for a in self.rows.values()
                         if a.status == "closed" and a.verdict is not None),
                        key=lambda a: (a.updated_at, a.id))
        return [(a.professional, a.kind, str(a.verdict)) for a in closed]

    def change(self, alert_id: str, version: int, now: datetime,
               **values: str | datetime | None) -> bool:
        if not set(values) <= self.WORKFLOW:
            raise ValueError(f"not a workflow field: {sorted(set(values) - self.WORKFLOW)}")
        found = self.rows.get(alert_id)
        if found is None or found.version != version:
            return False
        self.rows[alert_id] = replace(found, **values, updated_at=now,  # type: ignore[arg-type]
                                      version=version + 1)
        return True

    def cursor(self, stream: str) -> int:
        return self.cursors.get(stream, 0)

    def move_cursor(self, stream: str, position: int) -> None:
        self.cursors[stream] = position


class FakePrescriptionStore:
    """Tasks by id: each change of status applies only from the statuses it names (and with
    the secret, for the pharmacy's steps), as the real store's conditional UPDATE does."""

    def __init__(self) -> None:
        self.tasks: dict[str, StoredTask] = {}
        self.failures: list[tuple[str, datetime]] = []
        self.touched_patients: list[str] = []

    def touch(self, patient_id: str | None) -> None:
        if patient_id is not None and patient_id not in self.touched_patients:
            self.touched_patients.append(patient_id)

    def add(self, task: StoredTask) -> None:
        if task.id in self.tasks or any(t.number == task.number for t in self.tasks.values()):
            raise KeyError("a task and its number are stored once")
        self.tasks[task.id] = task
        self.touch(task.patient_id)

    def get(self, task_id: str) -> StoredTask | None:
        return self.tasks.get(task_id)

    def _change(self, task_id: str, statuses: Any, now: datetime, *,
                holding: str | None = None, valid_at: datetime | None = None,
                **values: Any) -> bool:
        found = self.tasks.get(task_id)
        if found is None or found.status not in set(statuses):
            return False
        if holding is not None and found.secret_hash != holding:
            return False
        if valid_at is not None and not (found.expires_at is not None
                                         and found.expires_at > valid_at):
            return False
        if valid_at is not None and found.valid_from is not None and found.valid_from > valid_at:
            return False
        self.tasks[task_id] = replace(found, version=found.version + 1, updated_at=now, **values)
        return True

    def activate(self, task_id: str, patient_id: str, signed_prescription: str,
                 expires_at: datetime, now: datetime, valid_from: datetime | None = None) -> bool:
        changed = self._change(task_id, ("draft",), now, status="ready", patient_id=patient_id,
                               signed_prescription=signed_prescription, expires_at=expires_at,
                               valid_from=valid_from)
        if changed:
            self.touch(patient_id)
        return changed

    def accept(self, task_id: str, secret_hash: str, pharmacist_id: str,
               pharmacy_id: str | None, now: datetime) -> bool:
        return self._change(task_id, ("ready",), now, valid_at=now, status="in-progress",
                            secret_hash=secret_hash, pharmacist_id=pharmacist_id,
                            pharmacy_id=pharmacy_id)

    def reject(self, task_id: str, secret_hash: str, now: datetime) -> bool:
        return self._change(task_id, ("in-progress",), now, holding=secret_hash,
                            status="ready", secret_hash=None, pharmacist_id=None,
                            pharmacy_id=None)

    def close(self, task_id: str, secret_hash: str, dispense: str, receipt: str,
              now: datetime) -> bool:
        return self._change(task_id, ("in-progress",), now, holding=secret_hash,
                            status="completed", dispense=dispense, receipt=receipt)

    def cancel(self, task_id: str, statuses: Any, now: datetime,
               secret_hash: str | None = None) -> bool:
        return self._change(task_id, statuses, now, holding=secret_hash, status="cancelled")

    def set_receipt(self, task_id: str, receipt: str) -> None:
        if task_id in self.tasks:
            self.tasks[task_id] = replace(self.tasks[task_id], receipt=receipt)

    def of_patient(self, patient_id: str, since: datetime | None, offset: int,
                   count: int) -> tuple[int, list[StoredTask]]:
        return self.find(patient_id=patient_id, since=since, offset=offset, count=count)

    def find(self, *, patient_id: str | None = None, prescriber_id: str | None = None,
             pharmacy_id: str | None = None, dispensed: bool = False,
             since: datetime | None = None, offset: int = 0,
             count: int = 20) -> tuple[int, list[StoredTask]]:
        def when(task: StoredTask) -> datetime:
            return task.updated_at if dispensed else task.created_at

        found = [
            t for t in self.tasks.values()
            if t.patient_id is not None
            and patient_id in (None, t.patient_id)
            and prescriber_id in (None, t.prescriber_id)
            and pharmacy_id in (None, t.pharmacy_id)
            and (not dispensed or t.status == "completed")
            and (since is None or when(t) >= since)
        ]
        # Newest first, then by id: the real store's ORDER BY.
        found.sort(key=lambda t: t.id)
        found.sort(key=when, reverse=True)
        return len(found), found[offset:offset + count]

    def note_failure(self, who: str, now: datetime) -> None:
        self.failures.append((who, now))

    def failures_since(self, who: str, since: datetime) -> int:
        return sum(1 for w, at in self.failures if w == who and at > since)


@dataclass(frozen=True)
class FakeNotification:
    patient_id: str
    kind: str
    payload: dict[str, Any]
    created_at: datetime


class FakeAuditStore:
    """Where a unit test's audit port appends the records a service gives it, in order."""

    def __init__(self) -> None:
        self.records: list[Any] = []


class FakeRecords:
    """The patients' notifications (the outbox the mail chore reads), in order."""

    def __init__(self) -> None:
        self.notifications: list[FakeNotification] = []

    def notify(self, patient_id: str, kind: str, payload: dict[str, Any], now: datetime,
               account_id: str | None = None) -> str:
        self.notifications.append(FakeNotification(patient_id, kind, payload, now))
        return f"notification-{len(self.notifications)}"


class FakeUnitOfWork:
    """Stands where `UnitOfWork` does; ``commits`` counts the commits, for the tests."""

    _STORES = ("directory", "authorities", "presence_codes", "sessions", "invitations", "apps",
                "documents", "prescriptions", "records", "audit", "alerts", "passkeys",
                "accounts", "pki", "oauth")

    def __init__(self) -> None:
        # Subclasses of the fakes here, in their own modules: imported here, no import cycle.
        from support.fake_directory import FakeDirectoryStore
        from support.fake_documents import FakeDocumentStore, FakeRecordStore
        from support.fake_passkeys import FakeAccountPasskeyStore

        self.directory = FakeDirectoryStore()
        self.authorities = FakeAuthorityStore()
        self.presence_codes = FakePresenceCodeStore()
        self.sessions = FakeSessionStore()
        self.passkeys = FakeAccountPasskeyStore()
        self.invitations = FakeInvitationStore()
        self.apps = FakeAppStore()
        self.documents = FakeDocumentStore()
        self.alerts = FakeAlertStore()
        self.prescriptions = FakePrescriptionStore()
        self.records = FakeRecordStore(lambda: self.documents)
        self.audit = FakeAuditStore()
        self.accounts = FakeAccountStore()
        self.pki = FakePkiStore()
        self.oauth = FakeOAuthStore(lambda serial: self.pki.certificate(serial))
        self.commits = 0
        self._committed = self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        return {name: copy.deepcopy(getattr(self, name)) for name in self._STORES}

    def __enter__(self) -> FakeUnitOfWork:
        self._committed = self._snapshot()
        return self

    def commit(self) -> None:
        self.commits += 1
        self._committed = self._snapshot()

    def rollback(self) -> None:
        for name, store in self._committed.items():
            setattr(self, name, copy.deepcopy(store))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.rollback()
