"""Why an access was allowed, in one word, recorded in its audit entry when it is decided.

The engine's decision says which rule permitted a request (``grant``, ``emergency``,
``patient``…); ``grant`` covers very different relationships: the patient's own grant to the
professional, a care event proved by an admission system or a presence code (a grant of source
``care-event``), the referring physician, a grant to the professional's care team or
organization, a delegation from a colleague. The security officer's detector, and the share of
accesses explained by a care relationship (Fabbri & LeFevre, VLDB 2011, "explanation-based
auditing"), need to know which one, as it stood *at decision time*: a grant withdrawn since
must not turn an explained access into an unexplained one. So the basis is computed from the
same facts the engine decided on and written in the entry's detail as ``basis`` (with
``basis-ref``, the grant or delegation that carried it, when there is one).

Explained accesses are those a relationship the professional did not assert at the moment of
access accounts for: everything but an emergency (break-the-glass), which the officer reviews.
"""

from __future__ import annotations

from datetime import datetime

from carevault.domain.authorization import (
    Decision,
    Party,
    RecordFacts,
    Subject,
    SubjectKind,
)

PATIENT = "patient"
REPRESENTATIVE = "representative"
AUTHOR = "author"
GRANT = "grant"  # the patient's (or a representative's) grant to the professional in person
CARE_EVENT = "care-event"  # a proved care event (admission system, presence code)
REFERRING = "referring-physician"
TEAM = "team"
ORGANIZATION = "organization"
DELEGATION = "delegation"
EMERGENCY = "emergency"

BASES = (
    PATIENT,
    REPRESENTATIVE,
    AUTHOR,
    GRANT,
    CARE_EVENT,
    REFERRING,
    TEAM,
    ORGANIZATION,
    DELEGATION,
    EMERGENCY,
)
# What a relationship of the professional with this patient accounts for; the rest is reviewed.
EXPLAINED = frozenset(BASES) - {EMERGENCY}
# Bases that name the professional in person (not their whole organization).
PERSONAL = frozenset({PATIENT, REPRESENTATIVE, AUTHOR, GRANT, CARE_EVENT, REFERRING, DELEGATION})


def basis_of(
    decision: Decision, subject: Subject, record: RecordFacts | None, now: datetime
) -> tuple[str, str] | None:
    """The basis of a permitted access to a record, and the id of the fact that carried it
    (empty if none has one); ``None`` for a refusal or a request on no record. When several
    facts open the record, the most personal one is named: a grant to the professional before
    one to their team, before one to their organization."""
    if not decision.permit or record is None:
        return None
    rule = decision.rule
    if rule == "patient":
        return PATIENT, ""
    if rule == "representative":
        return REPRESENTATIVE, ""
    if rule == "author":
        return AUTHOR, ""
    if rule == "emergency":
        return EMERGENCY, ""
    if rule != "grant":
        return None
    acting = subject.mandator if subject.kind is SubjectKind.ASSISTANT else subject
    if acting is None:
        return None
    ranked: list[tuple[int, str, str]] = []
    for grant in record.grants:
        if not grant.active(now):
            continue
        if grant.party is Party.PRACTITIONER and grant.party_id == acting.id:
            kind = CARE_EVENT if grant.source == "care-event" else GRANT
            ranked.append((0 if kind == CARE_EVENT else 1, kind, grant.id))
        elif grant.party is Party.CARE_TEAM and grant.party_id in acting.care_team_ids:
            ranked.append((4, TEAM, grant.id))
        elif grant.party is Party.ORGANIZATION and grant.party_id in acting.organization_ids:
            ranked.append((5, ORGANIZATION, grant.id))
    if record.referring_physician_id == acting.id:
        ranked.append((2, REFERRING, ""))
    if record.delegation_allowed:
        for delegation in record.delegations:
            if delegation.delegate_id == acting.id and delegation.active(now):
                ranked.append((3, DELEGATION, delegation.id))
    if not ranked:
        return None
    _, kind, ref = min(ranked)
    return kind, ref


def basis_detail(
    decision: Decision, subject: Subject, record: RecordFacts | None, now: datetime
) -> dict[str, str]:
    """The audit entry's ``basis`` and ``basis-ref`` for a decision (nothing for a refusal)."""
    found = basis_of(decision, subject, record, now)
    if found is None:
        return {}
    kind, ref = found
    return {"basis": kind, "basis-ref": ref} if ref else {"basis": kind}


def explained(basis: str | None) -> bool:
    """Whether a relationship accounts for the access (see `EXPLAINED`)."""
    return basis is not None and basis in EXPLAINED


__all__ = ["BASES", "EXPLAINED", "PERSONAL", "basis_detail", "basis_of", "explained"]
