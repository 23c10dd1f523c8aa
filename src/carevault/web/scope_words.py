"""What a SMART scope lets an app do, in the words of the person asked to allow it.

The consent page shows each resource scope as a box to untick. ``patient/*.rs`` means nothing
to a patient; "see your whole record" does. The scope itself stays beside the sentence (for
whoever wants to check), and an unknown resource type is named as it is rather than guessed.
"""

from __future__ import annotations

from carevault.domain.errors import InvalidInput
from carevault.domain.scopes import parse_scopes

# The resource types a patient's app may ask for, as the message keys that name them.
_WHAT = {
    "*": "scope_what_all",
    "AuditEvent": "scope_what_history",
    "Communication": "scope_what_notifications",
    "Consent": "scope_what_sharing",
    "DocumentReference": "scope_what_documents",
    "Binary": "scope_what_documents",
    "Encounter": "scope_what_care",
    "MedicationRequest": "scope_what_prescriptions",
    "MedicationDispense": "scope_what_prescriptions",
    "Task": "scope_what_prescriptions",
    "Patient": "scope_what_identity",
    "RelatedPerson": "scope_what_representatives",
}


def scope_sentence(scope: str, words: dict[str, str]) -> str:
    """One sentence for ``scope`` from the page's messages (``words``), e.g. "See and search:
    your whole record"; the scope itself when it is not a resource scope."""
    try:
        (parsed,) = parse_scopes(scope)
    except (InvalidInput, ValueError):
        return scope
    verbs = []
    if parsed.permissions & {"r", "s"}:
        verbs.append(words["scope_see"])
    if parsed.permissions & {"c", "u"}:
        verbs.append(words["scope_change"])
    if "d" in parsed.permissions:
        verbs.append(words["scope_delete"])
    key = _WHAT.get(parsed.resource)
    what = words[key] if key else parsed.resource
    return words["scope_sentence"].format(verbs=", ".join(verbs), what=what)
