"""The MHD 4.2 Comprehensive Metadata profiles, element by element: what CareVault keeps, what
it accepts and why, and what it refuses with the element named (``OperationOutcome.issue
.expression``), so that a Document Source written from the IHE texts learns exactly where it
and CareVault part ways.

SubmissionSet (``IHE.MHD.Comprehensive.SubmissionSet`` and its UnContained parent), a ``List``:

===========================  =================================================================
element                      CareVault
===========================  =================================================================
extension[sourceId]          required; ``valueIdentifier`` (MHD 4.1+) or ``valueUri`` (4.0)
extension[designationType]   0..1, a coded ``valueCodeableConcept``: kept and returned (ITI-66)
extension[intendedRecipient] kept and returned, with the contained resource it names
source (author)              contained (Comprehensive) or a reference (UnContained): kept and
                             returned; a reference must name the caller (their Practitioner,
                             one of their Organizations, or the patient for their own upload)
source.extension[authorOrg]  a contained or referenced Organization: kept, same rule
title, note (0..1)           kept and returned
identifier                   the ``uniqueId`` (typed ``uniqueId``, else ``official``, else the
                             first); ``entryUUID`` is the server's id here
status, mode                 ``current`` and ``working`` only (fixed by the profile)
date                         required (1..1); the answer says when CareVault received it
subject                      required: the patient
entry.item                   each a DocumentReference of the Bundle; a Folder is refused
encounter, orderedBy,        refused: 0..0 in the profile
emptyReason, entry.flag,
entry.deleted, entry.date
modifierExtension            refused (0..0; a modifier CareVault does not know changes meaning)
contained                    each must be referenced (FHIR dom-3), of an author or recipient
                             type
===========================  =================================================================

Folders (a ``List`` coded ``folder``) are refused: CareVault keeps no folders.

DocumentReference (``IHE.MHD.Comprehensive.DocumentReference``): the elements `mhd` already
reads (masterIdentifier, status, type, category, subject, securityLabel, content, context
codes, period, event, relatesTo replaces/signs) plus:

===========================  =================================================================
author                       a reference to the caller (as before) or contained
                             (Comprehensive): the recorded author is always the authenticated
                             caller; a contained author is the source's description of them
context.sourcePatientInfo    a contained Patient or a Patient reference: accepted, not kept
                             (the patient index, not the source's copy, is the reference)
identifier                   a ``uniqueId``-typed identifier must equal masterIdentifier
category                     1..1 (more than one is refused)
authenticator                refused: a document is vouched for by its author's IHE DSG
                             signature (``relatesTo`` ``signs``), not by a reference
context.related,             refused: CareVault keeps no referenceIdList, so accepting them
context.encounter            would silently lose what the source said
custodian                    refused: not part of MHD metadata
docStatus, modifierExtension refused: 0..0 in the profile
contained                    each must be referenced, of a Patient or author type
===========================  =================================================================

Narrative (``text``) is not kept: CareVault generates the resources it serves. Extensions
CareVault does not know are not kept either (FHIR lets a receiver ignore a non-modifier
extension); the CapabilityStatement says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from carevault.domain.errors import InvalidInput

JsonObject = dict[str, Any]

MHD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
DESIGNATION_TYPE = MHD + "ihe-designationType"
INTENDED_RECIPIENT = MHD + "ihe-intendedRecipient"
AUTHOR_ORG = MHD + "ihe-authorOrg"
IDENTIFIER_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDIdentifierType"
LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"

AUTHOR_TYPES = frozenset(
    {"Practitioner", "PractitionerRole", "Organization", "Device", "Patient", "RelatedPerson"}
)
RECIPIENT_TYPES = frozenset(
    {
        "Practitioner",
        "Organization",
        "Patient",
        "RelatedPerson",
        "Group",
        "Device",
        "Location",
        "PractitionerRole",
    }
)
# A literal (uncontained) author of a SubmissionSet must be the caller: these are the kinds
# CareVault can check against the token.
CHECKABLE_AUTHORS = frozenset({"Practitioner", "Organization", "Patient"})


def both_urls(url: str) -> frozenset[str]:
    """MHD 4.0 published its canonical URLs with http://; the IG has used https:// since."""
    return frozenset({url, url.replace("https://", "http://", 1)})


def _fail(message: str, where: str) -> InvalidInput:
    return InvalidInput(message, expression=where)


def is_folder(resource: JsonObject) -> bool:
    codings = (resource.get("code") or {}).get("coding") or []
    return any(
        isinstance(c, dict) and c.get("system") == LIST_TYPES and c.get("code") == "folder"
        for c in codings
    )


FOLDER_REFUSED = (
    "Folders (an MHD List coded folder) are not supported: CareVault keeps no folders. "
    "Send the documents without the Folder"
)


@dataclass(frozen=True)
class Contained:
    """A resource's contained resources, by id, and which of them something referenced."""

    by_id: dict[str, JsonObject]
    where: str

    @classmethod
    def of(cls, resource: JsonObject, where: str) -> Contained:
        by_id: dict[str, JsonObject] = {}
        for index, inner in enumerate(resource.get("contained") or []):
            here = f"{where}.contained[{index}]"
            ident = inner.get("id") if isinstance(inner, dict) else None
            if not isinstance(ident, str) or not ident:
                raise _fail("a contained resource needs an id", here)
            if ident in by_id:
                raise _fail(f"two contained resources have the id {ident!r}", here)
            by_id[ident] = inner
        return cls(by_id, where)

    def resolve(self, reference: Any, kinds: Iterable[str], where: str) -> tuple[str, str, bool]:
        """(kind, id, contained?) of a Reference to one of ``kinds``."""
        allowed = frozenset(kinds)
        text = reference.get("reference") if isinstance(reference, dict) else None
        if not isinstance(text, str) or not text:
            raise _fail(
                f"{where} must be a reference (reference) to {' or '.join(sorted(allowed))}",
                where,
            )
        if text.startswith("#"):
            inner = self.by_id.get(text[1:])
            if inner is None:
                raise _fail(f"{where}: no contained resource has the id {text[1:]!r}", where)
            kind = str(inner.get("resourceType"))
            if kind not in allowed:
                raise _fail(f"{where}: a contained {kind} is not allowed here", where)
            return kind, text[1:], True
        parts = text.rstrip("/").rsplit("/", 2)
        if len(parts) < 2 or parts[-2] not in allowed or not parts[-1]:
            raise _fail(f"{where} must reference {' or '.join(sorted(allowed))}", where)
        return parts[-2], parts[-1], False

    def all_referenced(self, used: set[str]) -> None:
        """FHIR dom-3: a contained resource is referenced from the resource holding it."""
        for index, ident in enumerate(self.by_id):
            if ident not in used:
                raise _fail(
                    f"contained resource {ident!r} is not referenced (FHIR dom-3)",
                    f"{self.where}.contained[{index}]",
                )


def _refuse_present(resource: JsonObject, elements: dict[str, str], where: str) -> None:
    for name, reason in elements.items():
        if resource.get(name) not in (None, [], {}):
            raise _fail(f"{where}.{name} is not supported: {reason}", f"{where}.{name}")


def _no_modifier_extension(resource: JsonObject, where: str) -> None:
    if resource.get("modifierExtension"):
        raise _fail(
            f"{where}.modifierExtension is not allowed (0..0 in MHD): a modifier CareVault "
            "does not know would change what the resource means",
            f"{where}.modifierExtension",
        )


def _extensions(resource: JsonObject, url: str) -> list[tuple[int, JsonObject]]:
    urls = both_urls(url)
    return [
        (index, e)
        for index, e in enumerate(resource.get("extension") or [])
        if isinstance(e, dict) and e.get("url") in urls
    ]


def _coded(concept: Any) -> bool:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return isinstance(codings, list) and any(
        isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)
        for c in codings
    )


def submission_set_unique_id(resource: JsonObject) -> str | None:
    """The SubmissionSet's (or DocumentReference's) ``uniqueId``: the identifier typed
    ``uniqueId`` (MHD 4.2), else the ``official`` one, else the first with a value."""
    identifiers = [i for i in resource.get("identifier") or [] if isinstance(i, dict)]

    def typed(identifier: JsonObject, code: str) -> bool:
        codings = (identifier.get("type") or {}).get("coding") or []
        return any(c.get("system") == IDENTIFIER_TYPES and c.get("code") == code for c in codings)

    def rank(identifier: JsonObject) -> int:
        if typed(identifier, "uniqueId"):
            return 0
        if typed(identifier, "entryUUID"):
            return 3
        return 1 if identifier.get("use") == "official" else 2

    ranked = sorted(
        (rank(i), n, i["value"])
        for n, i in enumerate(identifiers)
        if isinstance(i.get("value"), str) and i["value"]
    )
    if ranked and ranked[0][0] < 3:
        return str(ranked[0][2])
    return None


@dataclass(frozen=True)
class AuthorClaim:
    """A literal (uncontained) author reference the service checks against the caller."""

    kind: str
    id: str
    where: str


def walk_submission_set(
    resource: JsonObject, bundle_documents: set[str]
) -> tuple[JsonObject, tuple[AuthorClaim, ...]]:
    """Check the SubmissionSet's MHD 4.2 elements (see the module's table); return what is kept
    (descriptive elements, returned verbatim by ITI-66) and the literal authors to check."""
    where = "List"
    _no_modifier_extension(resource, where)
    if resource.get("status") != "current":
        raise _fail("a SubmissionSet's status is 'current'", f"{where}.status")
    if resource.get("mode") != "working":
        raise _fail("a SubmissionSet's mode is 'working'", f"{where}.mode")
    if not isinstance(resource.get("date"), str):
        raise _fail("a SubmissionSet needs its date (submissionTime, 1..1)", f"{where}.date")
    _refuse_present(
        resource,
        {
            "encounter": "0..0 in the MHD SubmissionSet",
            "orderedBy": "0..0 in the MHD SubmissionSet",
            "emptyReason": "0..0 in the MHD SubmissionSet",
        },
        where,
    )
    for index, entry in enumerate(resource.get("entry") or []):
        here = f"{where}.entry[{index}]"
        _refuse_present(
            entry,
            {"flag": "0..0 in MHD", "deleted": "0..0 in MHD", "date": "0..0 in MHD"},
            here,
        )
        target = (entry.get("item") or {}).get("reference")
        if target not in bundle_documents:
            raise _fail(
                f"{here}.item must be the fullUrl of a DocumentReference of this Bundle "
                "(CareVault keeps no folders)",
                f"{here}.item",
            )
    contained = Contained.of(resource, where)
    used: set[str] = set()
    kept: JsonObject = {}
    extensions: list[JsonObject] = []
    designations = _extensions(resource, DESIGNATION_TYPE)
    if len(designations) > 1:
        raise _fail(
            "a SubmissionSet has at most one designationType (contentTypeCode)",
            f"{where}.extension[designationType]",
        )
    for _index, extension in designations:
        if not _coded(extension.get("valueCodeableConcept")):
            raise _fail(
                "designationType needs a valueCodeableConcept with a coding (system and code)",
                f"{where}.extension[designationType].valueCodeableConcept",
            )
        extensions.append(extension)
    for _index, extension in _extensions(resource, INTENDED_RECIPIENT):
        here = f"{where}.extension[intendedRecipient].valueReference"
        _kind, ident, inside = contained.resolve(
            extension.get("valueReference"), RECIPIENT_TYPES, here
        )
        if inside:
            used.add(ident)
        extensions.append(extension)
    if extensions:
        kept["extension"] = extensions
    claims: list[AuthorClaim] = []
    source = resource.get("source")
    if source is not None:
        kind, ident, inside = contained.resolve(source, AUTHOR_TYPES, f"{where}.source")
        if inside:
            used.add(ident)
        elif kind in CHECKABLE_AUTHORS:
            claims.append(AuthorClaim(kind, ident, f"{where}.source"))
        else:
            raise _fail(
                f"a {kind} author is given as a contained resource: CareVault cannot check a "
                f"reference to a {kind} against the caller",
                f"{where}.source",
            )
        for _index, extension in _extensions(source, AUTHOR_ORG):
            here = f"{where}.source.extension[authorOrg].valueReference"
            _kind, org, inside = contained.resolve(
                extension.get("valueReference"), {"Organization"}, here
            )
            if inside:
                used.add(org)
            else:
                claims.append(AuthorClaim("Organization", org, here))
        kept["source"] = source
    notes = resource.get("note") or []
    if len(notes) > 1:
        raise _fail("a SubmissionSet has at most one note (comments)", f"{where}.note")
    if notes:
        kept["note"] = notes
    if isinstance(resource.get("title"), str):
        kept["title"] = resource["title"]
    contained.all_referenced(used)
    if contained.by_id:
        kept["contained"] = list(contained.by_id.values())
    return kept, tuple(claims)


def walk_document_reference(resource: JsonObject, master_identifier: str) -> None:
    """Check the DocumentReference's MHD 4.2 elements that `mhd` does not read itself (see the
    module's table)."""
    where = "DocumentReference"
    _no_modifier_extension(resource, where)
    _refuse_present(
        resource,
        {
            "docStatus": "0..0 in MHD",
            "custodian": "not part of MHD document metadata",
            "authenticator": (
                "the legal authenticator is not kept; a document is vouched for by its "
                "author's IHE DSG signature (a DocumentReference whose relatesTo 'signs' it)"
            ),
        },
        where,
    )
    context = resource.get("context") or {}
    _refuse_present(
        context,
        {
            "related": (
                "CareVault keeps no referenceIdList, so accepting it would lose what the "
                "source said; send the document without context.related"
            ),
            "encounter": (
                "CareVault keeps no referenceIdList; send the document without context.encounter"
            ),
        },
        f"{where}.context",
    )
    categories = resource.get("category") or []
    if len(categories) > 1:
        raise _fail("MHD allows one category (classCode)", f"{where}.category")
    for index, identifier in enumerate(resource.get("identifier") or []):
        codings = ((identifier or {}).get("type") or {}).get("coding") or []
        typed = any(
            c.get("system") == IDENTIFIER_TYPES and c.get("code") == "uniqueId" for c in codings
        )
        if typed and identifier.get("value") != master_identifier:
            raise _fail(
                "the uniqueId identifier must equal masterIdentifier",
                f"{where}.identifier[{index}]",
            )
    contained = Contained.of(resource, where)
    used: set[str] = set()
    for index, author in enumerate(resource.get("author") or []):
        reference = author.get("reference") if isinstance(author, dict) else None
        if isinstance(reference, str) and reference.startswith("#"):
            _kind, ident, _inside = contained.resolve(
                author, AUTHOR_TYPES, f"{where}.author[{index}]"
            )
            used.add(ident)
    source_patient = context.get("sourcePatientInfo")
    if source_patient is not None:
        _kind, ident, inside = contained.resolve(
            source_patient, {"Patient"}, f"{where}.context.sourcePatientInfo"
        )
        if inside:
            used.add(ident)
    contained.all_referenced(used)
