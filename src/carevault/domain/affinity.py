"""The affinity domain's codes: the coded metadata every shared document carries (IHE XDS/MHD).

A document is described by six coded attributes — class, type, format, practice setting,
facility type and confidentiality — whose allowed values the affinity domain publishes as
value sets. The lists are configuration (a versioned JSON file; the built-in one is
``carevault/config/affinity-domain.json``); this module validates a parsed file and answers
questions about it. It does no I/O: the caller reads and parses the file.

Class and type codes also say which **engine class** a document belongs to — the document class
the authorization engine's profile matrix keys on (``medication``, ``psychiatric``, …). A type
is the finer of the two axes, so a document's engine class is its type's when the type names
one; a generic type (``"engine_class": null``, e.g. LOINC 34109-9 *Note*) leaves it to the
class. See `AffinityDomain.engine_class`.

Every error in a file raises `ValueError` with a message naming the value set and the entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from carevault.domain.errors import NotFound
from carevault.domain.text import fold

__all__ = [
    "CLASS_CODES",
    "CONFIDENTIALITY_CODES",
    "FACILITY_TYPE_CODES",
    "FORMAT_CODES",
    "LANGUAGES",
    "PRACTICE_SETTING_CODES",
    "TYPE_CODES",
    "VALUESET_NAMES",
    "AffinityDomain",
    "CodeRef",
    "Concept",
    "ValueSetCodes",
]

CLASS_CODES = "xds-classcode"
TYPE_CODES = "xds-typecode"
FORMAT_CODES = "xds-formatcode"
PRACTICE_SETTING_CODES = "xds-practicesettingcode"
FACILITY_TYPE_CODES = "xds-healthcarefacilitytypecode"
CONFIDENTIALITY_CODES = "xds-confidentialitycode"

# The value sets an affinity domain file must define (no more, no fewer), with the computable
# name each is published under.
VALUESET_NAMES: Mapping[str, str] = MappingProxyType(
    {
        CLASS_CODES: "XDSClassCode",
        TYPE_CODES: "XDSTypeCode",
        FORMAT_CODES: "XDSFormatCode",
        PRACTICE_SETTING_CODES: "XDSPracticeSettingCode",
        FACILITY_TYPE_CODES: "XDSHealthcareFacilityTypeCode",
        CONFIDENTIALITY_CODES: "XDSConfidentialityCode",
    }
)

# The languages every display is written in; the first is the default.
LANGUAGES = ("en", "fr")

# Which value sets carry an engine class, and whether it may be null there.
_ENGINE_CLASS_NULLABLE = {CLASS_CODES: False, TYPE_CODES: True}

_SYSTEM = re.compile(r"^(?:https?://|urn:)\S+$")
_ENTRY_KEYS = frozenset({"system", "code", "display", "engine_class"})
_VALUESET_KEYS = frozenset({"title", "description", "codes"})
_FILE_KEYS = frozenset({"version", "description", "engine_classes", "valuesets"})

CodeRef = tuple[str, str]
"""A coded value as ``(system, code)``."""


@dataclass(frozen=True)
class Concept:
    """One code of a value set, with its display in every language of `LANGUAGES`."""

    system: str
    code: str
    displays: Mapping[str, str] = field(hash=False)
    engine_class: str | None = None

    def display(self, language: str = LANGUAGES[0]) -> str:
        if language not in self.displays:
            raise ValueError(f"no display in {language!r}; languages: {', '.join(LANGUAGES)}")
        return self.displays[language]


@dataclass(frozen=True)
class ValueSetCodes:
    """One value set of the affinity domain: its id, names and codes, in file order."""

    id: str
    name: str
    titles: Mapping[str, str] = field(hash=False)
    description: str
    concepts: tuple[Concept, ...]

    def systems(self) -> tuple[str, ...]:
        """The code systems the value set draws from, in order of first appearance."""
        return tuple(dict.fromkeys(c.system for c in self.concepts))

    def find(self, system: str, code: str) -> Concept | None:
        return next((c for c in self.concepts if c.system == system and c.code == code), None)

    def matching(self, text: str | None) -> tuple[Concept, ...]:
        """The concepts whose code or display, in any language, contains ``text``, ignoring case
        and accents (``"genetique"`` finds *génétique*); every concept when ``text`` is None."""
        if text is None:
            return self.concepts
        wanted = fold(text)
        return tuple(
            c
            for c in self.concepts
            if any(wanted in fold(t) for t in (c.code, *c.displays.values()))
        )


@dataclass(frozen=True)
class AffinityDomain:
    """The affinity domain's value sets, as one versioned whole."""

    version: str
    engine_classes: frozenset[str]
    valuesets: Mapping[str, ValueSetCodes] = field(hash=False)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> AffinityDomain:
        """Validate a parsed affinity domain file.

        ``{"version": ..., "engine_classes": [...], "valuesets": {id: {"title": {"en", "fr"},
        "description": ..., "codes": [{"system", "code", "display": {"en", "fr"},
        "engine_class"}]}}}``; ``engine_class`` is required on class codes, required (a class
        or null) on type codes and refused elsewhere.
        """
        if not isinstance(data, Mapping):
            raise ValueError("the affinity domain file must hold a JSON object")
        unknown_keys = sorted(str(k) for k in data if k not in _FILE_KEYS)
        if unknown_keys:
            raise ValueError(f"the affinity domain has unknown fields {', '.join(unknown_keys)}")
        version = data.get("version")
        if not isinstance(version, str) or not version.strip():
            raise ValueError("the affinity domain needs a version (text)")
        engine_classes = _engine_classes(data.get("engine_classes"))
        raw = data.get("valuesets")
        if not isinstance(raw, Mapping):
            raise ValueError("the affinity domain needs a 'valuesets' object")
        missing = [name for name in VALUESET_NAMES if name not in raw]
        unknown = sorted(str(name) for name in raw if name not in VALUESET_NAMES)
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing {', '.join(missing)}")
            if unknown:
                problems.append(f"unknown {', '.join(unknown)}")
            raise ValueError(
                f"the affinity domain's value sets must be exactly {', '.join(VALUESET_NAMES)}: "
                + "; ".join(problems)
            )
        valuesets = {
            valueset_id: _valueset(valueset_id, raw[valueset_id], engine_classes)
            for valueset_id in VALUESET_NAMES
        }
        return cls(
            version=version,
            engine_classes=engine_classes,
            valuesets=MappingProxyType(valuesets),
        )

    def valueset(self, valueset_id: str) -> ValueSetCodes:
        """The value set ``valueset_id``; `NotFound` names the known ones."""
        found = self.valuesets.get(valueset_id)
        if found is None:
            raise NotFound(
                f"no value set {valueset_id!r}; known: {', '.join(self.valuesets)}",
                expression="ValueSet.id",
            )
        return found

    def contains(self, valueset_id: str, system: str, code: str) -> bool:
        """Whether ``system|code`` is one of the value set's codes (exact, case-sensitive)."""
        return self.valueset(valueset_id).find(system, code) is not None

    def display(
        self, valueset_id: str, system: str, code: str, language: str = LANGUAGES[0]
    ) -> str | None:
        """The display of ``system|code`` in ``language``, or None if it is not in the set."""
        concept = self.valueset(valueset_id).find(system, code)
        return None if concept is None else concept.display(language)

    def engine_class(self, class_code: CodeRef | None, type_code: CodeRef | None) -> str | None:
        """The authorization engine's document class of a document with these codes.

        The type's engine class when the type is known and names one (a type is at least as
        specific as its class: a *psychiatry consult note* filed under *consult note* is
        psychiatric); otherwise the class's; None when neither code is known, which the caller
        must treat as a refusal, not as "any class".
        """
        if type_code is not None:
            typed = self.valuesets[TYPE_CODES].find(*type_code)
            if typed is not None and typed.engine_class is not None:
                return typed.engine_class
        if class_code is not None:
            classed = self.valuesets[CLASS_CODES].find(*class_code)
            if classed is not None:
                return classed.engine_class
        return None


def _engine_classes(value: object) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError("the affinity domain needs 'engine_classes', a list of class names")
    names = list(value)
    for name in names:
        if not isinstance(name, str) or not name.strip() or name == "*":
            raise ValueError(f"engine_classes: {name!r} is not a class name")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"engine_classes: {', '.join(duplicates)} listed twice")
    return frozenset(names)


def _languages(value: object, where: str) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected an object with {' and '.join(LANGUAGES)} texts")
    missing = [
        lang
        for lang in LANGUAGES
        if not isinstance(value.get(lang), str) or not value[lang].strip()
    ]
    if missing:
        raise ValueError(f"{where}: needs a non-empty text in {', '.join(missing)}")
    extra = sorted(str(k) for k in value if k not in LANGUAGES)
    if extra:
        raise ValueError(f"{where}: unknown languages {', '.join(extra)}")
    return MappingProxyType({lang: value[lang] for lang in LANGUAGES})


def _valueset(valueset_id: str, value: object, engine_classes: frozenset[str]) -> ValueSetCodes:
    if not isinstance(value, Mapping):
        raise ValueError(f"{valueset_id}: expected an object with title, description and codes")
    unknown = sorted(str(k) for k in value if k not in _VALUESET_KEYS)
    if unknown:
        raise ValueError(f"{valueset_id}: unknown fields {', '.join(unknown)}")
    titles = _languages(value.get("title"), f"{valueset_id}.title")
    description = value.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"{valueset_id}: needs a description (text)")
    codes = value.get("codes")
    if isinstance(codes, str) or not isinstance(codes, Sequence) or not codes:
        raise ValueError(f"{valueset_id}: needs 'codes', a non-empty list")
    concepts: list[Concept] = []
    seen: set[CodeRef] = set()
    for index, entry in enumerate(codes):
        concept = _concept(valueset_id, index, entry, engine_classes)
        if (concept.system, concept.code) in seen:
            raise ValueError(
                f"{valueset_id}[{index}] ({concept.system}|{concept.code}): listed twice"
            )
        seen.add((concept.system, concept.code))
        concepts.append(concept)
    return ValueSetCodes(
        id=valueset_id,
        name=VALUESET_NAMES[valueset_id],
        titles=titles,
        description=description,
        concepts=tuple(concepts),
    )


def _concept(
    valueset_id: str, index: int, entry: object, engine_classes: frozenset[str]
) -> Concept:
    where = f"{valueset_id}[{index}]"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected an object with system, code and display")
    system, code = entry.get("system"), entry.get("code")
    if not isinstance(code, str) or not code.strip() or code != code.strip():
        raise ValueError(f"{where}: needs a code (text without surrounding spaces)")
    where = f"{where} ({code})"
    if not isinstance(system, str) or not _SYSTEM.match(system):
        raise ValueError(f"{where}: the system must be an absolute URI (http(s):// or urn:)")
    where = f"{valueset_id}[{index}] ({system}|{code})"
    unknown = sorted(str(k) for k in entry if k not in _ENTRY_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown fields {', '.join(unknown)}")
    displays = _languages(entry.get("display"), f"{where}.display")
    nullable = _ENGINE_CLASS_NULLABLE.get(valueset_id)
    engine_class = entry.get("engine_class")
    if nullable is None:
        if "engine_class" in entry:
            raise ValueError(
                f"{where}: engine_class belongs on {CLASS_CODES} and {TYPE_CODES} codes only"
            )
    elif "engine_class" not in entry or (engine_class is None and not nullable):
        allowed = "an engine class" + (" or null" if nullable else "")
        raise ValueError(f"{where}: needs engine_class ({allowed})")
    elif engine_class is not None and engine_class not in engine_classes:
        raise ValueError(
            f"{where}: engine_class {engine_class!r} is not one of the engine_classes "
            f"({', '.join(sorted(engine_classes))})"
        )
    return Concept(
        system=system,
        code=code,
        displays=displays,
        engine_class=engine_class if isinstance(engine_class, str) else None,
    )
