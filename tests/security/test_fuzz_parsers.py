"""Fuzzing every parser of untrusted input with hypothesis.

The property, for each parser: whatever the input, it returns, or raises an error of the
project's own hierarchy (`CareVaultError`: the door maps it to a 4xx OperationOutcome). Any
other exception would be a 500 (or a crash of the portal's form handling).

Bounds, without any wall clock: every input is capped in size (``max_size``), and so is the
number of examples; what bounds the parsers themselves is asserted separately (each size limit
is enforced before parsing: `test_size_limits_are_enforced_before_parsing`). Memory: the peak
resident size of the process may grow by at most ``RSS_GROWTH_LIMIT`` over the whole module
(`rss`), so a parser that hoards memory on hostile input fails the run.

Hypothesis runs derandomized (the same examples on every run, in CI too); the planted bugs at
the end show the same property catching a parser that leaks a ValueError or a KeyError.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import resource
import string
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from starlette.requests import Request

from carevault.api.fhir import search as sp
from carevault.api.fhir.door import FhirRequest, Interaction, parse_route
from carevault.api.oauth_routes import _claimed_client
from carevault.api.oauth_routes import _form as oauth_form
from carevault.domain.errors import CareVaultError, InvalidInput, TooLarge
from carevault.domain.national_id import parse_luxembourg_national_id
from carevault.domain.scopes import backend_ceiling, narrow, parse_scopes, resource_scopes
from carevault.fhirmodel.mhd import parse_provide_bundle
from carevault.fhirmodel.validate import parse_json, validate_resource
from carevault.services import presence, signatures, tokens
from carevault.web.pages import read_form as portal_form
from support.documents import provide_bundle

pytestmark = pytest.mark.security

EXAMPLES = 300
RSS_GROWTH_LIMIT = 256 * 1024 * 1024  # bytes of peak resident memory over the module
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # no wall clock: inputs and examples are what is bounded
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)


def never_escapes(parse: Callable[[Any], object], inputs: st.SearchStrategy[Any]) -> None:
    """Run the property: ``parse`` returns or raises a `CareVaultError`, nothing else."""

    @FUZZ
    @given(inputs)
    def holds(value: Any) -> None:
        with contextlib.suppress(CareVaultError):
            parse(value)

    holds()


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


@pytest.fixture(scope="module", autouse=True)
def rss() -> Iterator[None]:
    before = _peak_rss()
    yield
    grown = _peak_rss() - before
    assert grown < RSS_GROWTH_LIMIT, f"peak RSS grew by {grown} bytes while fuzzing"


# --- strategies ------------------------------------------------------------------------------

# Nesting depths around the limits that matter: ours (32), and Python's recursion (~1000).
DEPTHS = st.sampled_from([1, 31, 32, 33, 500, 999, 1000, 1001, 3000, 5000])
scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=40),
    st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=False),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=5),
    max_leaves=40,
)
# JSON text, broken JSON, deep nesting, huge numbers and constants, and raw bytes.
json_texts = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.text(max_size=12), json_values, max_size=6).map(
        lambda v: json.dumps(v).encode()),
    DEPTHS.map(lambda n: b"[" * n + b"]" * n),
    DEPTHS.map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(min_value=1, max_value=5000).map(lambda n: b'{"n":' + b"9" * n + b"}"),
    st.integers(min_value=1, max_value=5000).map(lambda n: b'{"n":1.' + b"5" * n + b"e999}"),
    st.sampled_from([b'{"n":NaN}', b'{"n":-Infinity}', b'{"a":1,"a":2}', b"\xef\xbb\xbf{}"]),
    st.binary(max_size=2048),
    st.text(alphabet='{}[]",:0123456789.eE-+ntrufalsNI\\u', max_size=400).map(str.encode),
)
words = st.text(max_size=80) | st.text(alphabet=string.printable, max_size=80)
param_names = st.sampled_from(["_id", "family", "given", "name", "birthdate", "identifier",
                               "active", "patient", "date", "_count", "_offset", "role",
                               "practitioner", "status", "author", "related"]) | words
param_values = st.one_of(
    words,
    st.from_regex(r"(eq|ne|lt|le|gt|ge)?\d{1,6}(-\d{1,3}(-\d{1,3})?)?", fullmatch=True),
    st.from_regex(r"[a-z:/.]{0,20}\|[A-Za-z0-9,\\|]{0,20}", fullmatch=True),
    st.integers(min_value=1, max_value=400).map(lambda n: "x" * n),
    st.integers().map(str),
)
params = st.lists(st.tuples(param_names, param_values), max_size=8).map(tuple)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# Compact JWS shapes with hostile headers: the header is JSON a client chose.
headers_json = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"alg": st.sampled_from(["ES256", "EdDSA", "none", "HS256"])},
                          optional={"x5c": json_values, "b64": json_values,
                                    "crit": json_values}).map(lambda v: json.dumps(v).encode()),
    DEPTHS.map(lambda n: b"[" * n),
    DEPTHS.map(lambda n: b'{"alg":' * n),
    st.binary(max_size=200),
)
compact_jws = st.one_of(
    st.tuples(headers_json, st.binary(max_size=100), st.binary(max_size=80)).map(
        lambda p: ".".join(b64url(x) for x in p)),
    st.tuples(headers_json, headers_json, st.binary(max_size=80)).map(
        lambda p: ".".join(b64url(x) for x in p)),
    st.tuples(headers_json, st.binary(max_size=80)).map(
        lambda p: f"{b64url(p[0])}..{b64url(p[1])}"),
    words,
    st.text(alphabet=string.ascii_letters + "._-=+/", max_size=300),
)


# --- JSON bodies and resources ---------------------------------------------------------------


def test_json_bodies() -> None:
    never_escapes(lambda body: parse_json(body, max_depth=32), json_texts)


@pytest.mark.parametrize("kind", ["Patient", "Parameters", "Consent", "Encounter", "Bundle"])
def test_resource_validation(kind: str) -> None:
    resources = st.one_of(
        st.dictionaries(st.text(max_size=20), json_values, max_size=8),
        st.dictionaries(st.sampled_from(["id", "meta", "name", "identifier", "birthDate",
                                         "gender", "parameter", "status", "entry", "type",
                                         "extension", "text"]), json_values, max_size=6),
    ).map(lambda r: {"resourceType": kind, **r})

    def parse(value: dict[str, Any]) -> None:
        # What the door does: a body is first parsed, with its limits, then validated.
        validate_resource(parse_json(json.dumps(value).encode(), max_depth=32), kind)

    never_escapes(parse, resources)


def test_itti65_bundle_reader() -> None:
    valid = provide_bundle("p-1", "Patient/p-1")
    paths = st.lists(st.sampled_from(["entry", 0, 1, 2, "resource", "request", "content",
                                      "attachment", "data", "subject", "relatesTo",
                                      "extension", "identifier", "masterIdentifier",
                                      "securityLabel", "context", "period", "hash", "size",
                                      "method", "fullUrl", "type"]), min_size=1, max_size=6)

    def mutate(changes: list[tuple[list[Any], Any]]) -> dict[str, Any]:
        bundle = json.loads(json.dumps(valid))
        for path, value in changes:
            node: Any = bundle
            for step in path[:-1]:
                try:
                    node = node[step]
                except (KeyError, IndexError, TypeError):
                    break
            else:
                with contextlib.suppress(IndexError, TypeError):
                    node[path[-1]] = value
        return bundle

    bundles = st.one_of(
        st.lists(st.tuples(paths, json_values), max_size=4).map(mutate),
        st.dictionaries(st.text(max_size=10), json_values, max_size=5).map(
            lambda d: {"resourceType": "Bundle", "type": "transaction", **d}),
    )
    never_escapes(lambda b: parse_provide_bundle(b, lambda _vs, _s, _c: True, max_entries=50),
                  bundles)


# --- the door's routes and search parameters -------------------------------------------------


def test_route_parsing() -> None:
    segments = st.sampled_from(["Patient", "metadata", "_history", "_search", "$expand", "1",
                                "..", ".", "", "$", "ValueSet", "a" * 70]) | words
    paths = st.lists(segments, max_size=6).map("/".join) | words
    methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", ""]) | words
    never_escapes(lambda mp: parse_route(*mp), st.tuples(methods, paths))


def _request(parameters: tuple[tuple[str, str], ...]) -> FhirRequest:
    return FhirRequest("GET", Interaction.SEARCH, "Patient", params=parameters,
                       base_url="http://127.0.0.1:8000/fhir")


@pytest.mark.parametrize("read", [
    lambda r: sp.strings(r, "family"), lambda r: sp.exact(r, "_id"),
    lambda r: sp.tokens(r, "identifier"), lambda r: sp.codes_in(r, "role", "urn:x"),
    lambda r: sp.references(r, "patient", "Patient"), lambda r: sp.boolean(r, "active"),
    lambda r: sp.dates(r, "birthdate"), lambda r: sp.date_bounds(r, "date"),
    lambda r: sp.page(r, 20, 100), lambda r: sp.single(r, "status"),
], ids=["strings", "exact", "tokens", "codes_in", "references", "boolean", "dates",
        "date_bounds", "page", "single"])
def test_search_parameters(read: Callable[[FhirRequest], object]) -> None:
    never_escapes(lambda p: read(_request(p)), params)


# --- scopes, client assertions, access tokens ------------------------------------------------


def test_smart_scopes() -> None:
    scope_words = st.from_regex(
        r"(patient|user|system|launch|x)/(\*|[A-Za-z]{0,12})\.(\*|read|write|[cruds]{0,6}|x)",
        fullmatch=True) | words

    def parse(text: str) -> None:
        asked = parse_scopes(text)
        narrow(asked, backend_ceiling(()))
        resource_scopes(text)

    never_escapes(parse, st.lists(scope_words, max_size=60).map(" ".join) | words)


def test_client_assertion_header() -> None:
    never_escapes(tokens._x5c, compact_jws)


def test_claimed_client_of_a_token_request() -> None:
    forms = st.fixed_dictionaries({}, optional={"client_id": words,
                                                "client_assertion": compact_jws})
    never_escapes(_claimed_client, forms)


def test_bearer_tokens(attacked: Any) -> None:
    context = attacked.platform.tokens
    never_escapes(lambda token: tokens._token_claims(context, token), compact_jws)


# --- identifiers and codes -------------------------------------------------------------------


def test_national_identifier() -> None:
    numbers = st.one_of(words, st.from_regex(r"[0-9 ]{0,20}", fullmatch=True),
                        st.text(alphabet="0123456789٠١٢٣٤٥٦٧٨٩０１ \t", max_size=20))
    never_escapes(parse_luxembourg_national_id, numbers)


def test_presence_code_normalize() -> None:
    codes = words | st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZabcilo- \t", max_size=40)

    @FUZZ
    @given(codes)
    def holds(code: str) -> None:
        normalized = presence.normalize(code)  # never raises, not even ours
        assert normalized is None or (len(normalized) == 10 and normalized.isalnum()
                                      and normalized == normalized.upper())

    holds()


# --- form bodies (portal and OAuth) ----------------------------------------------------------


def _receive(body: bytes) -> Callable[[], Any]:
    chunks = [body[i:i + 1000] for i in range(0, len(body), 1000)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    return receive


def _form_request(body: bytes, content_type: str) -> Request:
    scope = {"type": "http", "method": "POST", "path": "/login", "query_string": b"",
             "headers": [(b"content-type", content_type.encode())]}
    return Request(scope, _receive(body))  # type: ignore[arg-type]


form_bodies = st.one_of(
    st.binary(max_size=10_000),
    st.lists(st.tuples(words, words), max_size=30).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")),
    st.integers(min_value=1, max_value=12_000).map(lambda n: b"a=" + b"%" * n),
    st.integers(min_value=1, max_value=200).map(lambda n: b"&".join([b"k=v"] * n)),
)


@pytest.mark.parametrize("read_form", [portal_form, oauth_form], ids=["portal", "oauth"])
def test_form_bodies(read_form: Callable[[Request], Any]) -> None:
    def parse(body: bytes) -> None:
        asyncio.run(read_form(_form_request(body, "application/x-www-form-urlencoded")))

    never_escapes(parse, form_bodies)


# --- the detached JWS signature of a document ------------------------------------------------


def test_detached_signature_verifier(attacked: Any) -> None:
    now = datetime.now(UTC)
    signatures_ = compact_jws.map(str.encode) | st.binary(max_size=2000)

    def verify(signature: bytes) -> None:
        with attacked.platform.unit_of_work() as uow:
            signatures.verify_detached(uow, signature, b"%PDF-1.7 content", now)

    never_escapes(verify, signatures_)


# --- size limits come before parsing ---------------------------------------------------------


def test_size_limits_are_enforced_before_parsing(attacked: Any) -> None:
    with pytest.raises(TooLarge):  # nesting is counted on the raw text, before json.loads
        parse_json(b"[" * 10_000 + b"]" * 10_000, max_depth=32)
    with pytest.raises(InvalidInput, match="digits"):  # before int() meets 4,300 digits
        parse_json(b'{"n":' + b"9" * 5000 + b"}", max_depth=32)
    with pytest.raises(InvalidInput, match="longer than"):
        sp.values(_request((("family", "x" * (sp.MAX_VALUE_LENGTH + 1)),)), "family")
    with pytest.raises(InvalidInput, match="at most"):  # conditions, before any SQL
        sp.values(_request((("family", "a"),) * (sp.MAX_REPETITIONS + 1)), "family")
    with pytest.raises(InvalidInput, match="at most"):
        sp.strings(_request((("family", ",".join("a" * (sp.MAX_ALTERNATIVES + 1))),)), "family")
    with pytest.raises(InvalidInput, match="at most"):
        parse_scopes(" ".join(["system/Patient.rs"] * 51))
    assert presence.normalize("A" * (presence.MAX_CODE_CHARACTERS + 1)) is None
    with attacked.platform.unit_of_work() as uow, pytest.raises(signatures.InvalidSignature,
                                                             match="larger"):
        signatures.verify_detached(uow, b"a" * (signatures.MAX_SIGNATURE_BYTES + 1), b"",
                                   datetime.now(UTC))
    with attacked.platform.unit_of_work() as uow, pytest.raises(tokens.InvalidClient,
                                                             match="too large"):
        tokens.authenticate_client(uow, attacked.platform.tokens,
                                   assertion_type=tokens.ASSERTION_TYPE,
                                   assertion="a" * (tokens.MAX_ASSERTION_BYTES + 1))
    with pytest.raises(CareVaultError, match="too large"):
        asyncio.run(portal_form(_form_request(b"a" * 9000, "application/x-www-form-urlencoded")))
    with pytest.raises(InvalidInput, match="exceeds"):
        asyncio.run(oauth_form(_form_request(b"a" * 40_000, "application/x-www-form-urlencoded")))


# --- planted bugs: the property catches them -------------------------------------------------


def test_a_parser_that_leaks_a_value_error_is_caught() -> None:
    def leaky(text: str) -> object:
        if "=" in text:  # the planted bug: a parse that is not guarded
            return int(text.split("=", 1)[1])
        return parse_scopes(text)

    with pytest.raises(ValueError, match="invalid literal"):
        never_escapes(leaky, words)


def test_a_bundle_reader_that_leaks_a_key_error_is_caught() -> None:
    def leaky(bundle: dict[str, Any]) -> object:
        entries = bundle.get("entry")
        if isinstance(entries, list) and entries and isinstance(entries[0], dict):
            return entries[0]["resource"]  # the planted bug: a key taken for granted
        raise InvalidInput("no entry")

    bundles = st.fixed_dictionaries({"entry": st.lists(st.dictionaries(
        st.sampled_from(["resource", "fullUrl"]), json_values, max_size=2), max_size=2)})
    with pytest.raises(KeyError):
        never_escapes(leaky, bundles)
