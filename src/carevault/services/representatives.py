"""The people a patient names to read or manage their record for them (mandates), and what
they may change about their own mandate: nothing.

Each use case decides with the engine (`Action.MANAGE`: the patient, or a representative
whose mandate lets them manage the record; `Action.PERSONAL` to list them) and writes the
mandate, its audit entry and, when a representative made the change, the patient's
notification in one transaction, through `RecordPolicy`'s shared steps.
"""

from __future__ import annotations

from datetime import datetime

from carevault.domain.accounts import AccountKind, Mandate
from carevault.domain.audit import ACTION_CREATE, ACTION_DELETE, ACTION_UPDATE, rfc3339_ms
from carevault.domain.authorization import Action, MandateScope, SubjectKind
from carevault.domain.errors import InvalidInput, NotFound, NotPermitted
from carevault.services.record_policy import Actor, RecordPolicy, new_id


class Representatives:
    """Naming, limiting and ending a record's representatives."""

    def __init__(self, policy: RecordPolicy) -> None:
        self.policy = policy
        self.units = policy.units
        self.clock = policy.clock

    def listing(self, actor: Actor, patient_id: str) -> list[Mandate]:
        """Every mandate on the record, ended ones too, for the patient or a representative
        (the engine's personal reading)."""
        now = self.clock()
        with self.units() as uow:
            record = self.policy.facts(uow, patient_id, now, opening=True)
            self.policy.require(actor.subject, Action.PERSONAL, record, None, now)
            return uow.accounts.mandates_for(patient_id)

    def name_by_login(
        self,
        actor: Actor,
        patient_id: str,
        login: str,
        scope: MandateScope,
        *,
        end: datetime | None = None,
    ) -> Mandate:
        """The patient names a representative by the login of their representative's account
        (the person opened it at the desk, with their own identity checked)."""
        with self.units() as uow:
            account = uow.accounts.by_login(login.strip())
        if account is None or account.kind is not AccountKind.REPRESENTATIVE:
            raise NotFound("no representative's account has this login", expression="login")
        return self.add(actor, patient_id, account.id, scope, end=end)

    def limit(
        self,
        actor: Actor,
        patient_id: str,
        mandate_id: str,
        scope: MandateScope,
        end: datetime | None,
    ) -> None:
        """Change a mandate in force: its scope (read or manage) and its end."""
        now = self.clock()
        if end is not None and end <= now:
            raise InvalidInput("the end of a mandate is in the future", expression="end")
        with self.units() as uow:
            decision = self.policy.managed(uow, actor, patient_id, now)
            own = [
                m
                for m in uow.accounts.mandates_for(patient_id)
                if m.id == mandate_id and m.representative_account_id == actor.subject.id
            ]
            if actor.subject.kind is SubjectKind.REPRESENTATIVE and own:
                raise NotPermitted("a representative does not change their own mandate")
            if not uow.accounts.limit_mandate(patient_id, mandate_id, scope.value, end, now):
                raise NotFound(f"there is no mandate {mandate_id} in force on this record")
            uow.records.ensure_record(patient_id, now)
            detail = {"mandate": mandate_id, "scope": scope.value}
            if end is not None:
                detail["end"] = rfc3339_ms(end)
            self.policy.audited_change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "mandate-limit",
                ACTION_UPDATE,
                detail,
                words=(
                    "Your representative changed a representative's mandate.",
                    "Votre représentant a modifié le mandat d'un représentant.",
                ),
            )
            uow.commit()

    def add(
        self,
        actor: Actor,
        patient_id: str,
        account_id: str,
        scope: MandateScope,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Mandate:
        """Name a person (a representative's account) to read or manage the record."""
        now = self.clock()
        with self.units() as uow:
            decision = self.policy.managed(uow, actor, patient_id, now)
            store = uow.accounts
            account = store.by_id(account_id)
            if account is None or account.kind is not AccountKind.REPRESENTATIVE:
                raise NotFound(f"account:{account_id} is not a representative's account")
            if actor.subject.kind is SubjectKind.REPRESENTATIVE and account_id == actor.subject.id:
                raise NotPermitted("a representative does not give themselves a mandate")
            if end is not None and end <= (start or now):
                raise InvalidInput("the end of a mandate comes after its start", expression="end")
            mandate = Mandate(new_id(), account_id, patient_id, scope.value, start or now, end)
            store.add_mandate(mandate, now)
            uow.records.ensure_record(patient_id, now)  # marks the record as written
            detail = {
                "mandate": mandate.id,
                "representative": f"account:{account_id}",
                "scope": scope.value,
            }
            if end is not None:
                detail["end"] = rfc3339_ms(end)
            self.policy.audited_change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "mandate-create",
                ACTION_CREATE,
                detail,
                words=(
                    "Your representative named another representative for you.",
                    "Votre représentant vous a désigné un autre représentant.",
                ),
            )
            uow.commit()
        return mandate

    def remove(self, actor: Actor, patient_id: str, mandate_id: str) -> None:
        """End a mandate now; the representative is refused from the very next request."""
        now = self.clock()
        with self.units() as uow:
            decision = self.policy.managed(uow, actor, patient_id, now)
            if not uow.accounts.end_mandate(patient_id, mandate_id, now):
                raise NotFound(f"there is no mandate {mandate_id} in force on this record")
            uow.records.ensure_record(patient_id, now)
            self.policy.audited_change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "mandate-end",
                ACTION_DELETE,
                {"mandate": mandate_id},
                words=(
                    "Your representative ended a representative's mandate.",
                    "Votre représentant a mis fin au mandat d'un représentant.",
                ),
            )
            uow.commit()
