"""FHIR handlers of the patient's say over their record.

- ``Consent`` (IHE Privacy Consent on FHIR): a grant is a ``permit`` provision naming its actor
  and the confidentiality it opens (``N``; ``N`` and ``R`` for an extended access), a block is a
  ``deny`` provision, and the emergency setting is one Consent per record whose provision's
  purpose is ``ETREAT``. Created by the patient or a managing representative; withdrawn by
  updating it with ``status: inactive`` (history is kept).
- ``Encounter``: a care event recorded by the professional who saw the patient; it gives them a
  ``normal`` access for the care-relationship period (90 days unless configured).
- ``Communication``: the notifications the engine's obligations produced, addressed to the
  patient (emergency access, care events, changes made by a representative).
- ``Patient/[id]/$emergency-access`` (break-the-glass) and ``Patient/[id]/$explain`` (the rule
  path of one decision, for the security officer or the patient).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from carevault.api.fhir import search as sp
from carevault.api.fhir.context import ApiContext
from carevault.api.fhir.door import (
    AccessNeed,
    Admission,
    FhirRequest,
    FhirResponse,
    Interaction,
    Operation,
    Refusal,
    ResourceHandler,
    SearchParam,
    Target,
    reading,
)
from carevault.domain.audit import rfc3339_ms
from carevault.domain.authorization import (
    Action,
    CareProof,
    Decision,
    EmergencySetting,
    GrantLevel,
    Party,
    RecordFacts,
    Subject,
)
from carevault.domain.errors import InvalidInput, NotFound, NotPermitted
from carevault.domain.records import StoredBlock, StoredEncounter, StoredGrant
from carevault.fhirmodel.validate import date_time, validate_resource
from carevault.services import record_reads
from carevault.services.presence import code_hash, normalize
from carevault.services.record_policy import Actor, Refused
from carevault.services.unit_of_work import UnitOfWork

JsonObject = dict[str, Any]

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
LOINC = "http://loinc.org"
_PARTY_TYPES = {
    "Practitioner": Party.PRACTITIONER,
    "Organization": Party.ORGANIZATION,
    "CareTeam": Party.CARE_TEAM,
}
_PARTY_REFERENCE = {party: kind for kind, party in _PARTY_TYPES.items()}
_LEVEL_LABELS = {GrantLevel.NORMAL: ["N"], GrantLevel.EXTENDED: ["N", "R"]}
_EMERGENCY_LABELS = {
    EmergencySetting.NORMAL: ["N"],
    EmergencySetting.NORMAL_AND_RESTRICTED: ["N", "R"],
}
EMERGENCY_CONSENT_PREFIX = "emergency-"
# On a grant's provision: the practitioner may pass the access on to a colleague for a while
# (`Patient/[id]/$delegate`), when the patient allows delegation on the record.
DELEGABLE_URL = "https://carevault.lu/fhir/StructureDefinition/delegable"


def _reference_id(value: Any, kind: str, where: str) -> str:
    reference = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(reference, str) or not reference.startswith(f"{kind}/"):
        raise InvalidInput(f"{where} must reference a {kind}", expression=where)
    ident = reference.removeprefix(f"{kind}/")
    if not ident or "/" in ident:
        raise InvalidInput(f"{where} must be {kind}/<id>", expression=where)
    return ident


def _admitted(request: FhirRequest) -> tuple[Subject, Admission]:
    """The subject the gate admitted; a handler reached without one refuses (deny by default)."""
    admission = request.admission
    if admission is None or admission.subject is None or admission.decision is None:
        raise NotPermitted("the request was not decided by the engine", issue_code="forbidden")
    return admission.subject, admission


def _subject_of(request: FhirRequest) -> Subject:
    return _admitted(request)[0]


def actor_of(request: FhirRequest) -> Actor:
    subject, admission = _admitted(request)
    return Actor(
        subject,
        admission.who or subject.id,
        network=request.client or None,
        organization=admission.organization,
    )


def _record(request: FhirRequest) -> RecordFacts:
    return admitted_record(request)[1]


def admitted_record(request: FhirRequest) -> tuple[Subject, RecordFacts]:
    """The subject and the record facts the engine decided on."""
    subject, admission = _admitted(request)
    if admission.record is None:
        raise NotPermitted("the request was not decided on a record", issue_code="forbidden")
    return subject, admission.record


def _body(api: ApiContext, request: FhirRequest, kind: str) -> JsonObject:
    resource = request.json_body(api.settings.max_json_depth)
    return validate_resource(resource, kind)


def _one_patient(request: FhirRequest) -> str | None:
    patients = sp.references(request, "patient", "Patient")
    if not patients:
        return None
    if len(patients) != 1 or len(patients[0]) != 1:
        raise InvalidInput("search one patient's record at a time", expression="patient")
    return patients[0][0]


def _searchset(
    request: FhirRequest, total: int, resources: list[JsonObject], offset: int, count: int
) -> JsonObject:
    from carevault.domain.queries import Page, SearchResult, Stored

    items = [Stored(str(r["id"]), 1, r) for r in resources]
    return sp.searchset(request, SearchResult(total, items), Page(offset, count))


# --- Consent ---------------------------------------------------------------------------------


def grant_consent(patient_id: str, stored: StoredGrant) -> JsonObject:
    grant = stored.grant
    period: JsonObject = {"start": rfc3339_ms(grant.start)}
    if grant.end is not None:
        period["end"] = rfc3339_ms(grant.end)
    return {
        "resourceType": "Consent",
        "id": grant.id,
        "status": "active" if stored.revoked_at is None else "inactive",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": rfc3339_ms(stored.created_at),
        "policyRule": {"coding": [{"system": ACT_REASON, "code": "TREAT"}]},
        "provision": {
            "type": "permit",
            "period": period,
            "actor": [_actor(grant.party, grant.party_id)],
            "securityLabel": [
                {"system": CONFIDENTIALITY, "code": code} for code in _LEVEL_LABELS[grant.level]
            ],
            **(
                {"extension": [{"url": DELEGABLE_URL, "valueBoolean": True}]}
                if grant.delegable
                else {}
            ),
        },
        **({"sourceReference": {"reference": stored.source_ref}} if stored.source_ref else {}),
    }


def block_consent(patient_id: str, stored: StoredBlock) -> JsonObject:
    block = stored.block
    return {
        "resourceType": "Consent",
        "id": block.id,
        "status": "active" if stored.revoked_at is None else "inactive",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": rfc3339_ms(stored.created_at),
        "provision": {"type": "deny", "actor": [_actor(block.party, block.party_id)]},
    }


def emergency_consent(record: RecordFacts) -> JsonObject:
    setting = record.emergency_setting
    provision: JsonObject = {
        "type": "deny" if setting is EmergencySetting.OFF else "permit",
        "purpose": [{"system": ACT_REASON, "code": "ETREAT"}],
    }
    if setting is not EmergencySetting.OFF:
        provision["securityLabel"] = [
            {"system": CONFIDENTIALITY, "code": code} for code in _EMERGENCY_LABELS[setting]
        ]
    return {
        "resourceType": "Consent",
        "id": EMERGENCY_CONSENT_PREFIX + record.patient_id,
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{record.patient_id}"},
        "provision": provision,
    }


def _actor(party: Party, party_id: str) -> JsonObject:
    return {
        "role": {"coding": [{"system": PARTICIPATION, "code": "IRCP"}]},
        "reference": {"reference": f"{_PARTY_REFERENCE[party]}/{party_id}"},
    }


def _labels(provision: JsonObject) -> set[str]:
    labels = set()
    for label in provision.get("securityLabel", []):
        if label.get("system") != CONFIDENTIALITY or label.get("code") not in ("N", "R"):
            raise InvalidInput(
                "securityLabel must be N, or N and R, from " + CONFIDENTIALITY,
                expression="Consent.provision.securityLabel",
            )
        labels.add(label["code"])
    return labels


def _grant_level(provision: JsonObject) -> GrantLevel:
    """N (or no label): a normal access; N and R: an extended one."""
    return GrantLevel.EXTENDED if "R" in _labels(provision) else GrantLevel.NORMAL


def _delegable(provision: JsonObject) -> bool:
    values = [
        e.get("valueBoolean")
        for e in provision.get("extension", [])
        if isinstance(e, dict) and e.get("url") == DELEGABLE_URL
    ]
    if len(values) > 1 or any(not isinstance(v, bool) for v in values):
        raise InvalidInput(
            f"{DELEGABLE_URL} appears at most once, with valueBoolean",
            expression="Consent.provision.extension",
        )
    return bool(values and values[0])


def _emergency_setting(provision: JsonObject) -> EmergencySetting:
    """The emergency Consent's provision: deny is off; permit opens N, or N and R."""
    if provision.get("type") == "deny":
        return EmergencySetting.OFF
    if "R" in _labels(provision):
        return EmergencySetting.NORMAL_AND_RESTRICTED
    return EmergencySetting.NORMAL


class ConsentHandler(ResourceHandler):
    resource_type = "Consent"
    profile = "https://profiles.ihe.net/ITI/PCF/StructureDefinition/IHE.PCF.consent"
    interactions = frozenset(
        {Interaction.READ, Interaction.SEARCH, Interaction.CREATE, Interaction.UPDATE}
    )
    search_params = (
        SearchParam("patient", "reference", "The patient whose consents these are"),
        SearchParam("status", "token", "active or inactive"),
    )

    def __init__(self, api: ApiContext) -> None:
        self.api = api

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        action = Action.PERSONAL if reading(request) is not Action.WRITE else Action.MANAGE
        if request.interaction is Interaction.SEARCH:
            return AccessNeed(Target.RECORD, action, _one_patient(request))
        if request.interaction is Interaction.CREATE:
            resource = request.json_body(self.api.settings.max_json_depth)
            patient = _reference_id(resource.get("patient"), "Patient", "Consent.patient")
            return AccessNeed(Target.RECORD, action, patient)
        consent_id = request.resource_id or ""
        if consent_id.startswith(EMERGENCY_CONSENT_PREFIX):
            return AccessNeed(
                Target.RECORD, action, consent_id.removeprefix(EMERGENCY_CONSENT_PREFIX)
            )
        owner = uow.records.consent_patient(consent_id)
        if owner is None:
            raise NotFound(f"Consent/{consent_id} is not known")
        return AccessNeed(Target.RECORD, action, owner)

    def _all(self, record: RecordFacts) -> list[JsonObject]:
        grants, blocks = record_reads.consents(self.api.unit_of_work, record.patient_id)
        return [
            *(grant_consent(record.patient_id, g) for g in grants),
            *(block_consent(record.patient_id, b) for b in blocks),
            emergency_consent(record),
        ]

    def read(self, request: FhirRequest) -> FhirResponse:
        record = _record(request)
        for resource in self._all(record):
            if resource["id"] == request.resource_id:
                return FhirResponse(200, resource, patients=(record.patient_id,))
        raise NotFound(f"Consent/{request.resource_id} is not known")

    def search(self, request: FhirRequest) -> FhirResponse:
        record = _record(request)
        statuses = {v for alternatives in sp.exact(request, "status") for v in alternatives}
        found = [r for r in self._all(record) if not statuses or r["status"] in statuses]
        paging = sp.page(
            request, self.api.settings.default_page_size, self.api.settings.max_page_size
        )
        page = found[paging.offset : paging.offset + paging.count]
        body = _searchset(request, len(found), page, paging.offset, paging.count)
        return FhirResponse(200, body, patients=(record.patient_id,))

    def create(self, request: FhirRequest) -> FhirResponse:
        resource = _body(self.api, request, "Consent")
        record = _record(request)
        policy = self.api.policy
        actor = actor_of(request)
        provision = resource.get("provision")
        if resource.get("status") != "active" or not isinstance(provision, dict):
            raise InvalidInput(
                "a new Consent is active and has a provision", expression="Consent.status"
            )
        kind = provision.get("type")
        if any(p.get("code") == "ETREAT" for p in provision.get("purpose", [])):
            policy.set_emergency_setting(actor, record.patient_id, _emergency_setting(provision))
            body = emergency_consent(_reload(self.api, record.patient_id) or record)
            return FhirResponse(201, body, _location(request, body), (record.patient_id,))
        actors = provision.get("actor", [])
        if kind not in ("permit", "deny") or len(actors) != 1:
            raise InvalidInput(
                "a grant or a block names exactly one actor (provision.type permit or deny)",
                expression="Consent.provision.actor",
            )
        reference = str(actors[0].get("reference", {}).get("reference", ""))
        kind_name, _, party_id = reference.partition("/")
        party = _PARTY_TYPES.get(kind_name)
        if party is None or not party_id:
            raise InvalidInput(
                "the actor is a Practitioner, an Organization or a CareTeam",
                expression="Consent.provision.actor.reference",
            )
        if kind == "deny":
            block = policy.block(actor, record.patient_id, party, party_id)
            _, stored_block = record_reads.consent(
                self.api.unit_of_work, record.patient_id, block.id
            )
            assert stored_block is not None
            body = block_consent(record.patient_id, stored_block)
        else:
            level = _grant_level(provision)
            period = provision.get("period", {})
            start = (
                date_time(period["start"], "Consent.provision.period.start")
                if "start" in period
                else None
            )
            end = (
                date_time(period["end"], "Consent.provision.period.end")
                if "end" in period
                else None
            )
            grant = policy.grant(
                actor,
                record.patient_id,
                party,
                party_id,
                level,
                start=start,
                end=end,
                delegable=_delegable(provision),
            )
            stored_grant, _ = record_reads.consent(
                self.api.unit_of_work, record.patient_id, grant.id
            )
            assert stored_grant is not None
            body = grant_consent(record.patient_id, stored_grant)
        return FhirResponse(201, body, _location(request, body), (record.patient_id,))

    def update(self, request: FhirRequest) -> FhirResponse:
        """Withdraw (``status: inactive``) or change the end date or level of a grant; change
        the emergency setting."""
        resource = _body(self.api, request, "Consent")
        record = _record(request)
        consent_id = request.resource_id or ""
        if resource.get("id") not in (None, consent_id):
            raise InvalidInput("the id does not match the URL", expression="Consent.id")
        policy = self.api.policy
        actor = actor_of(request)
        if consent_id.startswith(EMERGENCY_CONSENT_PREFIX):
            provision = resource.get("provision") or {}
            policy.set_emergency_setting(actor, record.patient_id, _emergency_setting(provision))
            return FhirResponse(
                200,
                emergency_consent(_reload(self.api, record.patient_id) or record),
                patients=(record.patient_id,),
            )
        stored_grant, stored_block = record_reads.consent(
            self.api.unit_of_work, record.patient_id, consent_id
        )
        if stored_grant is None and stored_block is None:
            raise NotFound(f"Consent/{consent_id} is not known")
        if resource.get("status") == "inactive":
            if stored_grant is not None:
                policy.revoke_grant(actor, record.patient_id, consent_id)
            else:
                policy.unblock(actor, record.patient_id, consent_id)
        elif stored_grant is not None and resource.get("status") == "active":
            provision = resource.get("provision") or {}
            level = _grant_level(provision)
            period = provision.get("period", {})
            end = (
                date_time(period["end"], "Consent.provision.period.end")
                if "end" in period
                else None
            )
            policy.change_grant(actor, record.patient_id, consent_id, level=level, end=end)
        else:
            raise InvalidInput(
                "a block can only be withdrawn (status inactive)", expression="Consent.status"
            )
        return self.read(request)


def _reload(api: ApiContext, patient_id: str) -> RecordFacts | None:
    return record_reads.record_now(api.unit_of_work, patient_id, api.policy.clock())


def _location(request: FhirRequest, body: JsonObject) -> dict[str, str]:
    return {"Location": f"{request.base_url.rstrip('/')}/{body['resourceType']}/{body['id']}"}


# --- Encounter -------------------------------------------------------------------------------


PRESENCE_CODE_URL = "https://carevault.lu/fhir/StructureDefinition/presence-code"


def _presence_code(resource: JsonObject) -> str | None:
    """The patient's presence code an encounter carries (extension ``presence-code``)."""
    extensions = resource.get("extension")
    if not isinstance(extensions, list):
        return None
    for extension in extensions:
        if isinstance(extension, dict) and extension.get("url") == PRESENCE_CODE_URL:
            value = extension.get("valueString")
            return value if isinstance(value, str) else None
    return None


class EncounterHandler(ResourceHandler):
    resource_type = "Encounter"
    interactions = frozenset({Interaction.READ, Interaction.SEARCH, Interaction.CREATE})
    search_params = (SearchParam("patient", "reference", "The patient seen"),)

    def __init__(self, api: ApiContext) -> None:
        self.api = api

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        if request.interaction is Interaction.CREATE:
            resource = request.json_body(self.api.settings.max_json_depth)
            patient = _reference_id(resource.get("subject"), "Patient", "Encounter.subject")
            # The patient's presence code, if any and usable now, proves the care relationship
            # (it is spent with the encounter); the gate knows of the admission system.
            plain = normalize(_presence_code(resource) or "")
            usable = plain is not None and uow.presence_codes.usable(
                code_hash(patient, plain), patient, self.api.policy.clock()
            )
            proof = CareProof.PRESENCE_CODE if usable else None
            return AccessNeed(Target.RECORD, Action.CARE_EVENT, patient, care_proof=proof)
        if request.interaction is Interaction.SEARCH:
            return AccessNeed(Target.RECORD, Action.SEARCH, _one_patient(request))
        stored = uow.records.encounter(request.resource_id or "")
        if stored is None:
            raise NotFound(f"Encounter/{request.resource_id} is not known")
        return AccessNeed(Target.RECORD, Action.READ, stored.patient_id)

    def create(self, request: FhirRequest) -> FhirResponse:
        resource = _body(self.api, request, "Encounter")
        presence_code = _presence_code(resource)
        # The code is spent, never stored with the encounter.
        extensions = [e for e in resource.get("extension", []) if e.get("url") != PRESENCE_CODE_URL]
        if extensions:
            resource["extension"] = extensions
        else:
            resource.pop("extension", None)
        record = _record(request)
        subject = _subject_of(request)
        participants = [
            _reference_id(p.get("individual"), "Practitioner", "Encounter.participant.individual")
            for p in resource.get("participant", [])
            if "individual" in p
        ]
        if participants != [subject.id]:
            raise InvalidInput(
                "the encounter names one participant: the practitioner the token speaks for "
                f"(Practitioner/{subject.id})",
                expression="Encounter.participant.individual",
            )
        organization = None
        if "serviceProvider" in resource:
            organization = _reference_id(
                resource["serviceProvider"], "Organization", "Encounter.serviceProvider"
            )
            if organization not in subject.organization_ids:
                raise InvalidInput(
                    "serviceProvider must be an organization the practitioner works for",
                    expression="Encounter.serviceProvider",
                )
        period = resource.get("period") or {}
        if "start" not in period:
            raise InvalidInput("the encounter needs period.start", expression="Encounter.period")
        start = date_time(period["start"], "Encounter.period.start")
        end = date_time(period["end"], "Encounter.period.end") if "end" in period else None
        now = self.api.policy.clock()
        if start > now:
            raise InvalidInput(
                "an encounter cannot start in the future", expression="Encounter.period.start"
            )
        encounter_id = uuid.uuid4().hex
        resource["id"] = encounter_id
        resource["meta"] = {"versionId": "1", "lastUpdated": rfc3339_ms(now)}
        encounter = StoredEncounter(
            id=encounter_id,
            version_id=1,
            patient_id=record.patient_id,
            practitioner_id=subject.id,
            organization_id=organization,
            period_start=start,
            period_end=end,
            resource=resource,
            created_at=now,
        )
        self.api.care.open_encounter(actor_of(request), encounter, presence_code)
        return FhirResponse(201, resource, _location(request, resource), (record.patient_id,))

    def read(self, request: FhirRequest) -> FhirResponse:
        stored = record_reads.encounter(self.api.unit_of_work, request.resource_id or "")
        if stored is None:
            raise NotFound(f"Encounter/{request.resource_id} is not known")
        return FhirResponse(200, stored.resource, patients=(stored.patient_id,))

    def search(self, request: FhirRequest) -> FhirResponse:
        record = _record(request)
        paging = sp.page(
            request, self.api.settings.default_page_size, self.api.settings.max_page_size
        )
        total, items = record_reads.encounters(
            self.api.unit_of_work, record.patient_id, paging.offset, paging.count
        )
        body = _searchset(request, total, [e.resource for e in items], paging.offset, paging.count)
        return FhirResponse(200, body, patients=(record.patient_id,))


# --- Communication ---------------------------------------------------------------------------


class CommunicationHandler(ResourceHandler):
    resource_type = "Communication"
    interactions = frozenset({Interaction.READ, Interaction.SEARCH})
    search_params = (SearchParam("patient", "reference", "The patient the notices are for"),)

    def __init__(self, api: ApiContext) -> None:
        self.api = api

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        if request.interaction is Interaction.SEARCH:
            return AccessNeed(Target.RECORD, Action.PERSONAL, _one_patient(request))
        found = uow.records.notification(request.resource_id or "")
        if found is None or found.patient_id is None:
            raise NotFound(f"Communication/{request.resource_id} is not known")
        return AccessNeed(Target.RECORD, Action.PERSONAL, found.patient_id)

    def read(self, request: FhirRequest) -> FhirResponse:
        found = record_reads.notification(self.api.unit_of_work, request.resource_id or "")
        if found is None or found.patient_id is None:
            raise NotFound(f"Communication/{request.resource_id} is not known")
        return FhirResponse(200, communication(found), patients=(found.patient_id,))

    def search(self, request: FhirRequest) -> FhirResponse:
        record = _record(request)
        paging = sp.page(
            request, self.api.settings.default_page_size, self.api.settings.max_page_size
        )
        total, items = record_reads.notifications(
            self.api.unit_of_work, record.patient_id, paging.offset, paging.count
        )
        body = _searchset(
            request, total, [communication(n) for n in items], paging.offset, paging.count
        )
        return FhirResponse(200, body, patients=(record.patient_id,))


def communication(notice: Any) -> JsonObject:
    payload = dict(notice.payload)
    texts = [
        {"contentString": payload[language]} for language in ("en", "fr") if language in payload
    ]
    resource: JsonObject = {
        "resourceType": "Communication",
        "id": notice.id,
        "status": "completed",
        "category": [{"text": notice.kind}],
        "subject": {"reference": f"Patient/{notice.patient_id}"},
        "recipient": [{"reference": f"Patient/{notice.patient_id}"}],
        "sent": rfc3339_ms(notice.created_at),
        "payload": texts,
    }
    sender = payload.get("sender")
    if isinstance(sender, str) and sender.startswith(("Practitioner/", "Organization/")):
        resource["sender"] = {"reference": sender}
    return resource


# --- operations ------------------------------------------------------------------------------

EMERGENCY_ACCESS = Operation(
    "emergency-access",
    "https://carevault.lu/fhir/OperationDefinition/Patient-emergency-access",
    True,
    frozenset({"POST"}),
    "Break the glass: a Parameters body with a mandatory 'reason'; opens the record for 24 h "
    "to this practitioner, notifies the patient and alerts the security officer",
    # It asks to read the record: a professional's tokens hold no write scope on Patient.
    permission="r",
    takes="Parameters",
)
PRESENCE_CODE = Operation(
    "presence-code",
    "https://carevault.lu/fhir/OperationDefinition/Patient-presence-code",
    True,
    frozenset({"POST"}),
    "For the patient (or a representative who manages the record): a code to show a "
    "professional, valid ten minutes and once, which lets them record a care event (an "
    "Encounter carrying it in the presence-code extension)",
)
EXPLAIN = Operation(
    "explain",
    "https://carevault.lu/fhir/OperationDefinition/Patient-explain",
    True,
    frozenset({"GET"}),
    "The rule path of the engine's decision for 'practitioner' reading this record "
    "(or its 'document'): for the security officer and the patient",
    parameters=(
        SearchParam("practitioner", "reference", "Practitioner/id", required=True),
        SearchParam("document", "token", "The id of one DocumentReference"),
    ),
)


@contextmanager
def refusals_recorded(request: FhirRequest) -> Iterator[None]:
    """An engine refusal met in the handler, past the gate (a write naming a document the
    caller may not see), is recorded as the gate's are: with the decision that refused, not
    the one that admitted the request."""
    try:
        yield
    except Refused as refused:
        admission = request.admission
        if admission is None:
            raise
        decision = refused.decision
        recorded = replace(admission, rule=decision.explain(), decision=decision)
        raise Refusal(refused.message, recorded) from refused


def emergency_access_response(api: ApiContext, request: FhirRequest) -> FhirResponse:
    body = _body(api, request, "Parameters")
    reasons = [p.get("valueString") for p in body.get("parameter", []) if p.get("name") == "reason"]
    if len(reasons) != 1 or not isinstance(reasons[0], str) or not reasons[0].strip():
        raise InvalidInput(
            "declare an emergency with one 'reason' parameter (valueString)",
            expression="Parameters.parameter",
        )
    patient_id = request.resource_id or ""
    # Past the gate, the engine counts the professional's declarations (the quota): a refusal
    # there is recorded with its own decision, and its alert.
    with refusals_recorded(request):
        window = api.care.declare_emergency(actor_of(request), patient_id, reasons[0])
    result = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "until", "valueInstant": rfc3339_ms(window.until)},
            {
                "name": "practitioner",
                "valueReference": {"reference": f"Practitioner/{window.practitioner_id}"},
            },
        ],
    }
    return FhirResponse(200, result, patients=(patient_id,))


def presence_code_response(api: ApiContext, request: FhirRequest) -> FhirResponse:
    patient_id = request.resource_id or ""
    code = api.care.issue_presence_code(actor_of(request), patient_id)
    result = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "code", "valueString": code.code},
            {"name": "expires", "valueInstant": rfc3339_ms(code.expires)},
        ],
    }
    response = FhirResponse(200, result, patients=(patient_id,))
    response.headers["Cache-Control"] = "no-store"
    return response


def decision_parameters(decision: Decision) -> JsonObject:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "decision", "valueCode": "permit" if decision.permit else "deny"},
            {"name": "rule", "valueString": decision.rule},
            {"name": "path", "valueString": " → ".join(decision.path)},
            {"name": "reason", "valueString": decision.reasons["en"]},
            {"name": "reason-fr", "valueString": decision.reasons["fr"]},
            *(
                {
                    "name": "obligation",
                    "valueString": o.kind + (f":{o.purpose_of_use}" if o.purpose_of_use else ""),
                }
                for o in sorted(decision.obligations, key=lambda o: o.kind)
            ),
        ],
    }


def explain_response(api: ApiContext, request: FhirRequest) -> FhirResponse:
    unknown = request.param_names() - {p.name for p in EXPLAIN.parameters} - {"_format"}
    if unknown:
        raise InvalidInput(f"unknown parameter {sorted(unknown)[0]!r} for $explain")
    practitioner = sp.single(request, "practitioner")
    if not practitioner:
        raise InvalidInput("name the practitioner to explain", expression="practitioner")
    decision = api.policy.explain(
        practitioner.removeprefix("Practitioner/"),
        request.resource_id or "",
        sp.single(request, "document"),
    )
    return FhirResponse(200, decision_parameters(decision), patients=(request.resource_id or "",))


__all__ = [
    "EMERGENCY_ACCESS",
    "EXPLAIN",
    "CommunicationHandler",
    "ConsentHandler",
    "EncounterHandler",
    "emergency_access_response",
    "explain_response",
]
