"""SMART on FHIR scopes (v2 ``system/Patient.rs``; v1 ``system/Patient.read`` is accepted too).

A scope bounds what a token may ever do; the authorization engine still decides each access.
Parsing is strict: an unknown form is refused rather than read as something broader.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from carevault.domain.authorization import Authority
from carevault.domain.errors import InvalidInput

_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]{1,63})\.(\*|read|write|c?r?u?d?s?)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
MAX_SCOPES = 50


@dataclass(frozen=True)
class Scope:
    context: str  # patient | user | system
    resource: str  # a resource type, or "*"
    permissions: frozenset[str]  # letters of "cruds"

    def __str__(self) -> str:
        letters = "".join(p for p in "cruds" if p in self.permissions)
        return f"{self.context}/{self.resource}.{letters}"

    def permits(self, resource_type: str, permission: str) -> bool:
        return self.resource in ("*", resource_type) and permission in self.permissions


def parse_scopes(text: str) -> tuple[Scope, ...]:
    """Parse a space-separated scope string; refuse anything that is not a SMART scope."""
    words = text.split()
    if not words:
        raise InvalidInput("no scope was asked for", expression="scope")
    if len(words) > MAX_SCOPES:
        raise InvalidInput(f"at most {MAX_SCOPES} scopes", expression="scope")
    scopes = []
    for word in words:
        match = _SCOPE.match(word)
        if match is None or match.group(3) == "":
            raise InvalidInput(
                f"{word!r} is not a SMART scope such as system/Patient.rs", expression="scope"
            )
        context, resource, access = match.groups()
        scopes.append(Scope(context, resource, frozenset(_V1.get(access, access))))
    return tuple(scopes)


def permits(scopes: tuple[Scope, ...], resource_type: str, permission: str) -> bool:
    return any(scope.permits(resource_type, permission) for scope in scopes)


# OpenID Connect and SMART launch scopes: they ask for identity or context, not for resources.
IDENTITY_SCOPES = frozenset({"openid", "fhirUser", "launch/patient"})


def resource_scopes(text: str) -> tuple[Scope, ...]:
    """The resource scopes of a granted scope string, identity and launch scopes aside."""
    return parse_scopes(" ".join(w for w in text.split() if w not in IDENTITY_SCOPES))


def narrow(asked: tuple[Scope, ...], ceiling: tuple[Scope, ...]) -> tuple[Scope, ...]:
    """The part of ``asked`` that ``ceiling`` allows. SMART lets a server grant less than was
    asked for, and say so in the token response's ``scope``: ``system/*.cruds`` under a ceiling
    of ``system/*.rs system/Encounter.c`` becomes exactly that."""
    granted: dict[tuple[str, str], frozenset[str]] = {}
    for want in asked:
        for allowed in ceiling:
            if want.context != allowed.context:
                continue
            if allowed.resource == "*":
                resource = want.resource
            elif want.resource in ("*", allowed.resource):
                resource = allowed.resource
            else:
                continue
            letters = want.permissions & allowed.permissions
            if letters:
                key = (want.context, resource)
                granted[key] = granted.get(key, frozenset()) | letters
    return tuple(
        Scope(context, resource, letters) for (context, resource), letters in granted.items()
    )


# What a professional's client may ever be granted, in person or through their organization's
# system: everything the engine lets them read; documents to publish (ITI-65) and correct; care
# events (which still need a proof). The directories are read-only to them: writing them is for
# the authorities the platform registers (`Authority`), each for its own resources.
# E-prescriptions: a prescriber creates and activates Tasks, a pharmacist accepts and closes them
# (``system/Task.cu``; the engine decides which of them each may take).
PROFESSIONAL_CEILING = parse_scopes(
    "system/*.rs system/DocumentReference.cu system/Encounter.c system/Task.cu"
)
AUTHORITY_SCOPES = {
    Authority.IDENTITY_SOURCE: parse_scopes("system/Patient.cu"),
    Authority.PROVIDER_REGISTRY: parse_scopes(
        "system/Practitioner.cu system/PractitionerRole.cu system/Organization.cu "
        "system/CareTeam.cu"
    ),
    Authority.ADMISSION_SYSTEM: parse_scopes("system/Encounter.c"),
}


def backend_ceiling(authorities: Iterable[Authority]) -> tuple[Scope, ...]:
    """The most a backend client may hold: a professional's, and its organization's
    registered authorities' own resources."""
    ceiling = PROFESSIONAL_CEILING
    for authority in sorted(set(authorities)):
        ceiling += AUTHORITY_SCOPES[authority]
    return ceiling


# What each kind of account may ever be granted through the authorization code flow, whatever
# its app asks for and its registration allows: a patient's or representative's app reaches the
# patient's own record (patient/…; the engine decides each request), a security officer reads the
# audit trail, the patients it names and the alerts it reviews, a registrar writes the
# directories it keeps. An operator holds system/… scopes, and the engine's operator rule refuses
# every clinical content to them whatever the scope says.
_PERSON = "launch/patient openid fhirUser patient/*.cruds"
ACCOUNT_CEILINGS: dict[str, str] = {
    "patient": _PERSON,
    "representative": _PERSON,
    "operator": "openid fhirUser system/*.cruds",
    "security-officer": (
        "openid fhirUser system/AuditEvent.rs system/Patient.rs system/DetectedIssue.rus"
    ),
    "registrar": (
        "openid fhirUser system/Patient.cruds system/Practitioner.cruds "
        "system/PractitionerRole.cruds system/Organization.cruds system/CareTeam.cruds"
    ),
}


def narrow_words(asked: str, ceiling: str) -> str:
    """`narrow` for scope strings with identity and launch scopes (``openid``, ``fhirUser``,
    ``launch/patient``): those are kept when the ceiling names them, resource scopes are
    narrowed; the result is normalized (identity first, then resource scopes), and has no
    resource scope when nothing asked for is allowed."""
    allowed = set(ceiling.split())
    identity = [w for w in dict.fromkeys(asked.split()) if w in IDENTITY_SCOPES and w in allowed]
    resource = [w for w in asked.split() if w not in IDENTITY_SCOPES]
    limit = [w for w in ceiling.split() if w not in IDENTITY_SCOPES]
    scopes = (
        narrow(parse_scopes(" ".join(resource)), parse_scopes(" ".join(limit)))
        if (resource and limit)
        else ()
    )
    return " ".join([*identity, *(str(s) for s in scopes)])


def has_resource_scope(text: str) -> bool:
    """Whether a scope string holds a resource scope (identity scopes alone reach nothing)."""
    return any(w not in IDENTITY_SCOPES for w in text.split())
