"""Who may pass the door until the authorization engine arrives, what is recorded, and how fast.

`DevLoopbackGate` is deliberately narrow: in the ``dev`` environment, requests from this machine
(loopback) are admitted so that a developer can use the directories; everywhere else, and from
any other address, every request except the CapabilityStatement is refused as unauthenticated.
It is replaced by the authorization engine (issue "authorization engine"), not extended.

"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Callable

from carevault.adapters.storage.unit_of_work import UnitOfWork
from carevault.api.fhir.door import Admission, FhirRequest, Interaction
from carevault.domain.errors import NotAuthenticated, NotPermitted, RateLimited
from carevault.domain.scopes import permits
from carevault.services.tokens import Caller, InvalidToken, TokenContext, authenticate
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
    """Per-client token buckets: ``rate_per_minute`` sustained, the same number as a burst."""

    MAX_CLIENTS = 100_000

    def __init__(self, rate_per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(rate_per_minute)
        self.refill_per_second = rate_per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._buckets) >= self.MAX_CLIENTS:
                self._buckets.clear()  # bounded memory; a reset only ever lets clients through
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill_per_second)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.refill_per_second)
                raise RateLimited(f"too many requests; retry in {wait} s", retry_after=wait)
            self._buckets[client] = (tokens - 1.0, now)


# What each interaction needs of a SMART scope (c r u d s).
_PERMISSION = {
    Interaction.READ: "r",
    Interaction.VREAD: "r",
    Interaction.HISTORY: "r",
    Interaction.SEARCH: "s",
    Interaction.CREATE: "c",
    Interaction.UPDATE: "u",
    Interaction.CONDITIONAL_UPDATE: "u",
}


def needed_permission(request: FhirRequest) -> str:
    if request.interaction is Interaction.OPERATION:
        return "r" if request.method == "GET" else "u"
    return _PERMISSION.get(request.interaction, "r")


def _within_own_record(request: FhirRequest, patient_id: str) -> None:
    """A patient app reaches its patient's record and nothing else (deny by default)."""
    own = f"Patient/{patient_id}"
    if request.resource_type == "Patient" and request.resource_id == patient_id:
        return
    if request.resource_type == "AuditEvent" and request.interaction is Interaction.SEARCH:
        asked = [value for name, value in request.params if name == "patient"]
        if asked and all(value in (own, patient_id) for value in asked):
            return
    raise NotPermitted(
        "a patient app may only reach its own patient's record", issue_code="forbidden"
    )


def _operator_admission(request: FhirRequest, caller: Caller) -> Admission:
    """Operators never see clinical content; a security officer may read the audit trail."""
    reading = request.interaction in (Interaction.READ, Interaction.SEARCH)
    if (
        caller.role == "security-officer"
        and request.resource_type == "AuditEvent"
        and reading
        and permits(caller.scopes, "AuditEvent", needed_permission(request))
    ):
        return Admission(
            rule="security officer: audit trail",
            who=caller.fhir_user,
            client_id=caller.client_id,
            role=caller.role,
        )
    raise NotPermitted("operators never see clinical content", issue_code="forbidden")


class TokenGate:
    """Admits requests that carry a valid SMART access token whose scopes cover them.

    Without a token, the development loopback rule still applies (see `DevLoopbackGate`) until
    the authorization engine takes over the directories; with a token, the token decides.
    """

    def __init__(
        self, settings: Settings, units: Callable[[], UnitOfWork], tokens: TokenContext
    ) -> None:
        self.fallback = DevLoopbackGate(settings)
        self.units = units
        self.tokens = tokens

    def admit(self, request: FhirRequest) -> Admission:
        if request.interaction is Interaction.CAPABILITIES:
            return self.fallback.admit(request)
        header = request.headers.get("authorization")
        if header is None:
            raise NotAuthenticated(
                "a SMART access token is required: see /.well-known/smart-configuration"
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("use 'Authorization: Bearer <access token>'")
        with self.units() as uow:
            caller = authenticate(uow, self.tokens, token.strip())
        kind = request.resource_type or ""
        if caller.role is not None:
            return _operator_admission(request, caller)
        permission = needed_permission(request)
        if not permits(caller.scopes, kind, permission):
            raise NotPermitted(
                f"the token's scopes do not allow '{permission}' on {kind}", issue_code="forbidden"
            )
        if caller.patient is not None:
            _within_own_record(request, caller.patient)
            return Admission(
                rule=f"patient app token {caller.token_id[:8]}: own record only",
                who=caller.fhir_user,
                client_id=caller.client_id,
                role="representative" if caller.representative else "patient",
            )
        return Admission(
            rule=f"token {caller.token_id[:8]}: {' '.join(str(s) for s in caller.scopes)}",
            who=caller.fhir_user,
            organization=caller.organization,
            client_id=caller.client_id,
            role="system" if caller.acting_system else "practitioner",
        )
