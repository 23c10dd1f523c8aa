"""The attacks can fail: each is run against the real platform, where it must find nothing,
and against a test-only variant of it with one component deliberately weakened (built with
`carevault.bootstrap.build` on the same database, then one part of its door replaced), where
it must report the weakness. An attack that passed against both would prove nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.api.access import TokenGate
from carevault.api.audit_trail import AuditTrail
from carevault.api.fhir import door
from carevault.api.fhir.directory_handlers import PatientHandler
from carevault.api.fhir.door import AccessNeed, FhirRequest, FhirResponse, Interaction
from carevault.api.fhir.record_handlers import EncounterHandler
from carevault.bootstrap import Platform, build
from carevault.domain.authorization import Action
from carevault.services.tokens import Caller
from carevault.settings import Settings
from security.owasp_api.test_api1_bola import (
    attack_a_patients_app_names_another_patient,
    attack_a_professional_reads_another_record_by_id,
)
from security.owasp_api.test_api4_resource_consumption import RATE, attack_flooding
from security.owasp_api.test_api5_function_level import attack_tokens_used_beyond_their_scope
from support.owasp import Attack, Target, World

pytestmark = pytest.mark.security


class ScopeBlindGate(TokenGate):
    """A gate that forgets to compare the token's scopes with the interaction."""

    def scoped(self, caller: Caller, request: FhirRequest) -> bool:
        return True


class Unlimited:
    """A rate limiter that lets everything through."""

    def check(self, client: str) -> None:
        return None


class ForgetfulTrail(AuditTrail):
    """An audit trail that keeps what was served and forgets what was refused."""

    def record(self, request: FhirRequest, response: FhirResponse, admission: Any,
               scope: Any) -> None:
        if response.status < 400:
            super().record(request, response, admission, scope)


class EncountersAsDirectory(EncounterHandler):
    """An encounter read by id decided as a directory entry (any professional may look it up)
    instead of on its patient's record: the object-level check left out."""

    def access_need(self, request: FhirRequest, uow: Any) -> AccessNeed:
        if request.interaction is Interaction.READ:
            return AccessNeed(door.Target.DIRECTORY, Action.READ)
        return super().access_need(request, uow)


class PixForAnyone(PatientHandler):
    """PIXm that forgets that a patient's app resolves the patient's own numbers only."""

    def _pix(self, request: FhirRequest) -> FhirResponse:
        return super()._pix(replace(request, admission=None))


def _scope_blind(weak: Platform) -> None:
    gate = weak.door.gate
    assert isinstance(gate, TokenGate)
    weak.door.gate = ScopeBlindGate(weak.settings, gate.units, weak.tokens, weak.policy)


def _unlimited(weak: Platform) -> None:
    weak.door.limiter = Unlimited()


def _forgetful(weak: Platform) -> None:
    weak.door.recorder = ForgetfulTrail(weak.audit, lambda: datetime.now(UTC))


def _encounters_as_directory(weak: Platform) -> None:
    weak.door.handlers["Encounter"] = EncountersAsDirectory(weak.door.handlers["Encounter"].api)


def _pix_for_anyone(weak: Platform) -> None:
    weak.door.handlers["Patient"] = PixForAnyone(weak.door.handlers["Patient"].api)


@dataclass(frozen=True)
class Planted:
    name: str
    weaken: Callable[[Platform], None]
    attacks: tuple[Attack, ...]
    symptom: str  # words the findings of the weakened platform must contain
    rate: int | None = None  # a rate limit small enough to reach, for both platforms


PLANTED = [
    Planted("a gate that skips the scope check", _scope_blind,
            (attack_tokens_used_beyond_their_scope,), "answered 200"),
    Planted("a door without a rate limit", _unlimited, (attack_flooding,),
            "of a minute: answered 200", rate=RATE),
    Planted("an audit trail that forgets refusals", _forgetful,
            (attack_a_professional_reads_another_record_by_id,),
            "no audit entry records the refusal"),
    Planted("an encounter decided as a directory entry", _encounters_as_directory,
            (attack_a_professional_reads_another_record_by_id,), "B's Encounter: answered 200"),
    Planted("a PIXm that answers any patient's app", _pix_for_anyone,
            (attack_a_patients_app_names_another_patient,), "PIXm of B's number"),
]


@pytest.fixture
def clients() -> Iterator[Callable[[Platform], TestClient]]:
    opened: list[TestClient] = []

    def open_client(platform: Platform) -> TestClient:
        client = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                            client=("203.0.113.67", 4444), raise_server_exceptions=False)
        opened.append(client.__enter__())
        return client

    yield open_client
    for client in opened:
        client.__exit__(None, None, None)


@pytest.mark.parametrize("planted", PLANTED, ids=lambda p: p.name.replace(" ", "-"))
def test_the_attacks_find_a_planted_weakness(planted: Planted, settings: Settings,
                                             platform: Platform, world: World,
                                             clients: Callable[[Platform], TestClient]) -> None:
    configured = settings if planted.rate is None else settings.model_copy(
        update={"rate_limit_per_minute": planted.rate})
    real, weak = build(configured, platform.engine), build(configured, platform.engine)
    planted.weaken(weak)
    for attack in planted.attacks:
        assert attack(Target(clients(real), real, world)) == [], attack.__name__
        found = attack(Target(clients(weak), weak, world))
        assert found, f"{attack.__name__} did not notice {planted.name}"
        assert any(planted.symptom in finding for finding in found), found
