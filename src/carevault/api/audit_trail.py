"""Turning every request that reaches the FHIR door into audit log entries (IHE BALP fields).

One request gives one main entry with the full query, for the security officer. When the
request concerns patients (a read, a write, or a search that found them), each of those patients
also gets an entry of their own, which names only the *parameters* of the query: a patient's
access history must not reveal what was asked about someone else.

Changes are recorded inside their own transaction (`AuditScope.write_in`, called by the unit of
work just before it commits), so a write and its record commit together. Everything else is
recorded after the handler ran, through the group commit, before the response leaves; if that
fails the door answers 503 and serves nothing.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Self

from carevault.api.fhir.door import (
    REDACTED,
    SECRET_PARAMETERS,
    AccessScope,
    Admission,
    FhirRequest,
    FhirResponse,
    Interaction,
)
from carevault.api.instruments import current_request_id
from carevault.domain.audit import (
    ACTION_CREATE,
    ACTION_EXECUTE,
    ACTION_READ,
    ACTION_UPDATE,
    Agent,
    AuditRecord,
    Written,
    outcome_of,
    professionals_detail,
    rfc3339_ms,
)
from carevault.domain.authorization import ALERT_SECURITY_OFFICER
from carevault.domain.errors import SEND_AGAIN, Unavailable
from carevault.services.audit_log import AuditLog, AuditTransaction, AuditUnavailable

_ACTIONS = {
    Interaction.READ: ACTION_READ,
    Interaction.VREAD: ACTION_READ,
    Interaction.HISTORY: ACTION_READ,
    Interaction.SEARCH: ACTION_READ,
    Interaction.CAPABILITIES: ACTION_READ,
    Interaction.CREATE: ACTION_CREATE,
    Interaction.UPDATE: ACTION_UPDATE,
    Interaction.CONDITIONAL_UPDATE: ACTION_UPDATE,
    Interaction.OPERATION: ACTION_EXECUTE,
    Interaction.TRANSACTION: ACTION_CREATE,
    Interaction.UNKNOWN: ACTION_EXECUTE,
}

_current: contextvars.ContextVar[AuditScope | None] = contextvars.ContextVar(
    "carevault_audit_scope", default=None
)


# The most of a request's query an entry keeps: the door refuses longer values, but the refusal
# is recorded with what was asked, and the log keeps every entry for ever.
MAX_RECORDED_QUERY = 2048


def _query(request: FhirRequest, names_only: bool) -> str | None:
    if not request.params:
        return None
    if names_only:
        query = ",".join(sorted(request.param_names()))
    else:
        query = "&".join(
            f"{name}={REDACTED if name in SECRET_PARAMETERS else value}"
            for name, value in request.params
        )
    if len(query) > MAX_RECORDED_QUERY:
        cut = len(query) - MAX_RECORDED_QUERY
        query = f"{query[:MAX_RECORDED_QUERY]}… ({cut} more characters not kept)"
    return query


def _told(response: FhirResponse) -> str | None:
    """The first issue of an OperationOutcome answer: its code and diagnostics, bounded."""
    body = response.body
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    issues = body.get("issue")
    issue = issues[0] if isinstance(issues, list) and issues else None
    if not isinstance(issue, dict):
        return None
    return f"{issue.get('code', 'unknown')}: {issue.get('diagnostics', '')}"[:500]


class AuditScope:
    """The audit context of one request while its handler runs."""

    def __init__(
        self, trail: AuditTrail, request: FhirRequest, admission: Admission | None
    ) -> None:
        self.trail = trail
        self.request = request
        self.admission = admission
        self.recorded = False
        self._token: contextvars.Token[AuditScope | None] | None = None

    def __enter__(self) -> Self:
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)

    def write_in(self, store: AuditTransaction, written: Written) -> None:
        """Record the change being committed, inside its transaction (once per request)."""
        if self.recorded:
            return
        status = 201 if self.request.interaction is Interaction.CREATE else 200
        records = self.trail.records(
            self.request,
            status,
            self.admission,
            tuple(written.patients),
            professionals=tuple(written.professionals),
        )
        self.trail.log.append_with(store, records)
        self.recorded = True


def before_commit(store: AuditTransaction, written: Written) -> None:
    """The unit-of-work hook: record the current request's change in its transaction."""
    scope = _current.get()
    if scope is not None:
        scope.write_in(store, written)


class AuditTrail:
    """The door's recorder, writing to the Merkle-tree audit log."""

    def __init__(
        self,
        log: AuditLog,
        clock: Callable[[], datetime],
        on_decision: Callable[[str], None] = lambda _outcome: None,
        *,
        errors_recorded: bool = False,
    ) -> None:
        """``on_decision(outcome)`` counts each request by the engine's outcome (permit, deny,
        none: refused before a decision) for the metrics. With ``errors_recorded`` (the
        ``integration`` environment: the conformance sandbox reports what each failed request
        of a vendor's system was told), a refused request's entry holds its OperationOutcome's
        diagnostics (``error``)."""
        self.log = log
        self.clock = clock
        self.on_decision = on_decision
        self.errors_recorded = errors_recorded

    def begin(self, request: FhirRequest, admission: Admission | None) -> AuditScope:
        return AuditScope(self, request, admission)

    def record(
        self,
        request: FhirRequest,
        response: FhirResponse,
        admission: Admission | None,
        scope: AccessScope | None,
    ) -> None:
        decision = admission.decision if admission is not None else None
        self.on_decision("none" if decision is None else "permit" if decision.permit else "deny")
        if scope is not None and scope.recorded and response.status < 400:
            return
        error = _told(response) if self.errors_recorded and response.status >= 400 else None
        records = self.records(request, response.status, admission, response.patients)
        if error:
            records[0] = replace(records[0], detail={**records[0].detail, "error": error})
        try:
            self.log.append(records)
        except AuditUnavailable as error:
            raise Unavailable(
                f"the access could not be recorded in the audit log, so nothing was served; "
                f"{SEND_AGAIN}"
            ) from error

    def records(
        self,
        request: FhirRequest,
        status: int,
        admission: Admission | None,
        patients: tuple[str, ...],
        *,
        professionals: tuple[str, ...] = (),
    ) -> list[AuditRecord]:
        """The request's entries; a change to professionals' entries, roles or teams names
        them in its main entry (`professionals_detail`), for the security officer's detector."""
        request_id = current_request_id() or uuid.uuid4().hex
        own = (
            request.resource_id
            if request.resource_type == "Patient" and request.resource_id
            else None
        )
        if own is None and len(patients) == 1 and request.interaction is not Interaction.SEARCH:
            own = patients[0]

        # A registrar is an operator: their request's own entry is in the operators' stream,
        # and each patient it concerns finds it in their history (the clinical stream) too.
        registrar = admission is not None and admission.role == "registrar"

        def entry(patient: str | None, names_only: bool, stream: str = "clinical") -> AuditRecord:
            return AuditRecord(
                stream=stream,
                recorded=rfc3339_ms(self.clock()),
                kind="access",
                action=_ACTIONS[request.interaction],
                interaction=request.interaction.value,
                outcome=outcome_of(status),
                agent=Agent(
                    who=admission.who if admission else None,
                    role=admission.role if admission else None,
                    organization=admission.organization if admission else None,
                    on_behalf_of=admission.on_behalf_of if admission else None,
                    network=request.client or None,
                ),
                patient=patient,
                entity_type=request.resource_type,
                entity_id=request.resource_id,
                query=_query(request, names_only)
                if request.operation is None
                else f"${request.operation}"
                + (f"?{_query(request, names_only)}" if request.params else ""),
                status=status,
                purpose_of_use=admission.purpose_of_use if admission else None,
                rule=admission.rule if admission else None,
                request_id=request_id,
                detail={
                    **(
                        {"client_id": admission.client_id}
                        if admission and admission.client_id
                        else {}
                    ),
                    **(admission.detail if admission else {}),
                    # The transport's verified client certificate: evidence, not identity.
                    **({"tls-client": request.tls_client} if request.tls_client else {}),
                },
            )

        if registrar:
            main = entry(None, names_only=False, stream="operator")
            others = [entry(p, names_only=True) for p in dict.fromkeys((*patients, own)) if p]
        else:
            main = entry(own, names_only=False)
            others = [entry(p, names_only=True) for p in patients if p != own]
        if professionals:  # a change to professionals' roles: rare, and every request comes here
            main = replace(main, detail={**main.detail, **professionals_detail(professionals)})
        return [main, *others, *self._alerts(request, status, admission, main)]

    def _alerts(
        self,
        request: FhirRequest,
        status: int,
        admission: Admission | None,
        main: AuditRecord,
    ) -> list[AuditRecord]:
        """The engine's ``alert-security-officer`` obligation: an entry of kind ``alert``
        beside the request's own (same request id), permitted or refused, which the security
        officer finds in the trail and the ATNA export forwards. It holds no medical content."""
        decision = admission.decision if admission else None
        if decision is None or ALERT_SECURITY_OFFICER not in decision.obligations:
            return []
        if decision.permit and status >= 400:
            return []  # permitted, then refused as malformed: nothing happened to alert on
        return [
            replace(
                main,
                kind="alert",
                query=None,
                detail={
                    **main.detail,
                    "decision": "permit" if decision.permit else "deny",
                    "rule": decision.rule,
                },
            )
        ]
