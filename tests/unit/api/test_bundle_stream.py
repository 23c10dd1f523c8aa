"""`BundleStream`: a collection Bundle written entry by entry, in JSON and in XML, the head
before any entry is read and each entry as it comes (the export of a record)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from lxml import etree

from carevault.api.fhir.formats import BundleStream

FHIR = "{http://hl7.org/fhir}"
ENTRIES = [
    {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "p1",
                                           "name": [{"family": "Müller <&> Söhne"}]}},
    {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Binary", "id": "b1",
                                           "contentType": "text/plain", "data": "eA=="}},
]


def counted(taken: list[int]) -> Iterator[dict[str, Any]]:
    for n, entry in enumerate(ENTRIES):
        taken.append(n)
        yield entry


@pytest.mark.parametrize("form", ["json", "xml"])
def test_the_head_comes_before_any_entry_is_read_and_each_entry_as_it_comes(form: str) -> None:
    taken: list[int] = []
    stream = BundleStream(counted(taken), "2026-12-07T10:00:00.000Z")
    pieces = stream.json() if form == "json" else stream.xml()
    next(pieces)
    assert taken == []
    next(pieces)
    assert taken == [0]  # the first entry only
    rest = list(pieces)
    assert taken == [0, 1] and len(rest) == 2  # the second entry, the end


def test_json_and_xml_hold_the_same_bundle() -> None:
    in_json = json.loads(b"".join(BundleStream(iter(ENTRIES), "2026-12-07T10:00:00.000Z").json()))
    assert in_json == {"resourceType": "Bundle", "type": "collection",
                       "timestamp": "2026-12-07T10:00:00.000Z", "entry": ENTRIES}
    root = etree.fromstring(b"".join(BundleStream(iter(ENTRIES), "2026-12-07T10:00:00.000Z").xml()))
    assert [child.tag.removeprefix(FHIR) for child in root] == [
        "type", "timestamp", "entry", "entry"]
    family = root.find(f"{FHIR}entry/{FHIR}resource/{FHIR}Patient/{FHIR}name/{FHIR}family")
    assert family.get("value") == "Müller <&> Söhne"  # escaped in, read back as written
    [data] = root.findall(f".//{FHIR}Binary/{FHIR}data")
    assert data.get("value") == "eA=="


def test_an_entry_the_models_refuse_stops_the_xml_stream() -> None:
    broken = [{"fullUrl": "urn:uuid:3", "resource": {"resourceType": "Patient",
                                                     "birthDate": "not a date"}}]
    pieces = BundleStream(iter(broken), "2026-12-07T10:00:00.000Z").xml()
    next(pieces)
    with pytest.raises(ValueError, match="cannot be written in XML"):
        next(pieces)
