"""The CapabilityStatement claims an IHE actor only for what the registry serves: each actor
it ``instantiates`` has its transactions among the registered routes, and removing one of
them withdraws the claim."""

from __future__ import annotations

import copy
from typing import Any

from starlette.testclient import TestClient

from carevault.api.fhir.capability import IHE_ACTORS, capability_statement
from carevault.api.fhir.door import FhirDoor
from carevault.bootstrap import Platform

IHE = "https://profiles.ihe.net/ITI/"
RECIPIENT = IHE + "MHD/CapabilityStatement/IHE.MHD.DocumentRecipient.Comprehensive"
RESPONDER = IHE + "MHD/CapabilityStatement/IHE.MHD.DocumentResponder"
PDQM = IHE + "PDQm/CapabilityStatement/IHE.PDQm.PatientDemographicsSupplier"
PIXM = IHE + "PIXm/CapabilityStatement/IHE.PIXm.Manager"
MCSD = IHE + "mCSD/CapabilityStatement/IHE.mCSD.CareServicesSelectiveSupplier"
BALP = IHE + "BALP/CapabilityStatement/IHE.BALP.ATNA.AuditRecordRepository"


def offered(statement: dict[str, Any]) -> set[tuple[str, str]]:
    """What the statement itself says is served: interactions, and operations as $name."""
    rest = statement["rest"][0]
    served = {(r["type"], i["code"]) for r in rest["resource"] for i in r["interaction"]}
    served |= {(r["type"], "conditional-update") for r in rest["resource"]
               if r.get("conditionalUpdate")}
    served |= {(r["type"], f"${o['name']}") for r in rest["resource"]
               for o in r.get("operation", [])}
    return served | {("Bundle", i["code"]) for i in rest.get("interaction", [])}


def test_the_ihe_actors_are_instantiated_and_backed_by_routes(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    assert set(statement["instantiates"]) == {RECIPIENT, RESPONDER, PDQM, PIXM, MCSD, BALP}
    for url, needs in IHE_ACTORS:
        if url in statement["instantiates"]:
            assert set(needs) <= offered(statement), url
    assert set(statement["format"]) >= {"application/fhir+json", "application/fhir+xml"}
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert client.get("/.well-known/smart-configuration").status_code == 200


def test_removing_a_transaction_withdraws_the_actor(platform: Platform) -> None:
    """PIXm's Manager needs ITI-83 ($ihe-pix): a registry whose Patient lacks it does not
    claim the actor, and keeps every other claim."""
    door = platform.door
    patient = door.handlers["Patient"]
    without_pix = type("NoPix", (type(patient),), {
        "operations": tuple(o for o in patient.operations if o.name != "ihe-pix")})
    stripped = copy.copy(door)
    stripped.handlers = {**door.handlers, "Patient": without_pix.__new__(without_pix)}
    claimed = capability_statement(stripped, "https://x/fhir")["instantiates"]
    assert PIXM not in claimed and {PDQM, MCSD, BALP, RECIPIENT} <= set(claimed)


def test_an_actor_whose_transactions_are_not_served_is_not_claimed() -> None:
    class Empty(FhirDoor):
        def __init__(self) -> None:  # a door whose registry serves nothing
            self.handlers = {}

    assert capability_statement(Empty(), "https://x/fhir")["instantiates"] == []
