"""Who may pass the door, and how fast: the token gate that hands every request to the
authorization engine, and the per-client rate limit.

`DevLoopbackGate` now only serves the public CapabilityStatement; every other request needs a
token and an engine decision.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from carevault.api.fhir.door import (
    AccessNeed,
    Admission,
    FhirRequest,
    Interaction,
    NeedOf,
    Refusal,
    Target,
    UnknownPatient,
)
from carevault.domain.access_basis import basis_detail
from carevault.domain.accounts import client_key
from carevault.domain.authorization import (
    Action,
    Authority,
    CareProof,
    Decision,
    DirectoryArea,
    RecordFacts,
    Subject,
    SubjectKind,
    decide_audit_trail,
    decide_directory,
    decide_dispensing,
    decide_prescribing,
    refused_identity,
)
from carevault.domain.errors import InvalidInput, NotAuthenticated, RateLimited
from carevault.domain.scopes import permits
from carevault.services.authorities import NO_POWERS, Powers, powers_of
from carevault.services.record_policy import RecordPolicy, practitioner_subject
from carevault.services.tokens import Caller, InvalidToken, TokenContext, authenticate
from carevault.services.unit_of_work import UnitOfWork
from carevault.settings import Settings


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class DevLoopbackGate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def admit(self, request: FhirRequest) -> Admission:
        if request.interaction is Interaction.CAPABILITIES:
            return Admission("public: capability statement")
        if self.settings.environment == "dev" and is_loopback(request.client):
            return Admission("dev: loopback client, directories open until sign-in lands")
        raise NotAuthenticated(
            "authentication is required: this CareVault accepts no "
            "sign-in yet outside the development environment's loopback"
        )


class TokenBucketLimiter:
    """Per-client token buckets: ``rate_per_minute`` sustained, the same number as a burst.

    A client named by its address is counted by `client_key`: an IPv6 client usually holds a
    whole /64, and counting each of its addresses apart would give it as many buckets as it
    likes. Memory is bounded: when ``MAX_CLIENTS`` buckets are kept, those full again (a bucket
    idle for a minute is as good as none) are dropped first, then the least recently used;
    never all at once, which let a throttled client through by flooding the table with others.
    """

    MAX_CLIENTS = 100_000

    def __init__(self, rate_per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(rate_per_minute)
        self.refill_per_second = rate_per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # least recently used first
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        now = self.clock()
        key = _bucket_key(client)
        with self._lock:
            if len(self._buckets) >= self.MAX_CLIENTS and key not in self._buckets:
                self._evict(now)
            tokens, last = self._buckets.pop(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill_per_second)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.refill_per_second)
                raise RateLimited(f"too many requests; retry in {wait} s", retry_after=wait)
            self._buckets[key] = (tokens - 1.0, now)

    def _evict(self, now: float) -> None:
        full = [
            key
            for key, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.refill_per_second >= self.capacity
        ]
        for key in full:
            del self._buckets[key]
        excess = len(self._buckets) - self.MAX_CLIENTS + 1
        for key in list(itertools.islice(self._buckets, max(excess, 0))):
            del self._buckets[key]


def _bucket_key(client: str) -> str:
    """An address (bare or ``ip:``-prefixed) as `client_key` counts it; any other key as is."""
    address = client.removeprefix("ip:")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return client
    return client_key(address)


# What each interaction needs of a SMART scope (c r u d s).
_PERMISSION = {
    Interaction.READ: "r",
    Interaction.VREAD: "r",
    Interaction.HISTORY: "r",
    Interaction.SEARCH: "s",
    Interaction.CREATE: "c",
    Interaction.UPDATE: "u",
    Interaction.CONDITIONAL_UPDATE: "u",
    Interaction.TRANSACTION: "c",
}


def needed_permission(request: FhirRequest) -> str:
    if request.interaction is Interaction.OPERATION:
        if request.operation_permission:
            return request.operation_permission
        return "r" if request.method == "GET" else "u"
    return _PERMISSION.get(request.interaction, "r")


def _bearer(request: FhirRequest) -> str:
    header = request.headers.get("authorization")
    if header is None:
        raise NotAuthenticated(
            "a SMART access token is required: see /.well-known/smart-configuration"
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("use 'Authorization: Bearer <access token>'")
    return token.strip()


class TokenGate:
    """Authenticates the SMART access token, then asks the authorization engine.

    The token gives the identity (re-checked on every request: revocation, licence); the
    directory gives the subject's profession and organizations; the record's facts are loaded
    fresh, in one query, for the patient the request concerns. The scopes of the token are part
    of rule 1 (identity): a scope that does not cover the interaction is an identity refusal.
    """

    def __init__(
        self,
        settings: Settings,
        units: Callable[[], UnitOfWork],
        tokens: TokenContext,
        policy: RecordPolicy,
    ) -> None:
        self.fallback = DevLoopbackGate(settings)
        self.units = units
        self.tokens = tokens
        self.policy = policy
        self.care_proofs = settings.care_event_proofs
        self.dispensing_professions = frozenset(settings.dispensing_professions)

    def authenticate(self, request: FhirRequest) -> None:
        """The bearer token is one of ours, in force (`AccessGate.authenticate`)."""
        token = _bearer(request)
        with self.units() as uow:
            authenticate(uow, self.tokens, token)

    def admit(self, request: FhirRequest, need_of: NeedOf) -> Admission:
        if request.interaction is Interaction.CAPABILITIES:
            return self.fallback.admit(request)
        token = _bearer(request)
        now = self.tokens.clock()
        with self.units() as uow:
            caller = authenticate(uow, self.tokens, token)
            scoped = self.scoped(caller, request)
            subject = subject_of(
                uow, caller, identity_valid=scoped, now=now, mandator_id=_mandator(request)
            )
            # Rules 1 and the operator rule need nothing of the request: refuse before any
            # lookup, so that an operator learns nothing, not even whether an id exists.
            # (Rule 1 alone: the decision below is the request's one engine decision.)
            early = refused_identity(subject, operators=subject.kind is SubjectKind.OPERATOR)
            powers = NO_POWERS
            detail: dict[str, str] = {}
            if early is not None:
                decision, record, loaded, told = early, None, None, None
            else:
                need = _need(request, need_of, uow, subject)
                subject, powers = self._with_powers(uow, subject, caller, need)
                decision, record = self._decide(uow, subject, need, caller, now)
                loaded, told = need.loaded, need.refusal
                detail = {
                    **need.detail,
                    **_change_detail(need, subject),
                    # Why the access was allowed, as the facts stood when it was decided.
                    **basis_detail(decision, subject, record, now),
                }
        admission = Admission(
            rule=decision.explain(),
            who=caller.fhir_user,
            organization=caller.organization,
            client_id=caller.client_id,
            role=_role(caller),
            subject=subject,
            decision=decision,
            record=record,
            on_behalf_of=_on_behalf_of(subject, record),
            purpose_of_use=next(
                (o.purpose_of_use for o in decision.obligations if o.kind == "audit"), None
            ),
            document=loaded,
            identity_domain=powers.identity_domain,
            detail=detail,
        )
        if not decision.permit:
            message = told or decision.told["en"]  # the precise reason is in the rule
            if not scoped and decision.rule == "identity":
                message = (
                    f"the token's scopes do not allow '{needed_permission(request)}' on "
                    f"{request.resource_type}"
                )
            raise Refusal(message, admission)
        return admission

    def scoped(self, caller: Caller, request: FhirRequest) -> bool:
        """Whether the token's scopes cover the interaction (part of rule 1, identity)."""
        # An ITI-65 bundle creates DocumentReferences (with their List and Binary).
        kind = (
            "DocumentReference"
            if request.interaction is Interaction.TRANSACTION
            else request.resource_type or ""
        )
        return permits(caller.scopes, kind, needed_permission(request))

    def _with_powers(
        self, uow: UnitOfWork, subject: Subject, caller: Caller, need: AccessNeed
    ) -> tuple[Subject, Powers]:
        """The subject with what the system it acts through is registered for, read fresh, and
        the proof of a care event: only for the requests that need them (a directory write, a
        care event), so that reads cost no extra query. A professional's own card, a patient
        and an operator hold no authority."""
        care_event = need.action is Action.CARE_EVENT
        writing = need.target in (Target.DIRECTORY, Target.DEMOGRAPHICS) and need.action not in (
            Action.READ,
            Action.SEARCH,
        )
        if not (care_event or writing):
            return subject, NO_POWERS
        powers = NO_POWERS
        if caller.acting_system is not None and caller.organization is not None:
            powers = powers_of(uow, caller.organization.removeprefix("Organization/"))
        proof: CareProof | None = None
        if care_event:
            if (
                Authority.ADMISSION_SYSTEM in powers.authorities
                and CareProof.ADMISSION_SYSTEM in self.care_proofs
            ):
                proof = CareProof.ADMISSION_SYSTEM
            elif need.care_proof in self.care_proofs:
                proof = need.care_proof
        return replace(subject, authorities=powers.authorities, care_proof=proof), powers

    def _decide(
        self,
        uow: UnitOfWork,
        subject: Subject,
        need: AccessNeed,
        caller: Caller,
        now: datetime,
    ) -> tuple[Decision, RecordFacts | None]:
        personal = subject.kind in (SubjectKind.PATIENT, SubjectKind.REPRESENTATIVE)
        target, action = need.target, need.action
        if target is Target.DIRECTORY:
            return decide_directory(subject, action, need.area), None
        if target is Target.PRESCRIBING:
            return decide_prescribing(subject, self.policy.matrix, need.owner), None
        if target is Target.DISPENSING:
            return decide_dispensing(subject, self.dispensing_professions, need.owner), None
        if target is Target.DEMOGRAPHICS and not personal:
            return decide_directory(subject, action, DirectoryArea.IDENTITIES), None
        if target is Target.AUDIT_TRAIL and (
            subject.kind is SubjectKind.SECURITY_OFFICER or need.patient_id is None
        ):
            return decide_audit_trail(subject), None
        if target is Target.AUDIT_TRAIL:
            action = Action.PERSONAL
        patient_id = need.patient_id
        if patient_id is None and personal:
            patient_id = caller.patient
        if patient_id is None:
            # Identity and operators are refused as such; anyone else must name the record.
            early = self.policy.decide(subject, action, None, None, now)
            if early.rule in ("identity", "operator"):
                return early, None
            raise InvalidInput(
                "name the patient whose record this concerns (the 'patient' parameter)",
                expression="patient",
            )
        if subject.kind is SubjectKind.PATIENT and patient_id != subject.id:
            # Another person's record, or nobody's: decided without loading it, so that the
            # answer does not tell whether it exists.
            return self.policy.decide(subject, action, RecordFacts(patient_id), None, now), None
        if subject.kind is SubjectKind.REPRESENTATIVE and patient_id != caller.patient:
            # SMART patient context: the token reaches the record it was issued for, even if
            # the representative holds other mandates (they choose again in the portal).
            raise Refusal(
                "this token was issued to act on another patient's record",
                Admission(
                    rule="patient context of the token",
                    who=caller.fhir_user,
                    client_id=caller.client_id,
                    role=_role(caller),
                    subject=subject,
                ),
            )
        record = self.policy.facts(uow, patient_id, now, opening=need.opening)
        document = need.loaded.facts if need.loaded is not None else need.document
        return self.policy.decide(subject, action, record, document, now), record


# The record a patient's or representative's request names when it names it by a number
# nobody has: no patient has this id, so the request is refused as one on another's record.
NOBODY = ""


def _need(request: FhirRequest, need_of: NeedOf, uow: UnitOfWork, subject: Subject) -> AccessNeed:
    """What the request needs, as its handler says; a number nobody has is, for a patient's
    or representative's app, a record that is not theirs (see `UnknownPatient`)."""
    try:
        return need_of(request, uow)
    except UnknownPatient:
        if subject.kind not in (SubjectKind.PATIENT, SubjectKind.REPRESENTATIVE):
            raise
        return AccessNeed(Target.RECORD, Action.READ, NOBODY)


def _change_detail(need: AccessNeed, subject: Subject) -> dict[str, str]:
    """What the audit entry says of a change beyond the request: a directory change that
    affects access, and what proved a care event."""
    if need.target is Target.DIRECTORY and need.action not in (Action.READ, Action.SEARCH):
        return {"directory-change": need.area.value} if need.area.affects_access else {}
    if need.action is Action.CARE_EVENT and subject.care_proof is not None:
        return {"care-proof": subject.care_proof.value}
    return {}


def _role(caller: Caller) -> str:
    if caller.role is not None:
        return caller.role
    if caller.patient is not None:
        return "representative" if caller.representative else "patient"
    return "system" if caller.acting_system else "practitioner"


# An operator token's role, as the engine names its subject; any other role is a plain operator.
_OPERATOR_KINDS = {
    "security-officer": SubjectKind.SECURITY_OFFICER,
    "registrar": SubjectKind.REGISTRAR,
}


# An assistant mandated by several practitioners names the one they act for on each request.
ON_BEHALF_OF_HEADER = "x-on-behalf-of"


def _mandator(request: FhirRequest) -> str | None:
    value = request.headers.get(ON_BEHALF_OF_HEADER)
    if value is None:
        return None
    mandator = value.strip().removeprefix("Practitioner/")
    if not mandator or "/" in mandator or len(mandator) > 64:
        raise InvalidInput(
            "X-On-Behalf-Of names one practitioner: Practitioner/<id>", expression="X-On-Behalf-Of"
        )
    return mandator


def _on_behalf_of(subject: Subject, record: RecordFacts | None) -> str | None:
    """Whom the audit entry says the caller acted for: the patient, for a representative; the
    mandating practitioner, for an assistant (the entry names the assistant as the agent)."""
    if subject.kind is SubjectKind.REPRESENTATIVE and record is not None:
        return f"Patient/{record.patient_id}"
    if subject.kind is SubjectKind.ASSISTANT and subject.mandator is not None:
        return f"Practitioner/{subject.mandator.id}"
    return None


def subject_of(
    uow: UnitOfWork,
    caller: Caller,
    *,
    identity_valid: bool = True,
    now: datetime | None = None,
    mandator_id: str | None = None,
) -> Subject:
    """The engine's subject for an authenticated caller."""
    if caller.role is not None:
        kind = _OPERATOR_KINDS.get(caller.role, SubjectKind.OPERATOR)
        return Subject(kind, caller.fhir_user, identity_valid=identity_valid)
    if caller.patient is not None:
        if caller.representative:
            account = caller.fhir_user.removeprefix("account:")
            return Subject(SubjectKind.REPRESENTATIVE, account, identity_valid=identity_valid)
        return Subject(SubjectKind.PATIENT, caller.patient, identity_valid=identity_valid)
    organization = (
        caller.organization.removeprefix("Organization/") if caller.organization else None
    )
    subject = practitioner_subject(
        uow,
        caller.fhir_user.removeprefix("Practitioner/"),
        organization,
        now=now,
        mandator_id=mandator_id,
    )
    return replace(subject, identity_valid=identity_valid)
