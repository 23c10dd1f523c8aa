"""The CapabilityStatement claims an IHE actor only for what the registry serves: each actor
it ``instantiates`` has its transactions among the registered routes, and removing one of
them withdraws the claim."""

from __future__ import annotations

from starlette.testclient import TestClient

from carevault.api.fhir.capability import IHE_ACTORS, capability_statement
from carevault.api.fhir.door import FhirDoor

RECIPIENT = ("https://profiles.ihe.net/ITI/MHD/CapabilityStatement/"
             "IHE.MHD.DocumentRecipient.Comprehensive")
RESPONDER = "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentResponder"


def test_mhd_recipient_and_responder_are_instantiated_and_backed_by_routes(
        client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    assert set(statement["instantiates"]) == {RECIPIENT, RESPONDER}
    rest = statement["rest"][0]
    offered = {(r["type"], i["code"]) for r in rest["resource"] for i in r["interaction"]}
    offered |= {("Bundle", i["code"]) for i in rest.get("interaction", [])}
    for url, needs in IHE_ACTORS:
        if url in statement["instantiates"]:
            assert set(needs) <= offered, url
    assert set(statement["format"]) >= {"application/fhir+json", "application/fhir+xml"}


def test_an_actor_whose_transactions_are_not_served_is_not_claimed() -> None:
    class Empty(FhirDoor):
        def __init__(self) -> None:  # a door whose registry serves nothing
            self.handlers = {}

    assert capability_statement(Empty(), "https://x/fhir")["instantiates"] == []
