"""FHIR's two wire formats at the door's edge: JSON, which every handler speaks, and XML
(``application/fhir+xml``), converted here in both directions so that every interaction — a
handler written today or tomorrow — takes and gives XML without knowing it exists.

Which format an answer takes is negotiated as FHIR R4 says (http.html#mime-type): the
``_format`` parameter first, then the ``Accept`` header; JSON when neither asks for XML. What a
write answers follows ``Prefer: return=minimal | representation | OperationOutcome``.

XML from the outside is hostile until proven otherwise: it is read first by `defusedxml`, which
refuses any DTD, entity declaration or external reference (no billion laughs, no XXE, no network
access), its element depth is bounded like JSON's, and only then is it mapped to FHIR JSON by the
R4 models of `fhir.resources` (``model_validate_xml`` with an lxml parser that resolves nothing).
The mapping follows the FHIR XML rules (value attributes, ``id``/``url`` attributes, primitive
extensions, ``<resource>`` wrappers, XHTML narrative); it is the same library, and the same
models, that validate the JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import fromstring as safe_fromstring
from fhir.resources.R4B import get_fhir_model_class
from lxml import etree
from pydantic import ValidationError

from carevault.domain.errors import InvalidInput, TooLarge

JsonObject = dict[str, Any]
LOG = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
FHIR_NS = "http://hl7.org/fhir"
XML_TYPES = frozenset({FHIR_XML, "application/xml", "text/xml"})
JSON_TYPES = frozenset({FHIR_JSON, "application/json", "text/json"})
FORMAT_VALUES = {
    "json": "json",
    "xml": "xml",
    **{t: "json" for t in JSON_TYPES},
    **{t: "xml" for t in XML_TYPES},
}


def media_type(header: str) -> str:
    return header.split(";")[0].strip().lower()


def format_param(params: tuple[tuple[str, str], ...]) -> str | None:
    """``_format``'s value as json or xml; None when absent or not a format served here."""
    for name, value in params:
        if name == "_format":
            return FORMAT_VALUES.get(media_type(value.replace(" ", "+")))
    return None


def negotiate(params: tuple[tuple[str, str], ...], accept: str) -> str:
    """The answer's format, json or xml: ``_format``, then the first ``Accept`` type served
    here (by quality), JSON otherwise."""
    chosen = format_param(params)
    if chosen is not None:
        return chosen
    ranked: list[tuple[float, int, str]] = []
    kinds = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if "text/html" in kinds and FHIR_XML not in kinds:
        # A browser (text/html first, then generic application/xml): it shows JSON readably,
        # and a person who follows the portal's link to /fhir/metadata expects to read it.
        return "json"
    for index, (kind, quality) in enumerate(accepted(accept)):
        served = FORMAT_VALUES.get(kind)
        if served is not None and quality > 0:
            ranked.append((-quality, index, served))
    return min(ranked)[2] if ranked else "json"


def accepted(accept: str) -> list[tuple[str, float]]:
    """An ``Accept`` header's media types (lower case) with their quality, in its order; a
    quality that is not a number counts as 0 (not accepted)."""
    types = []
    for part in accept.split(","):
        kind, *options = (p.strip() for p in part.split(";"))
        quality = 1.0
        for option in options:
            if option.startswith("q="):
                try:
                    quality = float(option[2:])
                except ValueError:
                    quality = 0.0
        types.append((kind.lower(), quality))
    return types


def _depth(element: Element, limit: int) -> None:
    stack = [(element, 1)]
    while stack:
        node, level = stack.pop()
        if level > limit:
            raise TooLarge(f"the XML body is nested deeper than {limit} levels")
        stack.extend((child, level + 1) for child in node)


_PARSER_OPTIONS: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
}


def xml_to_json(body: bytes, *, max_depth: int) -> bytes:
    """A FHIR XML resource as FHIR JSON bytes; `InvalidInput` or `TooLarge` when it is not
    one, or not one CareVault will read."""
    try:
        root = safe_fromstring(body, forbid_dtd=True, forbid_entities=True)
    except DefusedXmlException:
        raise InvalidInput("the XML body declares a DTD or entities, which are refused") from None
    except ParseError as error:
        raise InvalidInput(f"the request body is not well-formed XML: {error}") from None
    # The XML tree is two levels deeper than the JSON one (the value attributes, <resource>).
    _depth(root, max_depth * 2)
    namespace, _, kind = root.tag.rpartition("}")
    if namespace != "{" + FHIR_NS:
        raise InvalidInput(f"the XML root element must be a FHIR resource in {FHIR_NS}")
    try:
        model = get_fhir_model_class(kind)
    except (KeyError, ValueError, AttributeError):
        raise InvalidInput(f"{kind} is not a FHIR resource type") from None
    try:
        parsed = model.model_validate_xml(body, xmlparser=etree.XMLParser(**_PARSER_OPTIONS))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidInput(
            f"{kind} (XML) is not valid FHIR: {first.get('msg')}", expression=f"{kind}.{where}"
        ) from None
    except (ValueError, TypeError, KeyError, AttributeError, etree.LxmlError) as error:
        raise InvalidInput(f"{kind} (XML) cannot be read as FHIR: {error}") from None
    value = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def json_to_xml(body: JsonObject) -> bytes | None:
    """A FHIR JSON resource as FHIR XML bytes; None if the models cannot represent it (the
    caller then answers in JSON rather than lose an answer already decided)."""
    kind = body.get("resourceType")
    try:
        model = get_fhir_model_class(str(kind))
        xml = model.model_validate(body).model_dump_xml(xml_declaration=True)
    except Exception:  # a response that the R4 models refuse is a bug, reported, not hidden
        LOG.exception("the %s answer could not be expressed in XML; it is sent as JSON", kind)
        return None
    return xml if isinstance(xml, bytes) else str(xml).encode("utf-8")


@dataclass
class BundleStream:
    """A collection ``Bundle`` written entry by entry as ``entries`` yields them (the export
    of a record), in JSON or in XML: either way the server holds one entry at a time, and the
    answer starts before the last entry is read."""

    entries: Iterator[dict[str, Any]]
    timestamp: str

    def _head(self) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "collection", "timestamp": self.timestamp}

    def json(self) -> Iterator[bytes]:
        opening = json.dumps(self._head(), ensure_ascii=False, separators=(",", ":"))[:-1]
        yield (opening + ',"entry":[').encode("utf-8")
        separator = ""
        for entry in self.entries:
            text = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
            yield (separator + text).encode("utf-8")
            separator = ","
        yield b"]}"

    def xml(self) -> Iterator[bytes]:
        """Each entry mapped on its own (in a Bundle of one, whose ``<entry>`` is cut out: the
        models write elements in FHIR's order, and text never holds a bare ``<``)."""
        head = _xml_of(self._head())
        yield head[: head.rindex(b"</Bundle>")]
        for entry in self.entries:
            one = _xml_of({"resourceType": "Bundle", "type": "collection", "entry": [entry]})
            yield one[one.index(b"<entry>") : one.rindex(b"</Bundle>")]
        yield b"</Bundle>"


def _xml_of(bundle: dict[str, Any]) -> bytes:
    xml = json_to_xml(bundle)
    if xml is None:  # logged by json_to_xml; the stream stops, the document does not parse
        raise ValueError("an entry of the Bundle cannot be written in XML")
    return xml


@dataclass(frozen=True)
class Preference:
    """``Prefer: return=…`` (RFC 7240, FHIR R4 http.html#ops)."""

    value: str = "representation"  # minimal, representation, OperationOutcome

    @classmethod
    def of(cls, header: str) -> Preference:
        for part in header.split(","):
            for token in part.split(";"):
                name, _, value = token.strip().partition("=")
                if name.strip().lower() == "return":
                    value = value.strip().strip('"')
                    if value in ("minimal", "representation", "OperationOutcome"):
                        return cls(value)
        return cls()


def preferred_body(
    method: str, status: int, body: JsonObject | None, preference: Preference
) -> JsonObject | None:
    """What a successful write answers under ``preference``: nothing (minimal), an
    OperationOutcome saying it succeeded, or the resource (representation, the default)."""
    if method not in ("POST", "PUT") or not 200 <= status < 300 or body is None:
        return body
    if body.get("resourceType") in ("OperationOutcome", "Parameters", "Bundle"):
        # An operation's own answer, an outcome already, a search (POST _search) or a
        # transaction-response: only a created or updated resource is replaced.
        return body
    if preference.value == "minimal":
        return None
    if preference.value == "OperationOutcome":
        return {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": f"{body.get('resourceType')} {_written(status)}",
                }
            ],
        }
    return body


def _written(status: int) -> str:
    return "created" if status == 201 else "accepted"
