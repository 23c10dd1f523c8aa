"""Shared clinical documents: their metadata (IHE XDS / MHD "Comprehensive Metadata"), their
lifecycle, and the checks made on their bytes before anything is stored.

Nothing is ever overwritten: a correction is a new document that *replaces* the old one, which
becomes ``superseded`` (or ``entered-in-error``) and stays readable to whoever could read it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from carevault.domain.authorization import Confidentiality, DocumentFacts, DocumentFilter
from carevault.domain.errors import InvalidInput, UnsupportedMediaType

DEFAULT_MAX_DOCUMENT_BYTES = 20 * 1024 * 1024

# What may be shared, and what never (active content a browser would run).
DEFAULT_CONTENT_TYPES = frozenset(
    {
        "application/pdf",
        "application/dicom",
        "application/fhir+json",
        "application/fhir+xml",
        "application/hl7-v3+xml",  # CDA
        "text/xml",
        "application/xml",
        "text/plain",
        "image/jpeg",
        "image/png",
        "application/jose",  # an author's detached JWS signature (IHE DSG)
    }
)


class DocumentStatus(StrEnum):
    CURRENT = "current"
    SUPERSEDED = "superseded"
    ENTERED_IN_ERROR = "entered-in-error"


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str | None = None


@dataclass(frozen=True)
class DocumentMetadata:
    """One document as the registry knows it. ``title`` and ``description`` are free text and
    are stored encrypted; everything else is needed by searches and stays queryable."""

    id: str
    patient_id: str
    master_identifier: str  # the XDS uniqueId, e.g. urn:oid:1.2.3 or urn:uuid:…
    status: DocumentStatus
    class_code: Coding
    type_code: Coding
    format_code: Coding
    practice_setting: Coding
    facility_type: Coding
    confidentiality: Confidentiality
    engine_class: str  # the authorization engine's class, derived from class and type codes
    author_id: str  # Practitioner id (or the patient's id for a patient upload)
    author_organization_id: str
    content_type: str
    size: int
    sha256: str  # hex, CareVault's own integrity check, verified on every retrieval
    sha1: str | None  # base64, as FHIR's Attachment.hash, when the submitter gave one
    indexed: datetime  # when the registry took it (DocumentReference.date)
    created: datetime | None = None  # Attachment.creation
    service_start: datetime | None = None
    service_end: datetime | None = None
    title: str | None = None
    description: str | None = None
    language: str | None = None
    events: tuple[Coding, ...] = ()  # context.event: the acts documented
    replaces: str | None = None
    signs: str | None = None  # the document this one is the author's signature of (IHE DSG)
    submission_set_id: str | None = None
    patient_authored: bool = False
    not_yet_visible_to_patient: bool = False
    release_at: datetime | None = None  # when a held document becomes visible to the patient
    hidden: bool = False

    def facts(self) -> DocumentFacts:
        """What the authorization engine decides on."""
        return DocumentFacts(
            id=self.id,
            author_id=self.author_id,
            author_organization_id=self.author_organization_id,
            class_code=self.engine_class,
            type_code=self.type_code.code,
            confidentiality=self.confidentiality,
            hidden=self.hidden,
            not_yet_visible_to_patient=self.not_yet_visible_to_patient,
            held_until=self.release_at if self.not_yet_visible_to_patient else None,
        )


@dataclass(frozen=True)
class DocumentCriteria:
    """ITI-67 search criteria, each a list of alternatives (OR) combined with AND."""

    status: list[tuple[str, ...]] = field(default_factory=list)
    category: list[tuple[str, ...]] = field(default_factory=list)  # system|code or code
    type: list[tuple[str, ...]] = field(default_factory=list)
    setting: list[tuple[str, ...]] = field(default_factory=list)
    facility: list[tuple[str, ...]] = field(default_factory=list)
    format: list[tuple[str, ...]] = field(default_factory=list)
    event: list[tuple[str, ...]] = field(default_factory=list)
    security_label: list[tuple[str, ...]] = field(default_factory=list)
    related: list[tuple[str, ...]] = field(default_factory=list)  # DocumentReference ids
    date: list[tuple[str, datetime, datetime]] = field(default_factory=list)  # prefix, lo, hi
    period: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    author: list[tuple[str, ...]] = field(default_factory=list)  # practitioner ids
    # Documents another subject may see too (the engine's filter for them), where one subject's
    # search must show only what a second may read: the patient's "what would Dr X see?".
    also_visible_to: DocumentFilter | None = None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- what the bytes really are ---------------------------------------------------------------

_EXECUTABLES = (b"MZ", b"\x7fELF", b"\xca\xfe\xba\xbe", b"\xcf\xfa\xed\xfe", b"#!")
# Active content in markup, anywhere in the document (a reader's browser or viewer may render
# the whole of it): an element that runs or embeds something, whatever namespace prefix names
# it (``<h:script xmlns:h="http://www.w3.org/1999/xhtml">`` runs in a browser), an event
# handler attribute, a script URL, an XSLT stylesheet (it can write any HTML), and a DTD (its
# entities can build markup the scan does not see, and expand without end in a parser).
_ACTIVE_MARKUP = re.compile(
    rb"<\s*(?:[a-z0-9_.\-]+:)?(?:html|svg|script|iframe|object|embed|frameset|applet)"
    rb"(?![a-z0-9_.:\-])"
    rb"|<[a-z0-9_.:\-]+\s[^<>]*?\bon[a-z]+\s*="
    rb"|<\?xml-stylesheet|<!doctype|<!entity|javascript:|vbscript:"
)
_JSON_ESCAPE = re.compile(rb"\\u([0-9a-fA-F]{4})")
# The names of the PDF actions that run something: JavaScript (an action's /S, or the document's
# JavaScript name tree) and Launch (an application or a file). A PDF name (PDF 32000-1 §7.3.5)
# starts at "/" and may write any of its characters #xx; it ends at the first character that is
# neither a regular character nor such an escape. Names hidden in a compressed object stream are
# not seen: the plain forms are refused, and every document is served as an attachment.
_PDF_ACTIONS = ("JavaScript", "Launch")
_PDF_NAME_GOES_ON = r"(?:[^\x00\t\n\x0c\r /<>\[\](){}%#]|#[0-9A-Fa-f]{2})"


def _pdf_spelling(name: str) -> str:
    """A pattern for every way of writing ``name``: each character as itself or as #xx."""
    return "".join(
        f"(?:{re.escape(character)}|#"
        + "".join(
            digit if digit.isdigit() else f"[{digit.upper()}{digit}]"
            for digit in f"{ord(character):02x}"
        )
        + ")"
        for character in name
    )


# One scan of the bytes in the regular expression engine, whatever they hold: decoding every
# name first cost seconds on a crafted file of one 15 MB name written #41#41#41...
_PDF_ACTION = re.compile(
    (
        "/(?:"
        + "|".join(_pdf_spelling(name) for name in _PDF_ACTIONS)
        + f")(?!{_PDF_NAME_GOES_ON})"
    ).encode("ascii")
)


def _looks_like(content_type: str, data: bytes) -> bool:
    head = data[:1024]
    if content_type == "application/pdf":
        return data.startswith(b"%PDF-")
    if content_type == "image/png":
        return data.startswith(b"\x89PNG\r\n\x1a\n")
    if content_type == "image/jpeg":
        return data.startswith(b"\xff\xd8\xff")
    if content_type == "application/dicom":
        return len(data) > 132 and data[128:132] == b"DICM"
    if content_type in ("application/fhir+json",):
        return head.lstrip().startswith(b"{")
    if content_type in (
        "application/fhir+xml",
        "application/hl7-v3+xml",
        "text/xml",
        "application/xml",
    ):
        return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")
    if content_type == "application/jose":
        segments = data.split(b".")
        return len(segments) == 3 and all(
            not segment.strip(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
            for segment in segments
        )
    if content_type == "text/plain":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return b"\x00" not in data
    return False


def check_content(
    content_type: str,
    data: bytes,
    *,
    allowed: frozenset[str] = DEFAULT_CONTENT_TYPES,
    max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    where: str = "Binary",
) -> None:
    """Refuse a document whose declared type is not allowed, whose bytes are not of that type
    (magic numbers), which is active content (HTML, script, executables) or which is too big."""
    declared = content_type.split(";")[0].strip().lower()
    if declared not in allowed:
        raise UnsupportedMediaType(
            f"{where}: content type {declared or 'none'!r} is not accepted; accepted: "
            + ", ".join(sorted(allowed))
        )
    if len(data) > max_bytes:
        raise InvalidInput(
            f"{where}: the document is {len(data)} bytes; the limit is {max_bytes}",
            expression=where,
        )
    if not data:
        raise InvalidInput(f"{where}: the document is empty", expression=where)
    if data.startswith(_EXECUTABLES):
        raise UnsupportedMediaType(f"{where}: executable content is never accepted")
    if not _looks_like(declared, data):
        raise UnsupportedMediaType(
            f"{where}: the bytes are not {declared} (their signature does not match the "
            "declared content type)"
        )
    if declared.endswith("xml") or declared in ("text/plain", "application/fhir+json"):
        text = data
        if declared == "application/fhir+json":  # "<" may be written \u003c in a string
            text = _JSON_ESCAPE.sub(_json_character, data)
        if _ACTIVE_MARKUP.search(text.lower()):
            raise UnsupportedMediaType(
                f"{where}: active content (HTML, SVG, script, stylesheet, DTD) is refused"
            )
    if declared == "application/pdf" and _pdf_action(data):
        raise UnsupportedMediaType(
            f"{where}: a PDF that runs something (JavaScript, a launch action) is refused"
        )


def _json_character(escape: re.Match[bytes]) -> bytes:
    return chr(int(escape.group(1), 16)).encode("utf-8", "replace")


def _pdf_action(data: bytes) -> bool:
    """Whether the PDF names an action that runs something, however the name is spelt."""
    return _PDF_ACTION.search(data) is not None
