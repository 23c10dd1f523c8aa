"""Patient apps, on a unit of work in memory: registration refuses unsafe redirect URIs, an
authorization request is checked before anything is shown (unknown app, foreign redirect URI,
no PKCE, mixed scopes), and an approval stores only the code's hash and sends the browser back
to the registered URI with the state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from carevault.domain.errors import InvalidInput, NotFound
from carevault.services.patient_apps import (
    CODE_LIFETIME,
    approve,
    approve_request,
    check_request,
    register_app,
    request_in_force,
    requested_scopes,
)
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CALLBACK = "https://app.example/cb"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork()


@pytest.fixture
def client_id(uow: FakeUnitOfWork) -> str:
    return register_app(uow, " My app ", [CALLBACK, "http://127.0.0.1:8765/cb"], NOW)


def params(client_id: str, changed: dict[str, str] | None = None) -> dict[str, str]:
    base = {"client_id": client_id, "redirect_uri": CALLBACK, "response_type": "code",
            "code_challenge_method": "S256", "code_challenge": CHALLENGE,
            "scope": "openid patient/Patient.rs launch/patient", "state": "s-1"}
    return {**base, **(changed or {})}


def test_an_app_is_registered_with_its_name_trimmed(uow: FakeUnitOfWork, client_id: str) -> None:
    stored = uow.apps.clients[client_id]
    assert client_id.startswith("app-") and stored.name == "My app" and uow.commits == 1


@pytest.mark.parametrize(("name", "uris"), [
    ("", [CALLBACK]),
    ("x" * 201, [CALLBACK]),
    ("App", []),
    ("App", ["http://app.example/cb"]),  # plain HTTP off the loopback
    ("App", ["https://app.example/cb#frag"]),
    ("App", ["/relative/cb"]),
])
def test_unsafe_registrations_are_refused(uow: FakeUnitOfWork, name: str,
                                          uris: list[str]) -> None:
    with pytest.raises(InvalidInput):
        register_app(uow, name, uris, NOW)
    assert uow.apps.clients == {} and uow.commits == 0


def test_a_well_formed_request_is_ready_to_show(uow: FakeUnitOfWork, client_id: str) -> None:
    request = check_request(uow, params(client_id))
    assert (request.client_name, request.redirect_uri, request.state) == ("My app", CALLBACK,
                                                                          "s-1")
    assert request.scope_context == "patient"


@pytest.mark.parametrize(("changed", "error"), [
    ({"client_id": "app-unknown"}, NotFound),
    ({"redirect_uri": "https://evil.example/cb"}, InvalidInput),
    ({"response_type": "token"}, InvalidInput),
    ({"code_challenge_method": "plain"}, InvalidInput),
    ({"code_challenge": "short"}, InvalidInput),
    ({"state": "s" * 501}, InvalidInput),
    ({"scope": "openid"}, InvalidInput),
    ({"scope": "patient/Patient.rs system/Patient.rs"}, InvalidInput),
])
def test_a_bad_request_is_refused_before_anything_is_shown(
        uow: FakeUnitOfWork, client_id: str, changed: dict[str, str], error: type) -> None:
    with pytest.raises(error):
        check_request(uow, params(client_id, changed))


def test_a_disabled_app_is_unknown(uow: FakeUnitOfWork, client_id: str) -> None:
    from dataclasses import replace
    uow.apps.clients[client_id] = replace(uow.apps.clients[client_id], disabled_at=NOW)
    with pytest.raises(NotFound):
        check_request(uow, params(client_id))


def test_scopes_are_normalized_identity_first() -> None:
    assert requested_scopes("patient/Patient.rs openid openid") == "openid patient/Patient.rs"


def test_an_approval_stores_the_codes_hash_and_returns_to_the_app(
        uow: FakeUnitOfWork, client_id: str) -> None:
    request = check_request(uow, params(client_id))
    url = approve(uow, request, "acc-1", "pat-1", NOW)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == CALLBACK
    query: dict[str, Any] = parse_qs(parts.query)
    [code] = query["code"]
    assert query["state"] == ["s-1"]
    [stored] = uow.apps.codes.values()
    assert stored.code_hash != code and code not in stored.code_hash
    assert (stored.account_id, stored.patient_id, stored.kind) == ("acc-1", "pat-1", "patient")
    assert stored.expires_at == NOW + CODE_LIFETIME and stored.used_at is None


def test_the_consent_page_checks_and_approves_through_units_it_does_not_open(
        uow: FakeUnitOfWork, client_id: str) -> None:
    """`request_in_force` and `approve_request` open their own unit of work: the check commits
    nothing, the approval commits its code; an unknown app is refused before anything."""
    commits = uow.commits
    request = request_in_force(lambda: uow, params(client_id))
    assert request == check_request(uow, params(client_id)) and uow.commits == commits
    url = approve_request(lambda: uow, request, "acc-2", None, NOW, kind="representative")
    [stored] = uow.apps.codes.values()
    assert (stored.account_id, stored.patient_id, stored.kind) == ("acc-2", None,
                                                                   "representative")
    assert url.startswith(CALLBACK + "?code=") and uow.commits == commits + 1
    with pytest.raises(NotFound):
        request_in_force(lambda: uow, params("app-unknown"))
