"""The CapabilityStatement, generated from the door's registry so it can only list what runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from carevault import __version__
from carevault.api.fhir.door import FhirDoor, Interaction

JsonObject = dict[str, Any]

TRANSACTION_DOC = (
    "IHE MHD ITI-65 Provide Document Bundle (Comprehensive Metadata). The SubmissionSet's "
    "ihe-sourceId is read as valueIdentifier (MHD 4.1 and later) and, from older sources, as "
    "valueUri; it is answered as valueIdentifier."
)

# The IHE actors whose CapabilityStatements CareVault implements, with what each needs of the
# registry (a system interaction, a resource type and interaction, or a resource type and
# ``$operation``): listed only when the registry serves all of it, so the claim cannot outlive
# the code. R4 lets a server instantiate a statement of which it implements a subset
# (CapabilityStatement.instantiates); what it does implement is this statement's own ``rest``.
# The canonical URLs are the IHE implementation guides' (profiles.ihe.net): MHD 4.2, PDQm 3.1,
# PIXm 3.0, mCSD 4.0, BALP 1.1 (input/fsh/capability.fsh).
IHE_ACTORS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/"
        "IHE.MHD.DocumentRecipient.Comprehensive",
        (("Bundle", "transaction"),),
    ),
    (
        "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentResponder",
        (
            ("List", "search-type"),
            ("DocumentReference", "search-type"),
            ("DocumentReference", "read"),
            ("Binary", "read"),
        ),
    ),
    (
        # ITI-78: Patient read and search.
        "https://profiles.ihe.net/ITI/PDQm/CapabilityStatement/IHE.PDQm.PatientDemographicsSupplier",
        (("Patient", "read"), ("Patient", "search-type")),
    ),
    (
        # ITI-83 ($ihe-pix) and ITI-104 (conditional update of Patient).
        "https://profiles.ihe.net/ITI/PIXm/CapabilityStatement/IHE.PIXm.Manager",
        (("Patient", "$ihe-pix"), ("Patient", "conditional-update")),
    ),
    (
        # ITI-90 on the directory CareVault keeps: organizations, practitioners, their roles
        # and their mailboxes' endpoints (the statement also lists Location,
        # HealthcareService and OrganizationAffiliation, which CareVault does not serve).
        "https://profiles.ihe.net/ITI/mCSD/CapabilityStatement/"
        "IHE.mCSD.CareServicesSelectiveSupplier",
        tuple(
            (kind, interaction)
            for kind in ("Organization", "Practitioner", "PractitionerRole", "Endpoint")
            for interaction in ("read", "search-type")
        ),
    ),
    (
        # ITI-81 (Retrieve ATNA Audit Event) with BALP content; CareVault takes no ITI-20
        # (AuditEvent create): its log is written by its own requests only.
        "https://profiles.ihe.net/ITI/BALP/CapabilityStatement/IHE.BALP.ATNA.AuditRecordRepository",
        (("AuditEvent", "read"), ("AuditEvent", "search-type")),
    ),
)

# SMART App Launch 2 (and IHE IUA, which publishes no CapabilityStatement to instantiate)
# advertise the authorization server in /.well-known/smart-configuration; R4's own mark of it is
# rest.security.service SMART-on-FHIR.
SECURITY = {
    "service": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR",
                }
            ]
        }
    ],
    "description": (
        "OAuth 2.0 access tokens (SMART App Launch 2, SMART Backend Services; IHE IUA "
        "Resource Server): the authorization server is described at "
        "/.well-known/smart-configuration"
    ),
}

# The order FHIR lists interactions in; 'conditional-update' is a flag, not an interaction.
_ORDER = ["read", "vread", "update", "history-instance", "create", "search-type"]


def capability_statement(
    door: FhirDoor, base_url: str, published: datetime | None = None
) -> JsonObject:
    resources = []
    system_interactions = []
    for kind in sorted(door.handlers):
        handler = door.handlers[kind]
        if Interaction.TRANSACTION in handler.interactions:
            system_interactions.append({"code": "transaction", "documentation": TRANSACTION_DOC})
            if handler.interactions == {Interaction.TRANSACTION}:
                continue  # a system-level interaction, not a resource served here
        codes = {i.value for i in handler.interactions}
        entry: JsonObject = {
            "type": kind,
            "interaction": [{"code": code} for code in _ORDER if code in codes],
            "versioning": handler.versioning,
            "readHistory": Interaction.VREAD in handler.interactions,
            "updateCreate": False,
            "conditionalUpdate": Interaction.CONDITIONAL_UPDATE in handler.interactions,
        }
        if handler.search_params:  # FHIR JSON has no empty array (Binary has no search)
            entry["searchParam"] = [
                {"name": p.name, "type": p.type, "documentation": p.documentation}
                for p in handler.search_params
            ]
        if handler.profile:
            entry["supportedProfile"] = [handler.profile, *handler.more_profiles]
        if handler.includes:
            entry["searchInclude"] = list(handler.includes)
        if handler.operations:
            entry["operation"] = [
                {"name": o.name, "definition": o.definition, "documentation": o.documentation}
                for o in handler.operations
            ]
        resources.append(entry)
    served = {
        (kind, i.value) for kind, handler in door.handlers.items() for i in handler.interactions
    } | {
        (kind, f"${o.name}") for kind, handler in door.handlers.items() for o in handler.operations
    }
    instantiates = [url for url, needs in IHE_ACTORS if all(n in served for n in needs)]
    when = (published or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": when,
        "publisher": "CareVault",
        "kind": "instance",
        "instantiates": instantiates,
        "software": {"name": "CareVault", "version": __version__},
        "implementation": {
            "description": "CareVault shared care record",
            "url": base_url.rstrip("/"),
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml", "json", "xml"],
        "rest": [
            {
                "mode": "server",
                "security": SECURITY,
                "resource": resources,
                **({"interaction": system_interactions} if system_interactions else {}),
            }
        ],
    }
