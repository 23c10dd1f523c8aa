"""FHIR terminology: the affinity domain's value sets — ``ValueSet`` read, search and ``$expand``.

A connecting system discovers here which class, type, format, practice setting, facility type
and confidentiality codes a document must carry. The value sets are configuration, not
records: like the directories they hold no medical content, so any authenticated caller the
engine admits to the directories may read them (`ValueSetHandler.access_need`).

``$expand`` (GET; ``ValueSet/$expand?url=…`` or ``ValueSet/[id]/$expand``) takes ``filter``
(case- and accent-insensitive substring of a code or of a display in any language), ``count``
and ``offset`` (paging of the expansion), ``displayLanguage`` (``en`` or ``fr``, a region
subtag such as ``fr-LU`` is accepted) and ``valueSetVersion``; any other parameter is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from carevault.api.fhir import search as sp
from carevault.api.fhir.door import (
    AccessNeed,
    FhirRequest,
    FhirResponse,
    Interaction,
    Operation,
    ResourceHandler,
    SearchParam,
    Target,
    reading,
)
from carevault.domain.affinity import LANGUAGES, AffinityDomain, ValueSetCodes
from carevault.domain.authorization import Action
from carevault.domain.errors import InvalidInput, NotFound
from carevault.domain.numbers import whole_number
from carevault.domain.queries import SearchResult, Stored
from carevault.domain.text import fold
from carevault.fhirmodel.valueset import (
    EXPAND_DEFINITION,
    ExpansionRequest,
    JsonObject,
    value_set,
    valueset_url,
)

if TYPE_CHECKING:
    from carevault.services.unit_of_work import UnitOfWork

__all__ = [
    "BUILTIN_AFFINITY_DOMAIN",
    "MAX_EXPANSION_COUNT",
    "ValueSetHandler",
    "load_affinity_domain",
]

BUILTIN_AFFINITY_DOMAIN = "affinity-domain.json"  # package data of carevault.config
MAX_EXPANSION_COUNT = 1000

EXPAND_PARAMETERS = (
    SearchParam("url", "uri", "The canonical URL of the value set"),
    SearchParam("valueSetVersion", "string", "The version of the affinity domain"),
    SearchParam("filter", "string", "Words the display must start with"),
    SearchParam("count", "number", "How many codes to return"),
    SearchParam("offset", "number", "How many codes to skip"),
    SearchParam("displayLanguage", "token", "en or fr"),
)
_EXPAND_PARAMS = frozenset({p.name for p in EXPAND_PARAMETERS} | {"_format"})
_LANGUAGE_TAG = re.compile(r"^([A-Za-z]{2,3})(?:-[A-Za-z0-9]{1,8})*$")


def load_affinity_domain(path: Path | None) -> AffinityDomain:
    """The deployment's affinity domain file, or the built-in one when ``path`` is None; a
    missing or malformed file raises `InvalidInput` naming the file and the faulty entry."""
    where = str(path) if path is not None else f"{BUILTIN_AFFINITY_DOMAIN} (built-in)"
    try:
        if path is None:
            text = (
                resources.files("carevault.config")
                .joinpath(BUILTIN_AFFINITY_DOMAIN)
                .read_text("utf-8")
            )
        else:
            text = path.read_text(encoding="utf-8")
        return AffinityDomain.from_mapping(json.loads(text))
    except (OSError, ValueError) as error:
        raise InvalidInput(f"the affinity domain file {where} cannot be used: {error}") from None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ValueSetHandler(ResourceHandler):
    """The affinity domain's value sets: read, search (``_id``, ``url``, ``name``), ``$expand``."""

    resource_type = "ValueSet"
    interactions = frozenset({Interaction.READ, Interaction.SEARCH})
    search_params = (
        SearchParam("_id", "token", "Logical id: xds-classcode, xds-typecode, xds-formatcode, …"),
        SearchParam("url", "uri", "Canonical URL, exact; url|version names a version"),
        SearchParam("name", "string", "Computable name, case- and accent-insensitive prefix"),
    )
    operations = (
        Operation(
            "expand",
            EXPAND_DEFINITION,
            False,
            frozenset({"GET"}),
            "The codes of the value set named by url; filter, count, offset, "
            "displayLanguage (en, fr), valueSetVersion",
            parameters=EXPAND_PARAMETERS,
            gives="ValueSet",
        ),
        Operation(
            "expand",
            EXPAND_DEFINITION,
            True,
            frozenset({"GET"}),
            "The codes of this value set; filter, count, offset, displayLanguage (en, fr)",
            parameters=EXPAND_PARAMETERS,
            gives="ValueSet",
        ),
    )

    def __init__(
        self,
        domain: AffinityDomain,
        *,
        clock: Callable[[], datetime] = _utc_now,
        default_page_size: int = 20,
        max_page_size: int = 100,
    ) -> None:
        self.domain = domain
        self.clock = clock
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        # $expand only reads; `reading` would call every operation a write.
        if request.interaction is Interaction.OPERATION:
            return AccessNeed(Target.DIRECTORY, Action.READ)
        return AccessNeed(Target.DIRECTORY, reading(request))

    def _resource(self, codes: ValueSetCodes, asked: ExpansionRequest | None = None) -> JsonObject:
        return value_set(codes, self.domain.version, self.clock(), asked)

    def read(self, request: FhirRequest) -> FhirResponse:
        assert request.resource_id is not None
        return FhirResponse(200, self._resource(self.domain.valueset(request.resource_id)))

    def search(self, request: FhirRequest) -> FhirResponse:
        if sp.values(request, "_include"):
            raise InvalidInput("ValueSet has no _include", expression="_include")
        ids = sp.exact(request, "_id")
        urls = sp.exact(request, "url")
        names = sp.strings(request, "name")
        paging = sp.page(request, self.default_page_size, self.max_page_size)
        found = [
            codes
            for codes in self.domain.valuesets.values()
            if all(codes.id in alternatives for alternatives in ids)
            and all(any(self._has_url(codes, u) for u in alternatives) for alternatives in urls)
            and all(any(fold(codes.name).startswith(p) for p in alts) for alts in names)
        ]
        page = found[paging.offset : paging.offset + paging.count]
        result = SearchResult(
            total=len(found),
            items=[Stored(codes.id, 1, self._resource(codes)) for codes in page],
        )
        return FhirResponse(200, sp.searchset(request, result, paging))

    def _has_url(self, codes: ValueSetCodes, value: str) -> bool:
        url, bar, version = value.partition("|")
        return url == valueset_url(codes.id) and (not bar or version == self.domain.version)

    def operation(self, request: FhirRequest) -> FhirResponse:
        """``$expand``, at type level (``url`` names the value set) or on ``ValueSet/[id]``."""
        unknown = sorted(request.param_names() - _EXPAND_PARAMS)
        if unknown:
            raise InvalidInput(
                f"$expand has no parameter {unknown[0]!r}; supported: "
                f"{', '.join(sorted(_EXPAND_PARAMS))}",
                expression=unknown[0],
            )
        url = _parameter(request, "url")
        url_version: str | None = None
        if url is not None:
            url, bar, after = url.partition("|")
            url_version = after if bar else None
        if request.resource_id is not None:
            codes = self.domain.valueset(request.resource_id)
            if url is not None and url != valueset_url(codes.id):
                raise InvalidInput(
                    f"url {url!r} is not the url of ValueSet/{codes.id} ({valueset_url(codes.id)})",
                    expression="url",
                )
        elif url is None:
            raise InvalidInput(
                "ValueSet/$expand needs the url of the value set (or use ValueSet/[id]/$expand)",
                expression="url",
            )
        else:
            codes = self._by_url(url)
        version = _parameter(request, "valueSetVersion")
        for asked_version, name in ((url_version, "url"), (version, "valueSetVersion")):
            if asked_version is not None and asked_version != self.domain.version:
                raise NotFound(
                    f"ValueSet/{codes.id} has no version {asked_version!r}; "
                    f"the current one is {self.domain.version!r}",
                    expression=name,
                )
        asked = ExpansionRequest(
            language=_language(_parameter(request, "displayLanguage")),
            text_filter=_text_filter(_parameter(request, "filter")),
            offset=_whole(request, "offset", sp.MAX_OFFSET) or 0,
            count=_whole(request, "count", MAX_EXPANSION_COUNT),
        )
        return FhirResponse(200, self._resource(codes, asked))

    def _by_url(self, url: str) -> ValueSetCodes:
        for codes in self.domain.valuesets.values():
            if valueset_url(codes.id) == url:
                return codes
        raise NotFound(f"no value set has the url {url!r}", expression="url")


def _parameter(request: FhirRequest, name: str) -> str | None:
    """The one value of an ``$expand`` parameter, or None; repeated or empty is refused."""
    found = [value for key, value in request.params if key == name]
    if not found:
        return None
    if len(found) > 1:
        raise InvalidInput(f"$expand parameter {name!r} may appear only once", expression=name)
    value = found[0]
    if not value.strip():
        raise InvalidInput(f"$expand parameter {name!r} is empty", expression=name)
    if len(value) > sp.MAX_VALUE_LENGTH:
        raise InvalidInput(
            f"$expand parameter {name!r} is longer than {sp.MAX_VALUE_LENGTH} characters",
            expression=name,
        )
    return value


def _whole(request: FhirRequest, name: str, maximum: int) -> int | None:
    value = _parameter(request, name)
    if value is None:
        return None
    number = whole_number(value, 9)
    if number is None or number > maximum:
        raise InvalidInput(
            f"$expand parameter {name!r} must be a whole number from 0 to {maximum}",
            expression=name,
        )
    return number


def _language(value: str | None) -> str:
    if value is None:
        return LANGUAGES[0]
    match = _LANGUAGE_TAG.match(value)
    language = match.group(1).lower() if match else None
    if language is None or language not in LANGUAGES:
        raise InvalidInput(
            f"displayLanguage {value!r} is not available; available: {', '.join(LANGUAGES)}",
            expression="displayLanguage",
        )
    return language


def _text_filter(value: str | None) -> str | None:
    return None if value is None else value.strip()
