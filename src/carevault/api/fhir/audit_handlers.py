"""FHIR ``AuditEvent`` (IHE BALP queries) and the patient's ``$access-history``.

The security officer reads every event; a patient (or representative) searches the events of
their own record only: the engine decides on the one ``patient`` the search names, and the query
filters on it before paging.
"""

from __future__ import annotations

import base64
from typing import Any

from carevault.api.fhir import search as sp
from carevault.api.fhir.context import ApiContext
from carevault.api.fhir.door import (
    AccessNeed,
    FhirRequest,
    FhirResponse,
    Interaction,
    Operation,
    ResourceHandler,
    SearchParam,
    Target,
)
from carevault.domain.access_history import LANGUAGES as HISTORY_LANGUAGES
from carevault.domain.audit import STREAMS, AuditRecord
from carevault.domain.authorization import Action
from carevault.domain.errors import InvalidInput, NotFound
from carevault.domain.numbers import whole_number
from carevault.domain.queries import Page, SearchResult
from carevault.fhirmodel.audit_event import BALP, audit_event
from carevault.services.access_history import AccessHistory, access_history
from carevault.services.directory import patient_resource
from carevault.services.unit_of_work import UnitOfWork

JsonObject = dict[str, Any]


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _server(request: FhirRequest) -> str | None:
    """This FHIR base, as the request reached it: BALP's server agent of every event (the same
    platform served the request the event records)."""
    return request.base_url.rstrip("/") or None


class AuditEventHandler(ResourceHandler):
    resource_type = "AuditEvent"
    # The events claim, each in its meta.profile, the BALP profile they meet
    # (fhirmodel/audit_event.py); tests/support/r4_profiles.py checks every claim.
    profile = BALP + "Read"
    more_profiles = tuple(
        BALP + name
        for name in (
            *("PatientRead", "Query", "PatientQuery"),
            *("Create", "PatientCreate", "Update", "PatientUpdate"),
        )
    )
    interactions = frozenset({Interaction.READ, Interaction.SEARCH})
    search_params = (
        SearchParam("patient", "reference", "The patient the event concerns (Patient/id)"),
        SearchParam("agent", "reference", "Who acted (Practitioner/id, …)"),
        SearchParam("date", "date", "When the event was recorded, with eq/ne/lt/le/gt/ge"),
    )

    def __init__(self, api: ApiContext) -> None:
        self.api = api
        self.log = api.audit

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        patients = sp.references(request, "patient", "Patient")
        single = patients[0][0] if len(patients) == 1 and len(patients[0]) == 1 else None
        if request.interaction is not Interaction.SEARCH:
            single = None
        return AccessNeed(Target.AUDIT_TRAIL, Action.READ, single)

    def read(self, request: FhirRequest) -> FhirResponse:
        stream, _, digits = (request.resource_id or "").rpartition("-")
        index = whole_number(digits, MAX_INDEX_DIGITS)
        if stream not in STREAMS or index is None:
            raise NotFound(f"AuditEvent/{request.resource_id} is not known")
        rows = self.log.entries(stream, index, index + 1)
        if not rows:
            raise NotFound(f"AuditEvent/{request.resource_id} is not known")
        record = AuditRecord.from_canonical(rows[0][1])
        patients = (record.patient,) if record.patient else ()
        event = audit_event(stream, rows[0][0], record, server=_server(request))
        return FhirResponse(200, event, patients=patients)

    def search(self, request: FhirRequest) -> FhirResponse:
        paging: Page = sp.page(
            request, self.api.settings.default_page_size, self.api.settings.max_page_size
        )
        recorded = sp.date_bounds(request, "date")
        total, rows = self.log.search_entries(
            "clinical",
            patients=sp.references(request, "patient", "Patient"),
            agents=sp.exact(request, "agent"),
            recorded=recorded,
            offset=paging.offset,
            count=paging.count,
        )
        base = request.base_url.rstrip("/")
        bundle = sp.searchset(request, SearchResult(total, []), paging)
        records = [(i, AuditRecord.from_canonical(data)) for i, data in rows]
        entries = [
            {
                "fullUrl": f"{base}/AuditEvent/clinical-{i}",
                "resource": audit_event("clinical", i, record, server=_server(request)),
                "search": {"mode": "match"},
            }
            for i, record in records
        ]
        if entries:  # FHIR JSON has no empty array
            bundle["entry"] = entries
        patients = tuple(sorted({r.patient for _, r in records if r.patient}))
        return FhirResponse(200, bundle, patients=patients)


ACCESS_HISTORY = Operation(
    "access-history",
    "https://carevault.lu/fhir/OperationDefinition/Patient-access-history",
    True,
    frozenset({"GET"}),
    "Who accessed this patient's record, in plain words, with inclusion proofs of every entry "
    "in a signed tree head and a consistency proof from the tree size given in 'since'",
    parameters=(
        SearchParam("since", "number", "A tree size the caller saw: a consistency proof from it"),
        SearchParam("after", "number", "The leaf index after which the page starts"),
        SearchParam("_count", "number", "Entries per page (at most 100)"),
        SearchParam("language", "token", "en, fr or de"),
    ),
)

MAX_HISTORY_PAGE = 100
# A log index (an entry's id, $access-history's since and after) has at most 15 digits: more
# would pass the databases' 64-bit integers, a 500 instead of an unknown entry.
MAX_INDEX_DIGITS = 15


def history_parameters(history: AccessHistory, language: str) -> JsonObject:
    head = history.tree_head
    parameters: list[JsonObject] = [
        {
            "name": "treeHead",
            "part": [
                {"name": "treeSize", "valueInteger": head.tree_size},
                {"name": "rootHash", "valueBase64Binary": _b64(head.root_hash)},
                {"name": "timestamp", "valueString": str(head.timestamp_ms)},
                {"name": "signature", "valueBase64Binary": _b64(head.signature)},
            ],
        }
    ]
    if history.consistency is not None:
        parameters.append(
            {
                "name": "consistency",
                "part": [
                    {"name": "hash", "valueBase64Binary": _b64(h)} for h in history.consistency
                ],
            }
        )
    for entry in history.entries:
        parameters.append(
            {
                "name": "entry",
                "part": [
                    {"name": "leafIndex", "valueInteger": entry.leaf_index},
                    {"name": "leafInput", "valueBase64Binary": _b64(entry.leaf_input)},
                    {"name": "recorded", "valueInstant": entry.record.recorded},
                    {"name": "text", "valueString": entry.text},
                    *(
                        {"name": "auditPath", "valueBase64Binary": _b64(h)}
                        for h in entry.audit_path
                    ),
                ],
            }
        )
    if history.next_after is not None:
        parameters.append({"name": "nextAfter", "valueInteger": history.next_after})
    parameters.append({"name": "language", "valueCode": language})
    return {"resourceType": "Parameters", "parameter": parameters}


def history_language(request: FhirRequest) -> str:
    """The ``language`` the access history is told in (English if none); InvalidInput for one
    it has no words in (`carevault.domain.access_history.LANGUAGES`)."""
    language = sp.single(request, "language") or "en"
    if language not in HISTORY_LANGUAGES:
        raise InvalidInput(
            f"language must be one of {', '.join(HISTORY_LANGUAGES)}", expression="language"
        )
    return language


def access_history_response(api: ApiContext, request: FhirRequest) -> FhirResponse:
    assert request.resource_id is not None
    accepted = {p.name for p in ACCESS_HISTORY.parameters} | {"_format"}
    unknown = request.param_names() - accepted
    if unknown:
        raise InvalidInput(f"unknown parameter {sorted(unknown)[0]!r} for $access-history")
    language = history_language(request)
    since = sp.single(request, "since")
    after = sp.single(request, "after")
    count = sp.page(request, 20, MAX_HISTORY_PAGE).count
    for name, value in (("since", since), ("after", after)):
        if value is not None and whole_number(value, MAX_INDEX_DIGITS) is None:
            raise InvalidInput(f"{name} must be a whole number", expression=name)
    patient_resource(api.unit_of_work, request.resource_id)  # NotFound for an unknown one
    history = access_history(
        api.audit,
        api.unit_of_work,
        request.resource_id,
        known_size=int(since) if since is not None else None,
        after=int(after) if after is not None else -1,
        limit=count,
        language=language,
        affinity=api.affinity,
    )
    return FhirResponse(200, history_parameters(history, language), patients=(request.resource_id,))
