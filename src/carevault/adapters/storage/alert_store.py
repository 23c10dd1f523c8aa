"""SQL storage of the security officer's alerts and of the detector's place in the audit log."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Connection, Row, func, insert, select, update

from carevault.adapters.storage import schema as t
from carevault.domain.anomaly import StoredAlert

MAX_EVIDENCE = 200  # leaf indexes kept per alert: the first ones, then the latest


_table = t.access_alert
_cursor = t.anomaly_cursor


def _alert(row: Row[tuple[object, ...]]) -> StoredAlert:
    m = row._mapping
    return StoredAlert(
        id=m["id"],
        group_key=m["group_key"],
        kind=m["kind"],
        severity=m["severity"],
        status=m["status"],
        verdict=m["verdict"],
        professional=m["professional"],
        organization=m["organization"],
        patient_id=m["patient_id"],
        explanation=m["explanation"],
        evidence=tuple(json.loads(m["evidence"])),
        raised_at=m["raised_at"],
        updated_at=m["updated_at"],
        assignee=m["assignee"],
        acknowledged_by=m["acknowledged_by"],
        closed_by=m["closed_by"],
        note=m["note"],
        patient_notified_at=m["patient_notified_at"],
        version=m["version"],
    )


def _merged(old: tuple[int, ...], new: tuple[int, ...]) -> list[int]:
    evidence = sorted(set(old) | set(new))
    if len(evidence) > MAX_EVIDENCE:
        half = MAX_EVIDENCE // 2
        evidence = evidence[:half] + evidence[-half:]
    return evidence


class AlertStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def raise_or_extend(self, alert: StoredAlert) -> StoredAlert:
        """Store a new alert, or add its evidence to the one with the same ``group_key``
        (raising its severity if higher); a closed alert stays closed, its evidence grows."""
        found = self.connection.execute(
            select(_table).where(_table.c.group_key == alert.group_key)
        ).first()
        if found is None:
            self.connection.execute(
                insert(_table).values(
                    id=alert.id,
                    group_key=alert.group_key,
                    kind=alert.kind,
                    severity=alert.severity,
                    status=alert.status,
                    verdict=None,
                    professional=alert.professional,
                    organization=alert.organization,
                    patient_id=alert.patient_id,
                    explanation=alert.explanation,
                    evidence=json.dumps(list(alert.evidence)),
                    raised_at=alert.raised_at,
                    updated_at=alert.updated_at,
                    version=1,
                )
            )
            return alert
        old = _alert(found)
        self.connection.execute(
            update(_table)
            .where(_table.c.id == old.id)
            .values(
                severity=max(old.severity, alert.severity),
                explanation=alert.explanation if alert.severity > old.severity else old.explanation,
                evidence=json.dumps(_merged(old.evidence, alert.evidence)),
                updated_at=alert.updated_at,
                version=old.version + 1,
            )
        )
        return self.get(old.id) or old

    def get(self, alert_id: str) -> StoredAlert | None:
        row = self.connection.execute(select(_table).where(_table.c.id == alert_id)).first()
        return _alert(row) if row is not None else None

    def search(
        self,
        *,
        status: tuple[str, ...] = (),
        kind: tuple[str, ...] = (),
        offset: int = 0,
        count: int = 50,
    ) -> tuple[int, list[StoredAlert]]:
        """Alerts, the most severe and most recent first, with the total matching."""
        conditions = []
        if status:
            conditions.append(_table.c.status.in_(status))
        if kind:
            conditions.append(_table.c.kind.in_(kind))
        total = self.connection.execute(
            select(func.count()).select_from(_table).where(*conditions)
        ).scalar_one()
        rows = self.connection.execute(
            select(_table)
            .where(*conditions)
            .order_by(_table.c.severity.desc(), _table.c.raised_at.desc(), _table.c.id)
            .offset(offset)
            .limit(count)
        )
        return int(total), [_alert(row) for row in rows]

    def closed_verdicts(self) -> list[tuple[str, str, str]]:
        """(professional, kind, verdict) of every closed alert, oldest first: the officer's
        feedback, replayed into a detector that starts."""
        rows = self.connection.execute(
            select(_table.c.professional, _table.c.kind, _table.c.verdict)
            .where(_table.c.status == "closed", _table.c.verdict.is_not(None))
            .order_by(_table.c.updated_at, _table.c.id)
        )
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def change(
        self, alert_id: str, version: int, now: datetime, **values: str | datetime | None
    ) -> bool:
        """Change an alert's workflow fields if it is still at ``version`` (False otherwise:
        someone else changed it meanwhile)."""
        allowed = {
            "status",
            "verdict",
            "assignee",
            "acknowledged_by",
            "closed_by",
            "note",
            "patient_notified_at",
        }
        if not set(values) <= allowed:
            raise ValueError(f"not a workflow field: {sorted(set(values) - allowed)}")
        changed = self.connection.execute(
            update(_table)
            .where(_table.c.id == alert_id, _table.c.version == version)
            .values(**values, updated_at=now, version=version + 1)
        ).rowcount
        return bool(changed)

    def cursor(self, stream: str) -> int:
        value = self.connection.execute(
            select(_cursor.c.position).where(_cursor.c.stream == stream)
        ).scalar_one_or_none()
        return int(value) if value is not None else 0

    def move_cursor(self, stream: str, position: int) -> None:
        changed = self.connection.execute(
            update(_cursor).where(_cursor.c.stream == stream).values(position=position)
        ).rowcount
        if not changed:
            self.connection.execute(insert(_cursor).values(stream=stream, position=position))
