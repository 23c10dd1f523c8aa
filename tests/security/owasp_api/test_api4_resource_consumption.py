"""OWASP API4:2023 Unrestricted Resource Consumption: every size, count and rate a client
controls has an explicit limit (`carevault.settings.Settings`, `fhirmodel/validate.py`,
`api/fhir/search.py`, `api/fhir/door.py`), and going past it is refused early with the right
status (413, 400, 429) and an OperationOutcome, recorded, with nothing stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.api.fhir.door import MAX_PARAMETERS
from carevault.api.fhir.search import MAX_REPETITIONS
from carevault.bootstrap import Platform, build
from carevault.settings import Settings
from support.documents import provide_bundle
from support.owasp import Findings, Target, World, attempt, audit_sizes, pdf, records_since

pytestmark = pytest.mark.security
FHIR_JSON = "application/fhir+json"


def attack_oversized_bodies(target: Target) -> list[str]:
    """A body declared larger than the limit (28 MiB by default) is refused before a byte of
    it is read; the OAuth and portal forms have their own, smaller limits."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    limit = platform.settings.max_body_bytes
    headers = {**w.doctor.headers, "Content-Length": str(limit + 1)}
    answer = attempt(f, target, "a body one byte over the limit", lambda: http.post(
        "/fhir", content=b"{}", headers=headers), 413)
    if answer.status_code == 413 and str(limit) not in answer.text:
        f.add(f"the refusal does not say the limit: {answer.text[:200]}")
    attempt(f, target, "a Content-Length of 200 digits", lambda: http.post(
        "/fhir", content=b"{}", headers={**w.doctor.headers, "Content-Length": "9" * 200}), 413)
    form = http.post("/oauth/token", content=b"grant_type=client_credentials&x=" + b"a" * 40_000,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    if form.status_code != 400 or "exceeds" not in form.text:
        f.add(f"a 40 kB token request: {form.status_code} {form.text[:200]}")
    return f.items


def attack_a_document_sized_body_where_no_document_goes(target: Target) -> list[str]:
    """Only the ITI-65 transaction carries documents: every other interaction (a Consent, a
    search form, an operation's Parameters, a directory entry) is parsed and validated in
    memory, and takes at most `max_resource_body_bytes` (1 MiB). The transaction still takes a
    document of several megabytes."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    limit = platform.settings.max_resource_body_bytes
    padding = b" " * (limit + 1)  # JSON allows the whitespace; the size alone is refused
    for label, path, body, content_type in [
        ("a Consent", "/fhir/Consent", b'{"resourceType":"Consent"}' + padding, FHIR_JSON),
        ("an operation's Parameters", f"/fhir/Patient/{w.patient_a}/$emergency-access",
         b'{"resourceType":"Parameters"}' + padding, FHIR_JSON),
        ("a search form", "/fhir/DocumentReference/_search", b"patient=" + b"x" * (limit + 1),
         "application/x-www-form-urlencoded"),
    ]:
        answer = attempt(f, target, f"{label} of {limit + 1} bytes", lambda p=path, b=body,
                         c=content_type: http.post(p, content=b, headers={
                             **w.doctor.headers, "Content-Type": c}), 413)
        if answer.status_code == 413 and str(limit) not in answer.text:
            f.add(f"the refusal of {label} does not say the limit: {answer.text[:200]}")
    large = pdf("large") + b"%" + b"0" * (2 * limit) + b"\n"
    bundle = provide_bundle(w.patient_a, w.doctor, large)
    stored = http.post("/fhir", json=bundle, headers=w.doctor.headers)
    if stored.status_code != 200:
        f.add(f"an ITI-65 Bundle of a {len(large)}-byte document: {stored.status_code} "
              f"{stored.text[:200]}")
    return f.items


def attack_a_bundle_of_too_many_entries(target: Target) -> list[str]:
    """An ITI-65 bundle of more entries than `max_bundle_entries` (1000)."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    bundle = provide_bundle(w.patient_a, w.doctor, pdf("many"))
    extra = platform.settings.max_bundle_entries + 1 - len(bundle["entry"])
    bundle["entry"] += [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "request": {
        "method": "POST", "url": "Binary"}, "resource": {
        "resourceType": "Binary", "contentType": "text/plain", "data": "eA=="}}
        for _ in range(extra)]
    answer = attempt(f, target, "a bundle one entry over the limit", lambda: http.post(
        "/fhir", json=bundle, headers=w.doctor.headers), 400)
    if answer.status_code == 400 and "limit" not in answer.text:
        f.add(f"the refusal does not say the limit: {answer.text[:200]}")
    return f.items


def attack_json_built_to_exhaust_the_parser(target: Target) -> list[str]:
    """Nesting deeper than `max_json_depth` (32), integers of more than 20 digits, decimals of
    more than 40, numbers beyond a double, and the non-JSON NaN and Infinity."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    depth = platform.settings.max_json_depth
    deep = '{"resourceType": "Encounter", "x": ' + "[" * depth + "]" * depth + "}"
    for what, body, status in [
        (f"{depth + 1} levels of nesting", deep, 413),
        ("100 000 levels of nesting", "[" * 100_000 + "]" * 100_000, 413),
        ("an integer of 21 digits", '{"resourceType": "Encounter", "n": 1' + "0" * 20 + "}",
         400),
        ("a decimal of 41 digits", '{"resourceType": "Encounter", "n": 0.' + "1" * 41 + "}",
         400),
        ("a number beyond a double", '{"resourceType": "Encounter", "n": 1e999}', 400),
        ("NaN", '{"resourceType": "Encounter", "n": NaN}', 400),
        ("Infinity", '{"resourceType": "Encounter", "n": -Infinity}', 400),
    ]:
        attempt(f, target, what, lambda body=body: http.post(
            "/fhir/Encounter", content=body.encode(), headers=w.doctor.headers), status)
    return f.items


def attack_pages_too_large_or_too_far(target: Target) -> list[str]:
    """Page sizes and offsets past their limits, on every kind of search: asking for more is
    an error, never a silent truncation."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    largest = platform.settings.max_page_size
    patient = f"Patient/{w.patient_a}"
    for what, path, params, headers in [
        ("a page over the maximum", "/fhir/Patient", {"_count": str(largest + 1)},
         w.doctor.headers),
        ("a page of a billion", "/fhir/DocumentReference",
         {"patient": patient, "_count": "1000000000"}, w.doctor.headers),
        ("an empty page", "/fhir/Practitioner", {"_count": "0"}, w.doctor.headers),
        ("a negative page", "/fhir/Consent", {"patient": patient, "_count": "-1"}, w.app_a),
        ("a page in exponent notation", "/fhir/List", {"patient": patient, "_count": "1e3"},
         w.doctor.headers),
        ("an offset past a million", "/fhir/Patient", {"_offset": "1000001"},
         w.doctor.headers),
        ("an access history page over 100", f"/fhir/Patient/{w.patient_a}/$access-history",
         {"_count": "101"}, w.app_a),
        ("an audit trail page over the maximum", "/fhir/AuditEvent",
         {"patient": patient, "_count": str(largest + 1)}, w.app_a),
        ("an expansion of 1001 codes", "/fhir/ValueSet/xds-typecode/$expand",
         {"count": "1001"}, w.doctor.headers),
    ]:
        attempt(f, target, what, lambda path=path, params=params, headers=headers: http.get(
            path, params=params, headers=headers), 400)
    entries = http.get("/audit/entries", params={"start": "0", "end": "1001"},
                       headers=w.officer)
    if entries.status_code != 400:
        f.add(f"1001 audit entries at once: {entries.status_code} {entries.text[:200]}")
    return f.items


def attack_parameters_repeated_without_end(target: Target) -> list[str]:
    """One criterion repeated, alternatives multiplied, values made long, ``_include`` asked
    for again and again: each criterion is a condition of the search's SQL, so their number
    is bounded (`MAX_PARAMETERS`) and so is each value's length."""
    f, w, http = Findings(), target.world, target.http
    over = MAX_PARAMETERS + 1
    for what, query, headers in [
        (f"{over} times the same criterion", "&".join(["family=a"] * over), w.doctor.headers),
        (f"{over} criteria of 80 alternatives", "&".join(
            ["name=" + ",".join(["ab"] * 80)] * over), w.doctor.headers),
        (f"{over} _include", "&".join(["_include=PractitionerRole:practitioner"] * over),
         w.doctor.headers),
        ("2000 criteria", "&".join(["given=z"] * 2000), w.doctor.headers),
    ]:
        kind = "PractitionerRole" if "_include" in query else "Patient"
        attempt(f, target, what, lambda kind=kind, query=query, headers=headers: http.get(
            f"/fhir/{kind}?{query}", headers=headers), 400)
    form = {f"p{n}": "x" for n in range(over)}
    attempt(f, target, f"POST _search with {over} criteria", lambda: http.post(
        "/fhir/Patient/_search", data=form,
        headers={"Authorization": w.doctor.headers["Authorization"]}), 400)
    attempt(f, target, "a value of 257 characters", lambda: http.get(
        "/fhir/Patient", params={"family": "a" * 257}, headers=w.doctor.headers), 400)
    attempt(f, target, "an _include not served", lambda: http.get(
        "/fhir/PractitionerRole", params={"_include": "*"}, headers=w.doctor.headers), 400)
    # Within the bounds, the same kind of search is served.
    spread = [f"{name}=m" for name in ("family", "given", "name")
              for _ in range(MAX_REPETITIONS)][: MAX_PARAMETERS - 1]
    within = http.get("/fhir/Patient?" + "&".join(spread), headers=w.doctor.headers)
    if within.status_code != 200:
        f.add(f"{len(spread)} criteria were refused: {within.text[:200]}")
    repeated = http.get("/fhir/Patient?" + "&".join(["family=m"] * (MAX_REPETITIONS + 1)),
                        headers=w.doctor.headers)
    if repeated.status_code != 400:
        f.add(f"one criterion {MAX_REPETITIONS + 1} times: {repeated.status_code}")
    return f.items


def attack_flooding(target: Target) -> list[str]:
    """One address sends more FHIR requests than its rate allows, then more token requests:
    429 with Retry-After, an OperationOutcome (an OAuth error at the token endpoint), and the
    refusals recorded. Runs against a platform whose rate is small enough to reach."""
    f, w, platform = Findings(), target.world, target.platform
    rate = platform.settings.rate_limit_per_minute
    since = audit_sizes(platform)
    with target.client("192.0.2.77") as flooder:
        answers = [flooder.get("/fhir/Practitioner", headers=w.doctor.headers)
                   for _ in range(rate + 1)]
        tokens = [flooder.post("/oauth/token", data={"grant_type": "client_credentials"})
                  for _ in range(rate + 1)]
    last = answers[-1]
    if [a.status_code for a in answers[:rate]] != [200] * rate:
        f.add(f"the first {rate} requests were not all served: "
              f"{[a.status_code for a in answers]}")
    if f.refused(last, 429, f"request {rate + 1} of a minute"):
        if not last.headers.get("retry-after", "").isdigit():
            f.add("the 429 has no Retry-After")
        throttled = [r for r in records_since(platform, since) if r.status == 429]
        if not throttled:
            f.add("the throttled request is not in the audit log")
    if tokens[-1].status_code != 429 or tokens[-1].json().get("error") != "slow_down":
        f.add(f"token request {rate + 1}: {tokens[-1].status_code} {tokens[-1].text[:200]}")
    return f.items


ATTACKS = [
    attack_oversized_bodies,
    attack_a_document_sized_body_where_no_document_goes,
    attack_a_bundle_of_too_many_entries,
    attack_json_built_to_exhaust_the_parser,
    attack_pages_too_large_or_too_far,
    attack_parameters_repeated_without_end,
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__.removeprefix("attack_"))
def test_every_size_and_count_is_bounded(attack: Any, target: Target) -> None:
    assert attack(target) == []


RATE = 5


def slow_platform(settings: Settings, platform: Platform) -> Platform:
    """The platform with a rate limit small enough to reach in a test (the same database)."""
    return build(settings.model_copy(update={"rate_limit_per_minute": RATE}), platform.engine)


@pytest.fixture
def limited(settings: Settings, platform: Platform, world: World) -> Iterator[Target]:
    slow = slow_platform(settings, platform)
    with TestClient(slow.app, base_url="http://127.0.0.1:8000",
                    raise_server_exceptions=False) as http:
        yield Target(http, slow, world)


def test_a_flood_is_slowed_down(limited: Target) -> None:
    assert attack_flooding(limited) == []


def test_the_limits_are_explicit_settings(settings: Settings) -> None:
    """The limits the attacks meet are the documented defaults (README, Configuration)."""
    assert (settings.max_body_bytes, settings.max_resource_body_bytes,
            settings.max_bundle_entries, settings.max_json_depth, settings.max_page_size,
            settings.rate_limit_per_minute) == (
        28 * 1024 * 1024, 1024 * 1024, 1000, 32, 100, 1200)
    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    assert f"more than {MAX_PARAMETERS} parameters" in " ".join(readme.split())
