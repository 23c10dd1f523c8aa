"""FHIR handlers of IHE MHD: ITI-65 (``POST [base]`` transaction Bundle), ITI-66 (``List``),
ITI-67 (``DocumentReference``) and ITI-68 (``Binary``).

Every request names one record: the gate decides on it (on the document's own facts for a
read of one document), and searches filter with the engine's ``visible_filter`` in SQL.
"""

from __future__ import annotations

import base64
from dataclasses import replace
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
    UnknownPatient,
)
from carevault.api.fhir.formats import FHIR_JSON, FHIR_XML, accepted, format_param
from carevault.api.fhir.outcome import HttpProblem
from carevault.api.fhir.record_handlers import actor_of, admitted_record, refusals_recorded
from carevault.domain.authorization import Action, Confidentiality, RecordFacts
from carevault.domain.documents import DocumentCriteria
from carevault.domain.errors import InvalidInput, NotFound
from carevault.domain.queries import Page, SearchResult, Stored
from carevault.fhirmodel.mhd import (
    PatientRef,
    document_reference,
    parse_provide_bundle,
    patient_reference,
    submission_set_list,
)
from carevault.fhirmodel.validate import validate_resource
from carevault.services.document_exchange import named_patient
from carevault.services.documents import DocumentService, LoadedDocument, PermittedRead
from carevault.services.record_policy import unseen
from carevault.services.unit_of_work import UnitOfWork

JsonObject = dict[str, Any]


def _resolve(uow: UnitOfWork, patient: PatientRef, where: str) -> str:
    found = named_patient(uow, patient)
    if found is None:
        raise UnknownPatient(
            f"{where}: no patient has the identifier {patient.system}|{patient.value}"
        )
    return found


def _search_patient(request: FhirRequest, uow: UnitOfWork) -> str | None:
    """ITI-67 names the patient by ``patient`` (a reference) or ``patient.identifier``."""
    references = sp.references(request, "patient", "Patient")
    identifiers = sp.tokens(request, "patient.identifier")
    if (
        len(references) + len(identifiers) > 1
        or any(len(r) != 1 for r in references)
        or any(len(i) != 1 for i in identifiers)
    ):
        raise InvalidInput("search one patient's record at a time", expression="patient")
    if references:
        return references[0][0]
    if identifiers:
        identifier = identifiers[0][0]
        if not identifier.system:
            raise InvalidInput(
                "patient.identifier needs system|value", expression="patient.identifier"
            )
        return _resolve(
            uow, PatientRef(system=identifier.system, value=identifier.value), "patient.identifier"
        )
    return None


class TransactionHandler(ResourceHandler):
    """``POST [base]``: an ITI-65 Provide Document Bundle (the only transaction we accept)."""

    resource_type = "Bundle"
    interactions = frozenset({Interaction.TRANSACTION})

    def __init__(self, api: ApiContext) -> None:
        self.api = api

    def _bundle(self, request: FhirRequest) -> JsonObject:
        return request.json_body(self.api.settings.max_json_depth)

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        bundle = self._bundle(request)
        entries = bundle.get("entry", []) if isinstance(bundle.get("entry"), list) else []
        for entry in entries:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") == "List":
                patient = patient_reference(resource.get("subject"), "List.subject")
                replaced = _replaced(entries)
                return AccessNeed(
                    Target.RECORD,
                    Action.WRITE,
                    _resolve(uow, patient, "List"),
                    detail={"replaces": replaced} if replaced else {},
                )
        raise InvalidInput(
            "an ITI-65 Bundle holds one List (the SubmissionSet) naming the patient",
            expression="Bundle.entry",
        )

    def transaction(self, request: FhirRequest) -> FhirResponse:
        subject, record = admitted_record(request)
        submission = parse_provide_bundle(
            self._bundle(request),
            self.api.documents.affinity.contains,
            max_entries=self.api.settings.max_bundle_entries,
        )
        with refusals_recorded(request):
            published = self.api.exchange.submit(subject, record, submission)
        # One response entry per request entry, in the same order (FHIR R4 transaction).
        base = request.base_url.rstrip("/")
        locations = {submission.full_url: f"List/{published.submission_set_id}"}
        for document in submission.documents:
            document_id = published.ids[document.full_url]
            locations[document.full_url] = f"DocumentReference/{document_id}"
            if document.binary_url is not None:
                locations[document.binary_url] = f"Binary/{document_id}"
        entries = [
            {
                "response": {
                    "status": "201 Created",
                    "location": f"{base}/{locations[full_url]}/_history/1",
                },
            }
            for full_url in submission.entry_order
        ]
        body = {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
        return FhirResponse(200, body, patients=(record.patient_id,))


# The author's operations on one document, and how a refusal names the document.
_WRITES = {"release": "release", "entered-in-error": "mark entered-in-error"}


class DocumentReferenceHandler(ResourceHandler):
    resource_type = "DocumentReference"
    profile = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Comprehensive.DocumentReference"
    interactions = frozenset({Interaction.READ, Interaction.VREAD, Interaction.SEARCH})
    search_params = (
        SearchParam("patient", "reference", "The patient whose record is searched"),
        SearchParam("patient.identifier", "token", "The patient, by national identifier"),
        SearchParam("status", "token", "current, superseded, entered-in-error"),
        SearchParam("category", "token", "classCode"),
        SearchParam("type", "token", "typeCode"),
        SearchParam("setting", "token", "practiceSettingCode"),
        SearchParam("facility", "token", "healthcareFacilityTypeCode"),
        SearchParam("format", "token", "formatCode"),
        SearchParam("event", "token", "eventCodeList (context.event)"),
        SearchParam("security-label", "token", "confidentialityCode (N, R, V)"),
        SearchParam("date", "date", "When the document was registered"),
        SearchParam("period", "date", "The service period"),
        SearchParam("author", "reference", "Practitioner/id of the author"),
        SearchParam("related", "reference", "Documents related by replacement"),
    )

    def __init__(self, api: ApiContext) -> None:
        self.api = api

    operations = (
        Operation(
            "release",
            "https://carevault.lu/fhir/OperationDefinition/DocumentReference-release",
            True,
            frozenset({"POST"}),
            "The author makes a document held from the patient visible to them now",
            gives="DocumentReference",
        ),
        Operation(
            "entered-in-error",
            "https://carevault.lu/fhir/OperationDefinition/DocumentReference-entered-in-error",
            True,
            frozenset({"POST"}),
            "The author withdraws a document registered by mistake: its status becomes "
            "entered-in-error (it is kept, like every version)",
            gives="DocumentReference",
        ),
        Operation(
            "privacy",
            "https://carevault.lu/fhir/OperationDefinition/DocumentReference-privacy",
            True,
            frozenset({"POST"}),
            "The patient hides or shows a document ('hidden' valueBoolean) or changes its "
            "confidentiality ('confidentiality' valueCode N, R or V)",
            takes="Parameters",
            gives="DocumentReference",
        ),
    )

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        if request.interaction is Interaction.SEARCH:
            return AccessNeed(Target.RECORD, Action.SEARCH, _search_patient(request, uow))
        need = _reading(request, self.api.documents, uow, with_content=False)
        if request.operation == "privacy":
            # The patient's say over the record; the service also decides the read of the
            # document (nobody relabels what they may not see).
            return AccessNeed(Target.RECORD, Action.MANAGE, need.patient_id)
        if request.operation in _WRITES:
            # Decided as a read of the document; a refusal says nothing of its state.
            return replace(need, refusal=unseen(_WRITES[request.operation]))
        return need

    def operation(self, request: FhirRequest) -> FhirResponse:
        subject, record = admitted_record(request)
        document_id = request.resource_id or ""
        with refusals_recorded(request):
            if request.operation in _WRITES:
                if request.operation == "release":
                    self.api.exchange.release(subject, record, document_id)
                else:
                    self.api.exchange.withdraw(subject, record, document_id)
            else:
                self._privacy(request, record, document_id)
        return self._read_again(request)

    def _privacy(self, request: FhirRequest, record: RecordFacts, document_id: str) -> None:
        body = validate_resource(request.json_body(self.api.settings.max_json_depth), "Parameters")
        values = {p.get("name"): p for p in body.get("parameter", [])}
        unknown = set(values) - {"hidden", "confidentiality"}
        if unknown or not values:
            raise InvalidInput(
                "$privacy takes 'hidden' (valueBoolean) and/or 'confidentiality' (valueCode)",
                expression="Parameters.parameter",
            )
        actor = actor_of(request)
        if "hidden" in values:
            hidden = values["hidden"].get("valueBoolean")
            if not isinstance(hidden, bool):
                raise InvalidInput("'hidden' needs valueBoolean", expression="hidden")
            self.api.policy.hide_document(actor, record.patient_id, document_id, hidden)
        if "confidentiality" in values:
            code = values["confidentiality"].get("valueCode")
            if code not in ("N", "R", "V"):
                raise InvalidInput("'confidentiality' is N, R or V", expression="confidentiality")
            self.api.policy.set_document_confidentiality(
                actor, record.patient_id, document_id, Confidentiality(code)
            )

    def vread(self, request: FhirRequest) -> FhirResponse:
        _only_version_one(request)
        return self.read(request)

    def read(self, request: FhirRequest) -> FhirResponse:
        """The document the gate read and decided on, served as it was decided."""
        permitted = _permitted_read(request)
        metadata = self.api.documents.describe(permitted)
        body = document_reference(metadata, request.base_url)
        return FhirResponse(200, body, {"ETag": 'W/"1"'}, patients=(permitted.record.patient_id,))

    def _read_again(self, request: FhirRequest) -> FhirResponse:
        """The document after an operation changed it: read and decided again (the gate's
        snapshot is the document before the change)."""
        subject, record = admitted_record(request)
        metadata = self.api.exchange.read(subject, record, request.resource_id or "")
        body = document_reference(metadata, request.base_url)
        return FhirResponse(200, body, {"ETag": 'W/"1"'}, patients=(record.patient_id,))

    def search(self, request: FhirRequest) -> FhirResponse:
        subject, record = admitted_record(request)
        criteria = DocumentCriteria(
            status=sp.exact(request, "status"),
            category=sp.exact(request, "category"),
            type=sp.exact(request, "type"),
            setting=sp.exact(request, "setting"),
            facility=sp.exact(request, "facility"),
            format=sp.exact(request, "format"),
            event=sp.exact(request, "event"),
            security_label=sp.exact(request, "security-label"),
            related=sp.references(request, "related", "DocumentReference"),
            date=sp.date_bounds(request, "date"),
            period=sp.date_bounds(request, "period"),
            author=sp.references(request, "author", "Practitioner"),
        )
        paging: Page = sp.page(
            request, self.api.settings.default_page_size, self.api.settings.max_page_size
        )
        total, found = self.api.exchange.find(
            subject, record, criteria, offset=paging.offset, count=paging.count
        )
        items = [Stored(m.id, 1, document_reference(m, request.base_url)) for m in found]
        body = sp.searchset(request, SearchResult(total, items), paging)
        return FhirResponse(200, body, patients=(record.patient_id,))


def _only_version_one(request: FhirRequest) -> None:
    """Documents are never changed in place (a correction is a new document): version 1 is
    the only one."""
    if request.version_id != "1":
        raise NotFound(
            f"{request.resource_type}/{request.resource_id} has no version {request.version_id}"
        )


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range (RFC 9110 §14.1.2), or None for the whole content; several
    ranges, or a malformed header, are answered with the whole content, as the RFC allows."""
    if header is None or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header.removeprefix("bytes=").strip().partition("-")
    try:
        if first == "":
            length = int(last)
            start, end = max(0, size - length), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    if start > end or start >= size:
        raise RangeNotSatisfiable(size)
    return start, end


class RangeNotSatisfiable(HttpProblem):
    def __init__(self, size: int) -> None:
        super().__init__(416, "invalid", f"the range is outside the document's {size} bytes")


def _replaced(entries: list[Any]) -> str:
    """The documents an ITI-65 Bundle says it replaces (``relatesTo`` ``replaces``), as its
    audit entry names them; the service checks them."""
    targets = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "DocumentReference":
            continue
        relations = resource.get("relatesTo")
        for relation in relations if isinstance(relations, list) else []:
            target = relation.get("target") if isinstance(relation, dict) else None
            reference = target.get("reference") if isinstance(target, dict) else None
            if relation.get("code") == "replaces" and isinstance(reference, str):
                targets.append(reference.rsplit("/", 1)[-1][:64])
    return ",".join(targets)[:500]


def _reading(
    request: FhirRequest, documents: DocumentService, uow: UnitOfWork, *, with_content: bool
) -> AccessNeed:
    """Reading one document: loaded in the gate's transaction (with its content's row for a
    retrieval), decided on its own facts, handed back to the handler; unknown ids are 404.
    A signature's audit entry names the document it signs."""
    loaded = documents.load(uow, request.resource_id or "", with_content=with_content)
    if loaded is None:
        raise NotFound(f"{request.resource_type}/{request.resource_id} is not known")
    signs = loaded.stored.metadata.signs
    return AccessNeed(
        Target.RECORD,
        Action.READ,
        loaded.stored.metadata.patient_id,
        loaded=loaded,
        detail={"signs": signs} if signs else {},
    )


def _permitted_read(request: FhirRequest) -> PermittedRead:
    """What the gate decided a read on: the record's facts, its decision and the document it
    loaded (the handler's ``access_need`` is `_reading`, so the door always hands them over)."""
    admission = request.admission
    loaded: LoadedDocument | None = admission.document if admission else None
    if admission is None or admission.record is None or admission.decision is None or not loaded:
        raise RuntimeError("the gate did not hand over the document it decided on")
    return PermittedRead(admission.record, admission.decision, loaded)


class BinaryHandler(ResourceHandler):
    """ITI-68: the exact bytes, with their content type, never rendered by a browser."""

    resource_type = "Binary"
    interactions = frozenset({Interaction.READ, Interaction.VREAD})

    def __init__(self, api: ApiContext) -> None:
        self.api = api

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        # The document and its content's row in one statement, in the gate's transaction:
        # the engine decides once, on the document's facts, and the handler opens what was read.
        return _reading(request, self.api.documents, uow, with_content=True)

    def vread(self, request: FhirRequest) -> FhirResponse:
        _only_version_one(request)
        return self.read(request)

    def read(self, request: FhirRequest) -> FhirResponse:
        """The bytes (ranges and conditional requests honoured), or, for a client that asks
        for a FHIR format (``Accept: application/fhir+json | application/fhir+xml``, or
        ``_format``), the Binary resource with the bytes in base64 (FHIR R4 binary.html,
        "Serving Binary Resources using the RESTful API"). A document that is itself stored in
        the format asked for is served as its own bytes: they already are that format."""
        permitted = _permitted_read(request)
        retrieved = self.api.documents.retrieve(permitted)
        metadata, content = retrieved.metadata, retrieved.content
        etag = f'"{metadata.sha256}"'
        patients = (permitted.record.patient_id,)
        wanted_form = _fhir_form_asked(request)
        if wanted_form is not None and metadata.content_type != wanted_form:
            # The app layer renders this JSON as XML when XML was asked for (formats.py).
            body = {
                "resourceType": "Binary",
                "id": metadata.id,
                "meta": {"versionId": "1"},
                "contentType": metadata.content_type,
                "data": base64.b64encode(content).decode("ascii"),
            }
            return FhirResponse(200, body, {"ETag": etag}, patients=patients)
        headers = {
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'attachment; filename="{metadata.id}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'; frame-ancestors 'none'",
        }
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return FhirResponse(
                304, None, headers, patients=patients, raw=b"", media_type=metadata.content_type
            )
        wanted = _byte_range(request.headers.get("range"), len(content))
        if wanted is None:
            return FhirResponse(
                200, None, headers, patients=patients, raw=content, media_type=metadata.content_type
            )
        start, end = wanted
        headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        return FhirResponse(
            206,
            None,
            headers,
            patients=patients,
            raw=content[start : end + 1],
            media_type=metadata.content_type,
        )


def _fhir_form_asked(request: FhirRequest) -> str | None:
    """The FHIR media type a Binary read asks for explicitly, or None for the raw bytes.

    ``_format`` (json or xml) decides first, as it does for every answer (`formats.negotiate`);
    then an ``Accept`` that names a FHIR media type with a quality above zero. A generic type
    (``*/*``, ``application/json``, ``application/xml``) asks for the document, not for FHIR:
    an ITI-68 Document Consumer says what it accepts of the document itself."""
    chosen = format_param(request.params)
    if chosen is not None:
        return FHIR_XML if chosen == "xml" else FHIR_JSON
    for kind, quality in accepted(request.headers.get("accept", "")):
        if kind in (FHIR_JSON, FHIR_XML) and quality > 0:
            return kind
    return None


class SubmissionSetHandler(ResourceHandler):
    """ITI-66: the SubmissionSets of a record, as ``List`` resources: those of which the
    caller sees a document, with those documents only."""

    resource_type = "List"
    interactions = frozenset({Interaction.READ, Interaction.VREAD, Interaction.SEARCH})
    search_params = (
        SearchParam("patient", "reference", "The patient whose record is searched"),
        SearchParam("patient.identifier", "token", "The patient, by national identifier"),
        SearchParam("code", "token", "submissionset"),
    )

    def __init__(self, api: ApiContext) -> None:
        self.api = api

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        if request.interaction is Interaction.SEARCH:
            return AccessNeed(Target.RECORD, Action.SEARCH, _search_patient(request, uow))
        row = uow.documents.submission_set(request.resource_id or "")
        if row is None:
            raise NotFound(f"List/{request.resource_id} is not known")
        return AccessNeed(Target.RECORD, Action.READ, str(row["patient_id"]))

    def vread(self, request: FhirRequest) -> FhirResponse:
        _only_version_one(request)
        return self.read(request)

    def read(self, request: FhirRequest) -> FhirResponse:
        subject, record = admitted_record(request)
        found = self.api.exchange.submission_set(subject, record, request.resource_id or "")
        body = submission_set_list(found.row, found.document_ids, request.base_url)
        return FhirResponse(200, body, patients=(record.patient_id,))

    def search(self, request: FhirRequest) -> FhirResponse:
        subject, record = admitted_record(request)
        codes = {v for alternatives in sp.exact(request, "code") for v in alternatives}
        if codes - {"submissionset", f"{SUBMISSION_SET_CODE}|submissionset"}:
            raise InvalidInput(
                "only SubmissionSets (code=submissionset) are kept", expression="code"
            )
        paging: Page = sp.page(
            request, self.api.settings.default_page_size, self.api.settings.max_page_size
        )
        total, found = self.api.exchange.submission_sets(
            subject, record, offset=paging.offset, count=paging.count
        )
        items = [
            Stored(s.row["id"], 1, submission_set_list(s.row, s.document_ids, request.base_url))
            for s in found
        ]
        body = sp.searchset(request, SearchResult(total, items), paging)
        return FhirResponse(200, body, patients=(record.patient_id,))


SUBMISSION_SET_CODE = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
