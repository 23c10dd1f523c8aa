"""The FHIR XML mapping (`carevault.api.fhir.formats`) round-trips the IHE IG's published
examples: JSON → XML → JSON gives back what was sent, narrative XHTML, contained resources,
extensions and identifiers included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from carevault.api.fhir.formats import json_to_xml, xml_to_json

EXAMPLES = sorted((Path(__file__).parent / "examples").glob("*.json"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_ig_example_round_trips_through_xml(path: Path) -> None:
    sent = json.loads(path.read_text(encoding="utf-8"))
    xml = json_to_xml(sent)
    assert xml is not None
    root = etree.fromstring(xml)
    assert root.tag == "{http://hl7.org/fhir}Bundle"
    assert root.find("{http://hl7.org/fhir}type").get("value") == "transaction"
    back = json.loads(xml_to_json(xml, max_depth=64))
    assert back == sent
