"""E-prescriptions (``prescription_task``) and the wrong-code attempts on them.

Every change of status is one conditional UPDATE whose WHERE names the status it leaves (and
the secret, for the pharmacy's steps): its row count says whether this request made the change.
Two pharmacies accepting the same task at the same instant both run it; the database applies
one, and the other's UPDATE finds the status already changed and counts no row.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, func, insert, or_, select, update

from carevault.adapters.storage import schema as t
from carevault.domain.prescriptions import StoredTask


def _task(row: Row[Any]) -> StoredTask:
    fields = StoredTask.__dataclass_fields__
    return StoredTask(**{column: getattr(row, column) for column in fields})


class PrescriptionStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.touched_patients: list[str] = []

    def touch(self, patient_id: str | None) -> None:
        """Name a patient this transaction concerns (its audit entry is theirs too)."""
        if patient_id is not None and patient_id not in self.touched_patients:
            self.touched_patients.append(patient_id)

    def add(self, task: StoredTask) -> None:
        self.connection.execute(insert(t.prescription_task), [task.__dict__])
        self.touch(task.patient_id)

    def get(self, task_id: str) -> StoredTask | None:
        p = t.prescription_task
        row = self.connection.execute(select(p).where(p.c.id == task_id)).first()
        return None if row is None else _task(row)

    def _change(self, task_id: str, statuses: Iterable[str], now: datetime, **values: Any) -> bool:
        p = t.prescription_task
        conditions: list[ColumnElement[bool]] = [
            p.c.id == task_id,
            p.c.status.in_(sorted(statuses)),
        ]
        secret = values.pop("_secret_hash", None)
        if secret is not None:
            conditions.append(p.c.secret_hash == secret)
        valid_at = values.pop("_valid_at", None)
        if valid_at is not None:
            conditions.append(p.c.expires_at > valid_at)
            conditions.append(or_(p.c.valid_from.is_(None), p.c.valid_from <= valid_at))
        result = self.connection.execute(
            update(p).where(*conditions).values(version=p.c.version + 1, updated_at=now, **values)
        )
        return result.rowcount == 1

    def activate(
        self,
        task_id: str,
        patient_id: str,
        signed_prescription: str,
        expires_at: datetime,
        now: datetime,
        valid_from: datetime | None = None,
    ) -> bool:
        changed = self._change(
            task_id,
            ("draft",),
            now,
            status="ready",
            patient_id=patient_id,
            signed_prescription=signed_prescription,
            expires_at=expires_at,
            valid_from=valid_from,
        )
        if changed:
            self.touch(patient_id)
        return changed

    def accept(
        self,
        task_id: str,
        secret_hash: str,
        pharmacist_id: str,
        pharmacy_id: str | None,
        now: datetime,
    ) -> bool:
        """``ready`` → ``in-progress``, if still ready and within its validity window: the
        race's arbiter."""
        return self._change(
            task_id,
            ("ready",),
            now,
            _valid_at=now,
            status="in-progress",
            secret_hash=secret_hash,
            pharmacist_id=pharmacist_id,
            pharmacy_id=pharmacy_id,
        )

    def reject(self, task_id: str, secret_hash: str, now: datetime) -> bool:
        return self._change(
            task_id,
            ("in-progress",),
            now,
            _secret_hash=secret_hash,
            status="ready",
            secret_hash=None,
            pharmacist_id=None,
            pharmacy_id=None,
        )

    def close(
        self, task_id: str, secret_hash: str, dispense: str, receipt: str, now: datetime
    ) -> bool:
        return self._change(
            task_id,
            ("in-progress",),
            now,
            _secret_hash=secret_hash,
            status="completed",
            dispense=dispense,
            receipt=receipt,
        )

    def cancel(
        self, task_id: str, statuses: Iterable[str], now: datetime, secret_hash: str | None = None
    ) -> bool:
        return self._change(task_id, statuses, now, _secret_hash=secret_hash, status="cancelled")

    def set_receipt(self, task_id: str, receipt: str) -> None:
        p = t.prescription_task
        self.connection.execute(update(p).where(p.c.id == task_id).values(receipt=receipt))

    def of_patient(
        self, patient_id: str, since: datetime | None, offset: int, count: int
    ) -> tuple[int, list[StoredTask]]:
        """A patient's activated prescriptions (drafts hold no patient), newest first."""
        return self.find(patient_id=patient_id, since=since, offset=offset, count=count)

    def find(
        self,
        *,
        patient_id: str | None = None,
        prescriber_id: str | None = None,
        pharmacy_id: str | None = None,
        dispensed: bool = False,
        since: datetime | None = None,
        offset: int = 0,
        count: int = 20,
    ) -> tuple[int, list[StoredTask]]:
        """Activated prescriptions (a draft names no patient and holds no prescription) of a
        patient, a prescriber or, with ``dispensed``, those a pharmacy completed; newest first:
        by creation, or by completion when ``dispensed`` (``since`` counts the same way)."""
        p = t.prescription_task
        conditions: list[ColumnElement[bool]] = [p.c.patient_id.is_not(None)]
        if patient_id is not None:
            conditions.append(p.c.patient_id == patient_id)
        if prescriber_id is not None:
            conditions.append(p.c.prescriber_id == prescriber_id)
        if pharmacy_id is not None:
            conditions.append(p.c.pharmacy_id == pharmacy_id)
        when = p.c.updated_at if dispensed else p.c.created_at
        if dispensed:
            conditions.append(p.c.status == "completed")
        if since is not None:
            conditions.append(when >= since)
        total = self.connection.execute(select(func.count()).where(*conditions)).scalar_one()
        rows = self.connection.execute(
            select(p).where(*conditions).order_by(when.desc(), p.c.id).offset(offset).limit(count)
        )
        return int(total), [_task(row) for row in rows]

    # --- wrong codes ------------------------------------------------------------------------

    def note_failure(self, who: str, now: datetime) -> None:
        self.connection.execute(insert(t.prescription_failure), [{"who": who, "at": now}])

    def failures_since(self, who: str, since: datetime) -> int:
        f = t.prescription_failure
        found = self.connection.execute(
            select(func.count()).where(f.c.who == who, f.c.at > since)
        ).scalar_one()
        return int(found)
