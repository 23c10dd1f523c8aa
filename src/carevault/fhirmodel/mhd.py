"""IHE MHD on FHIR R4: reading an ITI-65 *Provide Document Bundle*, and writing the
``DocumentReference`` and ``List`` (SubmissionSet) resources that ITI-66/67 return.

An ITI-65 request is a ``transaction`` Bundle holding one ``List`` (the SubmissionSet), one or
more ``DocumentReference`` and their content, either as ``Binary`` entries referenced by
``attachment.url`` (the entry's ``fullUrl``) or inline in ``attachment.data``. Everything is
checked before anything is stored; an error names the element at fault (``expression``), so
that a sending system's developer can fix it without reading our code.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from carevault.domain.audit import rfc3339_ms
from carevault.domain.authorization import Confidentiality
from carevault.domain.documents import Coding, DocumentMetadata
from carevault.domain.errors import InvalidInput
from carevault.fhirmodel.mhd_walk import (
    FOLDER_REFUSED,
    AuthorClaim,
    is_folder,
    submission_set_unique_id,
    walk_document_reference,
    walk_submission_set,
)
from carevault.fhirmodel.validate import date_time, validate_resource

JsonObject = dict[str, Any]

SUBMISSION_SET_SYSTEM = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
SOURCE_ID_EXTENSION = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
# MHD 4.0 published its canonical URLs with http://; the IG has used https:// since.
SOURCE_ID_URLS = frozenset(
    {SOURCE_ID_EXTENSION, SOURCE_ID_EXTENSION.replace("https://", "http://", 1)}
)


def _source_id(submission_set: JsonObject) -> str:
    """The SubmissionSet's sourceId: ``valueIdentifier`` (MHD 4.1 and later, 1..1), or the
    ``valueUri`` that MHD 4.0 sources still send."""
    found = [
        e
        for e in submission_set.get("extension", [])
        if isinstance(e, dict) and e.get("url") in SOURCE_ID_URLS
    ]
    where = "List.extension[sourceId]"
    if len(found) != 1:
        raise _fail(
            f"the SubmissionSet needs exactly one sourceId extension ({SOURCE_ID_EXTENSION}); "
            f"it has {len(found)}",
            where,
        )
    extension = found[0]
    identifier = extension.get("valueIdentifier")
    if identifier is not None:
        value = identifier.get("value") if isinstance(identifier, dict) else None
        if not isinstance(value, str) or not value:
            raise _fail("sourceId's valueIdentifier needs a value", f"{where}.valueIdentifier")
        return value
    uri = extension.get("valueUri")
    if isinstance(uri, str) and uri:
        return uri
    raise _fail(
        "sourceId takes valueIdentifier (MHD 4.1 and later) or, from MHD 4.0 sources, valueUri",
        f"{where}.value[x]",
    )


# The author holds the document from the patient: valueBoolean true (until the author releases
# it, or the platform's delay), or valueDateTime (until then).
HELD_EXTENSION = "https://carevault.lu/fhir/StructureDefinition/not-yet-visible-to-patient"
DSG_SIGNS = "signs"

# (value set id, system, code) -> is the code in the affinity domain?
CodeCheck = Callable[[str, str, str], bool]


@dataclass(frozen=True)
class PatientRef:
    """How the submitter named the patient: a Patient id, or the national identifier."""

    patient_id: str | None = None
    system: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class ProvidedDocument:
    """One DocumentReference of the bundle and its bytes, checked but not yet stored."""

    full_url: str
    master_identifier: str
    patient: PatientRef
    class_code: Coding
    type_code: Coding
    format_code: Coding
    practice_setting: Coding
    facility_type: Coding
    confidentiality: Confidentiality
    author_practitioner_id: str | None
    author_organization_id: str | None
    author_patient_id: str | None  # a patient's own upload
    content_type: str
    content: bytes
    declared_size: int | None
    declared_sha1: str | None
    created: datetime | None
    service_start: datetime | None
    service_end: datetime | None
    title: str | None
    description: str | None
    language: str | None
    replaces: str | None  # DocumentReference id of the document this one replaces
    held: bool | datetime  # not yet visible to the patient (until a time, if given)
    events: tuple[Coding, ...]  # context.event
    binary_url: str | None  # the fullUrl of the Binary entry holding the bytes, if any
    signs: str | None  # fullUrl of the DocumentReference this signature signs (IHE DSG)


def authored_document(
    *,
    full_url: str,
    patient_id: str,
    codes: tuple[Coding, Coding, Coding],
    setting: tuple[Coding, Coding],
    confidentiality: Confidentiality,
    content_type: str,
    content: bytes,
    created: datetime,
    title: str,
    practitioner_id: str | None = None,
    patient_author: bool = False,
    signs: str | None = None,
) -> ProvidedDocument:
    """A document CareVault's own pages submit (a patient's upload, a professional's
    publication from the workspace): ``codes`` are its class, type and format, ``setting``
    its practice setting and facility type; authored by the practitioner, or by the patient
    with ``patient_author``; everything an ITI-65 bundle may add beside is absent."""
    class_code, type_code, format_code = codes
    practice_setting, facility_type = setting
    return ProvidedDocument(
        full_url=full_url,
        master_identifier=f"urn:uuid:{uuid.uuid4()}",
        patient=PatientRef(patient_id),
        class_code=class_code,
        type_code=type_code,
        format_code=format_code,
        practice_setting=practice_setting,
        facility_type=facility_type,
        confidentiality=confidentiality,
        author_practitioner_id=practitioner_id,
        author_organization_id=None,
        author_patient_id=patient_id if patient_author else None,
        content_type=content_type,
        content=content,
        declared_size=None,
        declared_sha1=None,
        created=created,
        service_start=None,
        service_end=None,
        title=title,
        description=None,
        language=None,
        replaces=None,
        held=False,
        events=(),
        binary_url=None,
        signs=signs,
    )


@dataclass(frozen=True)
class ProvidedSubmission:
    full_url: str
    master_identifier: str
    source_id: str
    patient: PatientRef
    documents: tuple[ProvidedDocument, ...]
    entry_order: tuple[str, ...]  # every entry's fullUrl, as sent: the response follows it
    # What the SubmissionSet said that CareVault keeps verbatim and returns (ITI-66):
    # designationType, intendedRecipient, source (author, authorOrg), title, note, contained.
    details: JsonObject = field(default_factory=dict)
    # Literal author references of the SubmissionSet, which must name the caller.
    author_claims: tuple[AuthorClaim, ...] = ()


def _fail(message: str, where: str) -> InvalidInput:
    return InvalidInput(message, expression=where)


def _when(value: Any, where: str) -> datetime:
    """A time of the metadata; one without zone, as older MHD clients send, is read as UTC."""
    return date_time(value, where, zone_required=False)


def _coding(concept: Any, where: str, valueset: str, check: CodeCheck) -> Coding:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(codings, list) or not codings:
        raise _fail(f"{where} needs a coding from ValueSet/{valueset}", where)
    for coding in codings:
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(code, str) and check(valueset, system, code):
            return Coding(system, code, coding.get("display"))
    first = codings[0]
    raise _fail(
        f"{where}: {first.get('system')}|{first.get('code')} is not in ValueSet/{valueset} "
        "(see GET /fhir/ValueSet/" + valueset + "/$expand)",
        where,
    )


def patient_reference(reference: Any, where: str) -> PatientRef:
    if not isinstance(reference, dict):
        raise _fail(f"{where} must reference the patient", where)
    text = reference.get("reference")
    if isinstance(text, str) and text:
        ident = text.rstrip("/").rsplit("/", 2)
        if len(ident) >= 2 and ident[-2] == "Patient" and ident[-1]:
            return PatientRef(patient_id=ident[-1])
        raise _fail(f"{where} must be a Patient reference", where)
    identifier = reference.get("identifier")
    if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
        return PatientRef(system=str(identifier["system"]), value=str(identifier["value"]))
    raise _fail(f"{where} needs a reference or the patient's national identifier", where)


def _reference_id(value: Any, kind: str, where: str) -> str | None:
    reference = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(reference, str):
        return None
    parts = reference.rstrip("/").rsplit("/", 2)
    if len(parts) >= 2 and parts[-2] == kind and parts[-1]:
        return str(parts[-1])
    raise _fail(f"{where} must reference a {kind}", where)


def _binary_bytes(resource: JsonObject, where: str) -> tuple[str, bytes]:
    content_type = resource.get("contentType")
    data = resource.get("data")
    if not isinstance(content_type, str) or not content_type:
        raise _fail(f"{where}.contentType is required", f"{where}.contentType")
    if not isinstance(data, str):
        raise _fail(f"{where}.data is required (base64)", f"{where}.data")
    return content_type, _base64(data, f"{where}.data")


def _base64(data: str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(f"{where} is not valid base64", where) from None


def parse_provide_bundle(
    bundle: JsonObject, check: CodeCheck, *, max_entries: int
) -> ProvidedSubmission:
    """Read an ITI-65 transaction Bundle; every problem is an `InvalidInput` naming the
    element. ``check`` tells whether a code belongs to one of the affinity domain's value sets."""
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
        raise _fail("ITI-65 expects a Bundle of type 'transaction'", "Bundle.type")
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise _fail("the Bundle has no entries", "Bundle.entry")
    if len(entries) > max_entries:
        raise _fail(
            f"the Bundle has {len(entries)} entries; the limit is {max_entries}", "Bundle.entry"
        )
    lists: list[tuple[str, JsonObject]] = []
    references: list[tuple[str, JsonObject, str]] = []
    binaries: dict[str, tuple[str, bytes]] = {}
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(full_url, str) or not full_url:
            raise _fail(f"{where} needs a fullUrl and a resource", where)
        if full_url in seen:
            raise _fail(f"{where}.fullUrl {full_url!r} appears twice", f"{where}.fullUrl")
        seen.add(full_url)
        request = entry.get("request")
        if not isinstance(request, dict) or request.get("method") != "POST":
            raise _fail(f"{where}.request.method must be POST", f"{where}.request")
        kind = resource.get("resourceType")
        if kind == "Binary":
            binaries[full_url] = _binary_bytes(resource, f"{where}.resource")
        elif kind == "List" and is_folder(resource):
            raise _fail(FOLDER_REFUSED, f"{where}.resource.code")
        elif kind == "List":
            lists.append((full_url, validate_resource(resource, "List")))
        elif kind == "DocumentReference":
            references.append((full_url, validate_resource(resource, "DocumentReference"), where))
        else:
            raise _fail(
                f"{where}: an ITI-65 bundle holds List, DocumentReference and Binary, not {kind}",
                f"{where}.resource.resourceType",
            )
    if len(lists) != 1:
        raise _fail("the Bundle needs exactly one List (the SubmissionSet)", "Bundle.entry")
    set_url, submission_set = lists[0]
    codes = [c for concept in [submission_set.get("code", {})] for c in concept.get("coding", [])]
    if not any(
        c.get("system") == SUBMISSION_SET_SYSTEM and c.get("code") == "submissionset" for c in codes
    ):
        raise _fail(f"the List must be coded {SUBMISSION_SET_SYSTEM}|submissionset", "List.code")
    if not references:
        raise _fail("the Bundle holds no DocumentReference", "Bundle.entry")
    set_identifier = submission_set_unique_id(submission_set)
    if set_identifier is None:
        raise _fail(
            "List.identifier needs the uniqueId (an identifier with a value)", "List.identifier"
        )
    source = _source_id(submission_set)
    details, claims = walk_submission_set(
        submission_set, {url for url, _resource, _where in references}
    )
    set_patient = patient_reference(submission_set.get("subject"), "List.subject")
    used: set[str] = set()
    documents = []
    for full_url, reference, where in references:
        documents.append(_document(full_url, reference, binaries, used, check, where))
    unused = set(binaries) - used
    if unused:
        raise _fail(
            f"Binary {sorted(unused)[0]} is not referenced by any DocumentReference", "Bundle.entry"
        )
    listed = {str(e.get("item", {}).get("reference")) for e in submission_set.get("entry", [])}
    missing = [d.full_url for d in documents if d.full_url not in listed]
    if missing:
        raise _fail(f"the SubmissionSet does not list {missing[0]}", "List.entry")
    for document in documents:
        if document.patient != set_patient:
            raise _fail(
                "every DocumentReference concerns the SubmissionSet's patient",
                "DocumentReference.subject",
            )
    return ProvidedSubmission(
        set_url,
        set_identifier,
        source,
        set_patient,
        tuple(documents),
        tuple(str(entry["fullUrl"]) for entry in entries),
        details,
        claims,
    )


def _document(
    full_url: str,
    resource: JsonObject,
    binaries: dict[str, tuple[str, bytes]],
    used: set[str],
    check: CodeCheck,
    where: str,
) -> ProvidedDocument:
    here = "DocumentReference"
    master = resource.get("masterIdentifier", {}).get("value")
    if not isinstance(master, str) or not master:
        raise _fail(
            "a DocumentReference needs masterIdentifier.value (the uniqueId)",
            f"{here}.masterIdentifier",
        )
    if resource.get("status") != "current":
        raise _fail("a new DocumentReference has status 'current'", f"{here}.status")
    walk_document_reference(resource, master)
    contents = resource.get("content", [])
    if len(contents) != 1:
        raise _fail("a DocumentReference has exactly one content", f"{here}.content")
    attachment = contents[0].get("attachment", {})
    url, data = attachment.get("url"), attachment.get("data")
    if isinstance(data, str):
        content_type = attachment.get("contentType")
        if not isinstance(content_type, str):
            raise _fail("attachment.contentType is required", f"{here}.content.attachment")
        content = _base64(data, f"{here}.content.attachment.data")
    elif isinstance(url, str) and url in binaries:
        content_type, content = binaries[url]
        used.add(url)
        declared = attachment.get("contentType")
        if declared is not None and declared != content_type:
            raise _fail(
                "attachment.contentType differs from the Binary's",
                f"{here}.content.attachment.contentType",
            )
    else:
        raise _fail(
            "attachment.url must be the fullUrl of a Binary of this Bundle, or give "
            "the bytes in attachment.data",
            f"{here}.content.attachment.url",
        )
    labels = [
        label
        for label in resource.get("securityLabel", [])
        for coding in [label.get("coding", [{}])[0] if label.get("coding") else {}]
        if coding.get("system") == CONFIDENTIALITY_SYSTEM
    ]
    if len(labels) != 1:
        raise _fail(
            f"one securityLabel from {CONFIDENTIALITY_SYSTEM} (N, R or V) is required",
            f"{here}.securityLabel",
        )
    level_code = labels[0]["coding"][0].get("code")
    if level_code not in ("N", "R", "V"):
        raise _fail("the confidentiality is N, R or V", f"{here}.securityLabel")
    context = resource.get("context", {})
    practitioner = organization = patient_author = None
    # MHD's author is 0..*: absent or contained (Comprehensive), the recorded author is the
    # caller; a literal one must name them (checked by the service).
    for index, author in enumerate(resource.get("author", [])):
        reference = author.get("reference") if isinstance(author, dict) else None
        if isinstance(reference, str) and reference.startswith("#"):
            continue  # a contained author: the source's description of the caller
        parts = reference.rstrip("/").rsplit("/", 2) if isinstance(reference, str) else []
        kind = parts[-2] if len(parts) >= 2 else None
        where_author = f"{here}.author[{index}]"
        if kind == "Practitioner" and practitioner is None:
            practitioner = _reference_id(author, "Practitioner", where_author)
        elif kind == "Organization" and organization is None:
            organization = _reference_id(author, "Organization", where_author)
        elif kind == "Patient" and patient_author is None:
            patient_author = _reference_id(author, "Patient", where_author)
        else:
            raise _fail(
                "a literal author is the calling Practitioner, one Organization of theirs, or "
                "the Patient for their own upload (other authors go in contained resources)",
                where_author,
            )
    replaces = signs = None
    for relation in resource.get("relatesTo", []):
        code = relation.get("code")
        target = relation.get("target", {})
        if code == "replaces":
            replaces = _reference_id(target, "DocumentReference", f"{here}.relatesTo.target")
            if replaces is None:
                raise _fail(
                    "relatesTo replaces needs a DocumentReference target", f"{here}.relatesTo"
                )
        elif code == DSG_SIGNS:
            signs = target.get("reference") if isinstance(target, dict) else None
        else:
            raise _fail(
                f"relatesTo {code!r} is not supported (replaces, signs)", f"{here}.relatesTo.code"
            )
    period = context.get("period", {})
    size = attachment.get("size")
    sha1 = attachment.get("hash")
    categories = resource.get("category", [])
    return ProvidedDocument(
        full_url=full_url,
        master_identifier=master,
        patient=patient_reference(resource.get("subject"), f"{here}.subject"),
        class_code=_coding(
            categories[0] if categories else None, f"{here}.category", "xds-classcode", check
        ),
        type_code=_coding(resource.get("type"), f"{here}.type", "xds-typecode", check),
        format_code=_coding(
            {"coding": [contents[0].get("format")]} if contents[0].get("format") else None,
            f"{here}.content.format",
            "xds-formatcode",
            check,
        ),
        practice_setting=_coding(
            context.get("practiceSetting"),
            f"{here}.context.practiceSetting",
            "xds-practicesettingcode",
            check,
        ),
        facility_type=_coding(
            context.get("facilityType"),
            f"{here}.context.facilityType",
            "xds-healthcarefacilitytypecode",
            check,
        ),
        confidentiality=Confidentiality(level_code),
        author_practitioner_id=practitioner,
        author_organization_id=organization,
        author_patient_id=patient_author,
        content_type=content_type,
        content=content,
        declared_size=size if isinstance(size, int) else None,
        declared_sha1=sha1 if isinstance(sha1, str) else None,
        created=_when(attachment["creation"], f"{here}.content.attachment.creation")
        if "creation" in attachment
        else None,
        service_start=_when(period["start"], f"{here}.context.period.start")
        if "start" in period
        else None,
        service_end=_when(period["end"], f"{here}.context.period.end") if "end" in period else None,
        title=attachment.get("title"),
        description=resource.get("description"),
        language=attachment.get("language"),
        replaces=replaces,
        signs=signs,
        held=_held(resource, f"{here}.extension"),
        events=tuple(
            Coding(str(c["system"]), str(c["code"]), c.get("display"))
            for concept in context.get("event", [])
            for c in concept.get("coding", [])
            if isinstance(c.get("system"), str) and isinstance(c.get("code"), str)
        ),
        binary_url=url if isinstance(url, str) and url in binaries and data is None else None,
    )


def _held(resource: JsonObject, where: str) -> bool | datetime:
    for extension in resource.get("extension", []):
        if extension.get("url") != HELD_EXTENSION:
            continue
        if isinstance(extension.get("valueBoolean"), bool):
            return bool(extension["valueBoolean"])
        if "valueDateTime" in extension:
            return _when(extension["valueDateTime"], where)
        raise _fail(f"{HELD_EXTENSION} takes valueBoolean or valueDateTime", where)
    return False


def new_id() -> str:
    return uuid.uuid4().hex


# --- what ITI-66/67 return -------------------------------------------------------------------


def _concept(coding: Coding) -> JsonObject:
    entry: JsonObject = {"system": coding.system, "code": coding.code}
    if coding.display:
        entry["display"] = coding.display
    return {"coding": [entry]}


def document_reference(metadata: DocumentMetadata, base_url: str) -> JsonObject:
    """The DocumentReference (MHD Comprehensive Metadata) of a stored document; its content is
    served by ``Binary/[id]`` (ITI-68)."""
    base = base_url.rstrip("/")
    attachment: JsonObject = {
        "contentType": metadata.content_type,
        "url": f"{base}/Binary/{metadata.id}",
        "size": metadata.size,
    }
    if metadata.sha1:
        attachment["hash"] = metadata.sha1
    if metadata.title:
        attachment["title"] = metadata.title
    if metadata.language:
        attachment["language"] = metadata.language
    if metadata.created:
        attachment["creation"] = rfc3339_ms(metadata.created)
    context: JsonObject = {
        "practiceSetting": _concept(metadata.practice_setting),
        "facilityType": _concept(metadata.facility_type),
    }
    if metadata.events:
        context["event"] = [_concept(event) for event in metadata.events]
    if metadata.service_start or metadata.service_end:
        context["period"] = {
            **({"start": rfc3339_ms(metadata.service_start)} if metadata.service_start else {}),
            **({"end": rfc3339_ms(metadata.service_end)} if metadata.service_end else {}),
        }
    authors: list[JsonObject] = []
    if metadata.patient_authored:
        authors.append({"reference": f"Patient/{metadata.patient_id}"})
    else:
        authors.append({"reference": f"Practitioner/{metadata.author_id}"})
        if metadata.author_organization_id:
            authors.append({"reference": f"Organization/{metadata.author_organization_id}"})
    resource: JsonObject = {
        "resourceType": "DocumentReference",
        "id": metadata.id,
        "meta": {"versionId": "1", "lastUpdated": rfc3339_ms(metadata.indexed)},
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": metadata.master_identifier},
        "status": metadata.status.value,
        "type": _concept(metadata.type_code),
        "category": [_concept(metadata.class_code)],
        "subject": {"reference": f"Patient/{metadata.patient_id}"},
        "date": rfc3339_ms(metadata.indexed),
        "author": authors,
        "securityLabel": [
            {"coding": [{"system": CONFIDENTIALITY_SYSTEM, "code": metadata.confidentiality.value}]}
        ],
        "content": [
            {
                "attachment": attachment,
                "format": {
                    "system": metadata.format_code.system,
                    "code": metadata.format_code.code,
                },
            }
        ],
        "context": context,
    }
    if metadata.description:
        resource["description"] = metadata.description
    if metadata.release_at is not None:
        resource["extension"] = [
            {"url": HELD_EXTENSION, "valueDateTime": rfc3339_ms(metadata.release_at)}
        ]
    relations = [
        {"code": code, "target": {"reference": f"DocumentReference/{target}"}}
        for code, target in (("replaces", metadata.replaces), (DSG_SIGNS, metadata.signs))
        if target
    ]
    if relations:
        resource["relatesTo"] = relations
    return resource


def submission_set_list(row: JsonObject, visible_ids: list[str], base_url: str) -> JsonObject:
    """A SubmissionSet as the List ITI-66 returns, listing only the documents the reader may
    see (a hidden document's existence is not revealed)."""
    base = base_url.rstrip("/")
    details: JsonObject = row.get("details") or {}
    listed: JsonObject = {
        "resourceType": "List",
        "id": row["id"],
        "meta": {"versionId": "1", "lastUpdated": rfc3339_ms(row["submitted_at"])},
        **({"contained": details["contained"]} if details.get("contained") else {}),
        "extension": [
            {"url": SOURCE_ID_EXTENSION, "valueIdentifier": {"value": row["source_id"]}},
            *details.get("extension", []),
        ],
        "identifier": [
            {"use": "official", "system": "urn:ietf:rfc:3986", "value": row["master_identifier"]}
        ],
        "status": "current",
        "mode": "working",
        "code": {"coding": [{"system": SUBMISSION_SET_SYSTEM, "code": "submissionset"}]},
        "subject": {"reference": f"Patient/{row['patient_id']}"},
        "date": rfc3339_ms(row["submitted_at"]),
    }
    if visible_ids:  # FHIR JSON has no empty array: a List none of whose entries the reader sees
        listed["entry"] = [
            {"item": {"reference": f"{base}/DocumentReference/{i}"}} for i in visible_ids
        ]
    for name in ("title", "source", "note"):
        if name in details:
            listed[name] = details[name]
    return listed
