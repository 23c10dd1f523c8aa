"""The FHIR API of a real CareVault server, over a real socket, with the demo population."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from carevault.domain.national_id import make_luxembourg_national_id

from .conftest import BearerAuth, registrar_token

pytestmark = pytest.mark.e2e

FHIR_JSON = "application/fhir+json"
NATIONAL_SYSTEM = "https://carevault.lu/fhir/sid/matricule"
PROFESSION_SYSTEM = "https://carevault.lu/fhir/CodeSystem/profession"


@pytest.fixture(scope="module")
def http(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120.0,
                      auth=BearerAuth(server)) as client:
        yield client


@pytest.fixture(scope="module")
def registrar(server: Any) -> Iterator[httpx.Client]:
    """A registrar's client: the directories' writer (a professional may not write them)."""
    token = registrar_token(server.base_url, server.workdir)
    with httpx.Client(base_url=server.base_url, timeout=120.0,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def entries(bundle: dict[str, Any], mode: str | None = None) -> list[dict[str, Any]]:
    found = bundle.get("entry", [])
    if mode is not None:
        found = [e for e in found if e.get("search", {}).get("mode") == mode]
    return [e["resource"] for e in found]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((li["url"] for li in bundle.get("link", []) if li["relation"] == relation), None)


def searchset(http: httpx.Client, path: str, **params: str) -> dict[str, Any]:
    # httpx replaces a URL's own query with ``params`` when given, even an empty one.
    response = http.get(path, params=params) if params else http.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    return bundle


def assert_outcome(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    assert "Traceback" not in response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"], outcome
    assert all(issue["severity"] in ("error", "fatal") for issue in outcome["issue"])
    return outcome


def diagnostics(outcome: dict[str, Any]) -> str:
    return " ".join(issue.get("diagnostics", "") for issue in outcome["issue"])


def post_json(http: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": FHIR_JSON})


# --- CapabilityStatement ---------------------------------------------------------------------


def test_metadata_is_an_r4_capability_statement(http: httpx.Client) -> None:
    response = http.get("/fhir/metadata")

    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0].strip() == FHIR_JSON
    assert "Traceback" not in response.text
    body = response.json()
    statement = CapabilityStatement.model_validate(body)
    assert statement.fhirVersion == "4.0.1"
    assert body["fhirVersion"] == "4.0.1"
    served = {resource["type"] for rest in body["rest"] for resource in rest["resource"]}
    assert {"Patient", "Practitioner", "PractitionerRole", "Organization"} <= served


# --- PDQm: patients --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_patient(server: Any, http: httpx.Client) -> dict[str, Any]:
    """A patient the demo describes, with its stored resource."""
    account = server.accounts["patients"][0]
    response = http.get(f"/fhir/Patient/{account['patient_id']}")
    assert response.status_code == 200, response.text
    return {**account, "resource": response.json()}


def test_demo_patient_found_by_family_name(http: httpx.Client, demo_patient: Any) -> None:
    family = demo_patient["resource"]["name"][0]["family"]

    bundle = searchset(http, "/fhir/Patient", family=family)

    ids = {p["id"] for p in entries(bundle)}
    assert demo_patient["patient_id"] in ids
    assert all(
        any(
            strip_accents(n["family"]).casefold().startswith(strip_accents(family).casefold())
            for n in p["name"]
        )
        for p in entries(bundle)
    )


def test_demo_patient_found_by_lower_case_accent_free_family(
    http: httpx.Client, demo_patient: Any
) -> None:
    family = demo_patient["resource"]["name"][0]["family"]
    typed = strip_accents(family).lower()

    bundle = searchset(http, "/fhir/Patient", family=typed)

    assert demo_patient["patient_id"] in {p["id"] for p in entries(bundle)}


def test_accented_family_found_without_its_accents(http: httpx.Client) -> None:
    """Some demo family names carry accents (Gonçalves, Müller…): typed plainly, they match."""
    bundle = searchset(http, "/fhir/Patient", _count="100")
    accented = None
    while accented is None:
        accented = next(
            (
                p
                for p in entries(bundle)
                if any(strip_accents(n["family"]) != n["family"] for n in p["name"])
            ),
            None,
        )
        next_url = link(bundle, "next")
        if accented is not None or next_url is None:
            break
        bundle = searchset(http, next_url)
    assert accented is not None, "the demo population has no accented family name"
    family = next(
        n["family"] for n in accented["name"] if strip_accents(n["family"]) != n["family"]
    )

    found = searchset(http, "/fhir/Patient", family=strip_accents(family).lower())

    assert accented["id"] in {p["id"] for p in entries(found)}


def test_demo_patient_found_by_national_identifier(
    http: httpx.Client, demo_patient: Any
) -> None:
    national_id = demo_patient["national_id"]

    bundle = searchset(http, "/fhir/Patient", identifier=f"{NATIONAL_SYSTEM}|{national_id}")

    assert bundle["total"] == 1
    (patient,) = entries(bundle)
    assert patient["id"] == demo_patient["patient_id"]
    assert {"system": NATIONAL_SYSTEM, "value": national_id} in [
        {"system": i["system"], "value": i["value"]} for i in patient["identifier"]
    ]


def test_the_servers_log_holds_no_query_string(
    server: Any, http: httpx.Client, demo_patient: Any
) -> None:
    """FHIR searches carry names, birth dates and national identification numbers in their
    query: uvicorn's access log line names the request without it (as the nginx configuration's
    log format does), on stdout or stderr."""
    national_id = demo_patient["national_id"]
    family = demo_patient["resource"]["name"][0]["family"]
    found = http.get("/fhir/Patient", params={"identifier": f"{NATIONAL_SYSTEM}|{national_id}",
                                                "family": family, "_count": "1"})
    assert found.status_code == 200
    logs = "".join((server.workdir / name).read_text("utf-8", errors="replace")
                   for name in ("server.out", "server.err"))
    assert '"GET /fhir/Patient HTTP/1.1" 200' in logs  # the line is there, its query is not
    assert national_id not in logs and f"family={family}" not in logs


# --- mCSD: professionals ---------------------------------------------------------------------


def test_pharmacist_roles_include_their_practitioners(http: httpx.Client) -> None:
    bundle = searchset(
        http,
        "/fhir/PractitionerRole",
        role="pharmacist",
        _include="PractitionerRole:practitioner",
    )

    roles = entries(bundle, "match")
    included = entries(bundle, "include")
    assert roles, "the demo has pharmacists"
    assert bundle["total"] >= len(roles)
    for role in roles:
        assert role["resourceType"] == "PractitionerRole"
        codes = {(c.get("system"), c["code"]) for cc in role["code"] for c in cc["coding"]}
        assert (PROFESSION_SYSTEM, "pharmacist") in codes
        assert not {code for system, code in codes if system == PROFESSION_SYSTEM} - {
            "pharmacist"
        }
    assert all(p["resourceType"] == "Practitioner" for p in included)
    referenced = {role["practitioner"]["reference"].split("/")[-1] for role in roles}
    assert referenced == {p["id"] for p in included}


def test_demo_pharmacist_role_found(server: Any, http: httpx.Client) -> None:
    pharmacist = next(
        p for p in server.accounts["professionals"] if p["profession"] == "pharmacist"
    )
    bundle = searchset(
        http,
        "/fhir/PractitionerRole",
        role="pharmacist",
        practitioner=f"Practitioner/{pharmacist['practitioner_id']}",
        _include="PractitionerRole:practitioner",
    )

    assert len(entries(bundle, "match")) == 1
    assert [p["id"] for p in entries(bundle, "include")] == [pharmacist["practitioner_id"]]


def test_demo_professional_found_by_name(server: Any, http: httpx.Client) -> None:
    for professional in server.accounts["professionals"]:
        stored = http.get(f"/fhir/Practitioner/{professional['practitioner_id']}")
        assert stored.status_code == 200, stored.text
        family = stored.json()["name"][0]["family"]

        bundle = searchset(http, "/fhir/Practitioner", name=family, _count="100")

        found = {p["id"] for p in entries(bundle)}
        assert professional["practitioner_id"] in found, (professional, family)


# --- paging ----------------------------------------------------------------------------------


def test_patient_pages_follow_next_links_without_duplicates(http: httpx.Client) -> None:
    bundle = searchset(http, "/fhir/Patient", _count="5")
    assert bundle["total"] >= 300
    assert len(bundle["entry"]) == 5

    seen: list[str] = []
    for _ in range(3):
        page = entries(bundle)
        assert len(page) == 5
        seen += [p["id"] for p in page]
        next_url = link(bundle, "next")
        assert next_url is not None
        assert parse_qs(urlsplit(next_url).query)["_count"] == ["5"]
        bundle = searchset(http, next_url)

    assert len(seen) == 15
    assert len(set(seen)) == 15


# --- bad input over the socket ---------------------------------------------------------------


def valid_patient(national_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": NATIONAL_SYSTEM, "value": national_id}],
        "name": [{"family": "Testé", "given": ["Socket"]}],
        "gender": "female",
        "birthDate": "1971-03-04",
    }


def test_malformed_json_is_400(registrar: httpx.Client) -> None:
    outcome = assert_outcome(post_json(registrar, "/fhir/Patient", b'{"resourceType": "Pat'), 400)
    assert "JSON" in diagnostics(outcome)


def test_wrong_resource_type_is_400(registrar: httpx.Client) -> None:
    body = json.dumps({"resourceType": "Observation", "status": "final"}).encode()

    outcome = assert_outcome(post_json(registrar, "/fhir/Patient", body), 400)

    assert "Observation" in diagnostics(outcome)


def test_invalid_national_number_is_422_naming_the_check_digit(registrar: httpx.Client) -> None:
    good = make_luxembourg_national_id(date(1971, 3, 4), 417)
    bad = good[:-1] + str((int(good[-1]) + 1) % 10)
    body = json.dumps(valid_patient(bad)).encode()

    outcome = assert_outcome(post_json(registrar, "/fhir/Patient", body), 422)

    assert "check digit" in diagnostics(outcome)
    assert (
        registrar.get("/fhir/Patient", params={"identifier": f"{NATIONAL_SYSTEM}|{bad}"}).json()[
            "total"
        ]
        == 0
    )


def test_fifty_megabyte_body_is_413(http: httpx.Client) -> None:
    body = b" " * (50 * 1024 * 1024)

    response = post_json(http, "/fhir/Patient", body)

    assert_outcome(response, 413)
    # The server is still serving.
    assert http.get("/health").status_code == 200


def test_fifty_megabytes_streamed_without_length_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        chunk = b" " * (1024 * 1024)
        for _ in range(50):
            yield chunk

    response = http.post(
        "/fhir/Patient", content=chunks(), headers={"Content-Type": FHIR_JSON}
    )

    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert_outcome(response, 413)


def test_count_too_large_is_400(http: httpx.Client) -> None:
    outcome = assert_outcome(http.get("/fhir/Patient", params={"_count": "100000"}), 400)
    assert "_count" in diagnostics(outcome)


def test_unknown_search_parameter_is_400(http: httpx.Client) -> None:
    response = http.get("/fhir/Patient", params={"favourite-colour": "blue"})

    outcome = assert_outcome(response, 400)

    assert "favourite-colour" in diagnostics(outcome)


def test_text_plain_body_is_415(registrar: httpx.Client) -> None:
    response = registrar.post(
        "/fhir/Patient", content=b"family=Muller", headers={"Content-Type": "text/plain"}
    )

    assert_outcome(response, 415)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/fhir/Patient/does-not-exist", 404),
        ("GET", "/fhir/Observation", 404),
        ("DELETE", "/fhir/Patient", 405),
        ("GET", "/fhir/Patient?birthdate=1980-13-45", 400),
        ("GET", "/fhir/Patient?_format=turtle", 406),
    ],
)
def test_other_refusals_are_operation_outcomes(
    http: httpx.Client, method: str, path: str, status: int
) -> None:
    assert_outcome(http.request(method, path), status)


# --- security headers ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/fhir/metadata", "/fhir/Patient?_count=100000"])
def test_security_headers(http: httpx.Client, path: str) -> None:
    response = http.get(path)

    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src" in csp
    assert "frame-ancestors 'none'" in csp
    assert "Traceback" not in response.text


# --- tokens never in URLs --------------------------------------------------------------------


def test_a_token_in_the_url_is_refused_and_stays_out_of_the_server_log(server: Any) -> None:
    """RFC 6750 §2.3 is not supported, and the token it carries is written nowhere: not in
    the server's access log (uvicorn's, on the real server), not in the audit log."""
    import time

    token = server.token()
    marker = f"probe-{time.monotonic_ns()}"
    logs = [server.workdir / "server.out", server.workdir / "server.err"]
    line = '"GET /fhir/Patient HTTP/1.1" 401'

    def written() -> str:
        return "".join(path.read_text(errors="replace") for path in logs)

    before = written().count(line)
    response = httpx.get(f"{server.fhir}/Patient", params={"family": marker,
                                                            "access_token": token})
    outcome = assert_outcome(response, 401)
    assert "Authorization" in outcome["issue"][0]["diagnostics"]
    deadline = time.monotonic() + 10
    text = written()
    while text.count(line) == before and time.monotonic() < deadline:  # the line is written
        time.sleep(0.1)
        text = written()
    assert text.count(line) > before, "the server's access log did not record the request"
    assert token not in text
    assert marker not in text  # the access log keeps no query at all
    database = (server.workdir / "var").glob("carevault.db*")
    assert all(token.encode() not in path.read_bytes() for path in database)
