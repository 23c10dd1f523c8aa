"""The affinity domain's value sets as FHIR R4 ``ValueSet`` resources, each with its expansion.

A value set is published with its definition (``compose``, one ``include`` per code system,
English displays with a French ``designation``) and its ``expansion``: the codes themselves,
optionally filtered and paged as ``$expand`` asks, displayed in the requested language with the
other languages as designations. R4B's ValueSet is R4's on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from carevault.domain.affinity import LANGUAGES, Concept, ValueSetCodes

JsonObject = dict[str, Any]

VALUESET_BASE_URL = "https://carevault.lu/fhir/ValueSet/"
EXPAND_DEFINITION = "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"
PUBLISHER = "CareVault"


def valueset_url(valueset_id: str) -> str:
    """The canonical URL a value set is published under."""
    return VALUESET_BASE_URL + valueset_id


@dataclass(frozen=True)
class ExpansionRequest:
    """What an expansion holds: the codes matching ``text_filter`` (None: all), from
    ``offset``, at most ``count`` of them (None: all), displayed in ``language``."""

    language: str = LANGUAGES[0]
    text_filter: str | None = None
    offset: int = 0
    count: int | None = None

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise ValueError(f"no displays in {self.language!r}; languages: {LANGUAGES}")
        if self.offset < 0 or (self.count is not None and self.count < 0):
            raise ValueError("offset and count cannot be negative")

    @property
    def paged(self) -> bool:
        return self.offset > 0 or self.count is not None


def value_set(
    codes: ValueSetCodes,
    version: str,
    timestamp: datetime,
    expansion: ExpansionRequest | None = None,
) -> JsonObject:
    """The ``ValueSet`` resource of ``codes`` at the affinity domain's ``version``, with the
    expansion ``expansion`` asks for (the whole value set, in English, by default)."""
    asked = expansion or ExpansionRequest()
    return {
        "resourceType": "ValueSet",
        "id": codes.id,
        "url": valueset_url(codes.id),
        "version": version,
        "name": codes.name,
        "title": codes.titles[asked.language],
        "status": "active",
        "experimental": False,
        "publisher": PUBLISHER,
        "description": codes.description,
        "immutable": False,
        "compose": _compose(codes),
        "expansion": _expansion(codes, timestamp, asked),
    }


def _designations(concept: Concept, shown: str) -> list[JsonObject]:
    return [
        {"language": language, "value": concept.display(language)}
        for language in LANGUAGES
        if language != shown
    ]


def _compose(codes: ValueSetCodes) -> JsonObject:
    default = LANGUAGES[0]
    return {
        "include": [
            {
                "system": system,
                "concept": [
                    {
                        "code": c.code,
                        "display": c.display(default),
                        "designation": _designations(c, default),
                    }
                    for c in codes.concepts
                    if c.system == system
                ],
            }
            for system in codes.systems()
        ]
    }


def _expansion(codes: ValueSetCodes, timestamp: datetime, asked: ExpansionRequest) -> JsonObject:
    matches = codes.matching(asked.text_filter)
    end = None if asked.count is None else asked.offset + asked.count
    page = matches[asked.offset : end]
    parameters: list[JsonObject] = [{"name": "displayLanguage", "valueCode": asked.language}]
    if asked.text_filter is not None:
        parameters.append({"name": "filter", "valueString": asked.text_filter})
    if asked.paged:
        parameters.append({"name": "offset", "valueInteger": asked.offset})
    if asked.count is not None:
        parameters.append({"name": "count", "valueInteger": asked.count})
    expansion: JsonObject = {
        "timestamp": _instant(timestamp),
        "total": len(matches),
    }
    if asked.paged:
        expansion["offset"] = asked.offset
    expansion["parameter"] = parameters
    if page:  # FHIR JSON has no empty arrays
        expansion["contains"] = [
            {
                "system": c.system,
                "code": c.code,
                "display": c.display(asked.language),
                "designation": _designations(c, asked.language),
            }
            for c in page
        ]
    return expansion


def _instant(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("an expansion timestamp needs a time zone")
    text = moment.astimezone(UTC).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z")
