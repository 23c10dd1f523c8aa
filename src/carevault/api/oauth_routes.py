"""OAuth 2 / SMART on FHIR endpoints: token, introspection, revocation (discovery and the
signing keys: `carevault.api.oauth_discovery`).

Answers follow RFC 6749 §5.2 (``{"error", "error_description"}``) rather than FHIR, because
OAuth clients expect them. Every token request, granted or refused, is recorded in the audit
log before it is answered; if it cannot be, the answer is 503.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from carevault.api.access import TokenBucketLimiter
from carevault.api.errors import NO_STORE, oauth_error
from carevault.api.oauth_discovery import discovery_router
from carevault.api.openapi import OAUTH_ERROR, answer, form
from carevault.api.route_door import TOKEN_REQUEST, Audited, access, admitted
from carevault.domain.errors import CareVaultError, InvalidInput, RateLimited
from carevault.services.patient_apps import InvalidGrant
from carevault.services.token_endpoint import TokenEndpoint
from carevault.services.tokens import (
    ASSERTION_TYPE,
    ActorRefused,
    InvalidClient,
    NotTheClients,
    ScopeRefused,
)

MAX_FORM_BYTES = 32_768
# RFC 7662 §2.1 asks for client authentication; ours is SMART's private_key_jwt, sent in the
# form (RFC 7523), which has no HTTP authentication scheme of its own: the challenge names it.
INTROSPECTION_CHALLENGE = 'private_key_jwt realm="CareVault", error="invalid_client"'
# RFC 7009 §2.1: revocation authenticates the client as the token endpoint does: a confidential
# client with its client assertion, a public client (a patient app) with its client_id.
REVOCATION_CHALLENGE = 'private_key_jwt realm="CareVault", error="invalid_client"'


TOKEN = {
    "type": "object",
    "required": ["access_token", "token_type", "expires_in", "scope"],
    "properties": {
        "access_token": {"type": "string"},
        "token_type": {"const": "Bearer"},
        "expires_in": {"type": "integer"},
        "scope": {"type": "string"},
        "patient": {"type": "string"},
    },
}
INTROSPECTION = {
    "type": "object",
    "required": ["active"],
    "properties": {"active": {"type": "boolean"}},
}
NO_STORE_HEADERS = {"Cache-Control": "no-store"}
_OAUTH_STATUS = {
    400: "invalid_request, invalid_scope, invalid_grant, unsupported_grant_type, "
    "unauthorized_client (revocation: the token is another client's)",
    401: "invalid_client",
    429: "slow_down (Retry-After)",
    503: "the request could not be recorded; nothing was done",
}


def oauth_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """RFC 6749 §5.2 error answers, as the OpenAPI document declares them."""
    return {status: answer(_OAUTH_STATUS[status], schema=OAUTH_ERROR) for status in statuses}


_oauth_error = oauth_error
# Every token request the service decides on is recorded by the route door, granted or refused
# (`recorded`); one throttled or malformed before that is not.
TOKEN_AUDITED = Audited("clinical", "authentication", "E", "token")


async def _form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidInput("send the request as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise InvalidInput(f"the request body exceeds {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("the form is malformed") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise InvalidInput(f"parameter {key!r} appears twice")  # RFC 6749 §3.2
        form[key] = value
    return form


def _claimed_client(form: dict[str, str]) -> str:
    """The client a token request claims to be, before anything is verified (for throttling
    only): the form's client_id, or the unverified ``iss`` of the client assertion."""
    if form.get("client_id"):
        return form["client_id"][:128]
    assertion = form.get("client_assertion", "")
    try:
        payload = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        issuer = claims.get("iss") if isinstance(claims, dict) else None
    except (IndexError, ValueError, UnicodeDecodeError, RecursionError):  # deep JSON: Recursion…
        issuer = None
    return str(issuer)[:128] if issuer else "unknown"


def oauth_router(
    endpoint: TokenEndpoint,
    limiter: TokenBucketLimiter,
    introspection_limiter: TokenBucketLimiter | None = None,
) -> APIRouter:
    router = APIRouter()
    introspections = introspection_limiter or limiter
    tokens = endpoint.context

    def recorded(
        request: Request, answer: Response, outcome: str, detail: dict[str, str], interaction: str
    ) -> Response:
        """The answer, noted for the door's one record: the door sends it once the record is
        durable, and 503 and nothing else otherwise."""
        status = 200 if outcome == "0" else 400 if answer.status_code == 400 else 401
        admitted(request).note(outcome, detail, interaction=interaction, status=status)
        return answer

    router.include_router(discovery_router(tokens))

    @router.post(
        "/oauth/token",
        responses={
            200: answer("an access token", schema=TOKEN, headers=NO_STORE_HEADERS),
            **oauth_errors(400, 401, 429, 503),
        },
        openapi_extra=form(
            (
                "grant_type",
                "scope",
                "client_assertion_type",
                "client_assertion",
                "code",
                "redirect_uri",
                "client_id",
                "code_verifier",
            ),
            ("grant_type",),
        ),
    )
    @access(TOKEN_REQUEST, TOKEN_AUDITED)
    async def token(request: Request) -> Response:
        client = request.client.host if request.client else ""
        try:
            limiter.check(f"ip:{client}")
            form = await _form(request)
        except RateLimited as error:
            return _oauth_error(
                429, "slow_down", error.message, {"Retry-After": str(error.retry_after)}
            )
        except CareVaultError as error:
            return _oauth_error(400, "invalid_request", error.message)
        if form.get("grant_type") == "authorization_code":
            return code_grant(request, form)
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(
                400, "unsupported_grant_type", "use client_credentials or authorization_code"
            )

        def refused(error: InvalidClient | InvalidInput) -> tuple[Response, dict[str, str]]:
            if isinstance(error, InvalidClient):
                answer = _oauth_error(401, "invalid_client", error.message)
            else:
                code = "invalid_scope" if error.expression == "scope" else "invalid_request"
                answer = _oauth_error(400, code, error.message)
            return answer, {"reason": error.message[:300]}

        try:
            # Per client as well as per address, so that a stolen key used from many addresses
            # is slowed down too; the client is charged once it proved who it is: charged for
            # the client it claims, anyone could hold a hospital's requests back by claiming it.
            grant = endpoint.issue_backend_token(
                assertion_type=form.get("client_assertion_type", ""),
                assertion=form.get("client_assertion", ""),
                scope=form.get("scope", ""),
                authenticated=lambda client_id: limiter.check(f"client:{client_id}"),
            )
        except RateLimited as error:  # as the address's limit above: nothing was issued
            return _oauth_error(
                429, "slow_down", error.message, {"Retry-After": str(error.retry_after)}
            )
        except (ScopeRefused, ActorRefused) as refusal:
            # The client proved who it is: the refusal is its own (the conformance sandbox
            # counts it against the client's system).
            answer, detail = refused(refusal)
            outcome, detail["client_id"] = "4", refusal.client_id
        except (InvalidClient, InvalidInput) as error:
            # Before the client authenticated: whose request it was is unverified, recorded as
            # the client it claimed (throttling, the officer's eye), and counted against nobody.
            answer, detail = refused(error)
            outcome, detail["claimed-client"] = "4", _claimed_client(form)
        else:
            answer = JSONResponse(
                {
                    "access_token": grant.access_token,
                    "token_type": "Bearer",
                    "expires_in": grant.expires_in,
                    "scope": grant.scope,
                },
                headers=NO_STORE,
            )
            outcome, detail = "0", {"scope": grant.scope, "client_id": grant.client_id}
        return recorded(request, answer, outcome, detail, "token")

    def code_grant(request: Request, form: dict[str, str]) -> Response:
        """A patient app trades its code and PKCE verifier for a token on its patient."""
        try:
            grant, patient = endpoint.exchange_code(
                code=form.get("code", ""),
                redirect_uri=form.get("redirect_uri", ""),
                client_id=form.get("client_id", ""),
                code_verifier=form.get("code_verifier", ""),
            )
        except InvalidGrant as error:
            answer: Response = _oauth_error(400, "invalid_grant", error.message)
            outcome, detail = "4", {"reason": error.message[:300]}
        else:
            answer = JSONResponse(
                {
                    "access_token": grant.access_token,
                    "token_type": "Bearer",
                    "expires_in": grant.expires_in,
                    "scope": grant.scope,
                    # SMART launch context; an operator's token has none.
                    **({"patient": patient} if patient else {}),
                },
                headers=NO_STORE,
            )
            outcome, detail = "0", {"scope": grant.scope, "client_id": form.get("client_id", "")}
        return recorded(request, answer, outcome, detail, "authorization-code")

    async def _token_form(request: Request) -> dict[str, str] | Response:
        """The form of a request about a token, once it names one; the error answer else."""
        try:
            form = await _form(request)
        except CareVaultError as error:
            return _oauth_error(400, "invalid_request", error.message)
        if not form.get("token"):
            return _oauth_error(400, "invalid_request", "the token parameter is required")
        return form

    @router.post(
        "/oauth/introspect",
        responses={
            200: answer("what the client may learn of the token", schema=INTROSPECTION),
            **oauth_errors(400, 401, 429, 503),
        },
        openapi_extra=form(
            ("token", "client_assertion_type", "client_assertion"),
            ("token", "client_assertion_type", "client_assertion"),
        ),
    )
    @access(TOKEN_REQUEST, TOKEN_AUDITED)
    async def introspection(request: Request) -> Response:
        """RFC 7662, for an authenticated client only (§2.1: no token scanning): the client
        assertion of the token endpoint, checked the same way (its jti works once). What
        each client may learn: `introspect`."""
        address = request.client.host if request.client else ""
        try:
            introspections.check(f"ip:{address}")
            form = await _form(request)
        except RateLimited as error:
            return _oauth_error(
                429, "slow_down", error.message, {"Retry-After": str(error.retry_after)}
            )
        except CareVaultError as error:
            return _oauth_error(400, "invalid_request", error.message)
        value = form.get("token")
        if not value:
            return _oauth_error(400, "invalid_request", "the token parameter is required")
        try:
            asker = endpoint.authenticate_client(  # its jti is spent
                assertion_type=form.get("client_assertion_type", ""),
                assertion=form.get("client_assertion", ""),
                audiences=(f"{tokens.issuer}/oauth/introspect",),
            )
        except InvalidClient as error:
            refused = _oauth_error(
                401,
                "invalid_client",
                "authenticate the client with a private_key_jwt client assertion "
                f"(client_assertion_type {ASSERTION_TYPE}): {error.message}",
                {"WWW-Authenticate": INTROSPECTION_CHALLENGE},
            )
            detail = {"reason": error.message[:300]}
            return recorded(request, refused, "4", detail, "token-introspection")
        try:
            introspections.check(f"client:{asker.client_id}")
        except RateLimited as error:
            return _oauth_error(
                429, "slow_down", error.message, {"Retry-After": str(error.retry_after)}
            )
        answer: dict[str, Any] = endpoint.introspect(value, asker)
        detail = {"client_id": asker.client_id, "active": "true" if answer["active"] else "false"}
        return recorded(
            request, JSONResponse(answer, headers=NO_STORE), "0", detail, "token-introspection"
        )

    def revoking_client(form: dict[str, str]) -> str:
        """The client a revocation request authenticates as (RFC 7009 §2.1), as at the token
        endpoint: a client assertion (its jti is spent), or a registered public client's
        client_id; InvalidClient otherwise."""
        named = form.get("client_id", "")
        if form.get("client_assertion") or form.get("client_assertion_type"):
            identity = endpoint.authenticate_client(
                assertion_type=form.get("client_assertion_type", ""),
                assertion=form.get("client_assertion", ""),
                audiences=(f"{tokens.issuer}/oauth/revoke",),
            )
            if named and named != identity.client_id:
                raise InvalidClient("client_id is not the client of the assertion")
            return identity.client_id
        if named and endpoint.public_client(named):
            return named
        raise InvalidClient(
            "authenticate the client as at the token endpoint: a private_key_jwt client "
            f"assertion (client_assertion_type {ASSERTION_TYPE}), or a registered public "
            "client's client_id"
        )

    @router.post(
        "/oauth/revoke",
        response_class=Response,
        responses={
            200: answer("revoked, or not a token (RFC 7009 §2.2)", None),
            **oauth_errors(400, 401, 429, 503),
        },
        openapi_extra=form(
            ("token", "token_type_hint", "client_id", "client_assertion_type", "client_assertion"),
            ("token",),
        ),
    )
    @access(TOKEN_REQUEST, TOKEN_AUDITED)
    async def revocation(request: Request) -> Response:
        """RFC 7009 for an authenticated client only (§2.1): a client revokes its own tokens,
        never another client's (refused with ``unauthorized_client``, whatever the state of
        that token); an unknown or invalid token is no error (§2.2)."""
        address = request.client.host if request.client else ""
        try:
            introspections.check(f"ip:{address}")
        except RateLimited as error:
            return _oauth_error(
                429, "slow_down", error.message, {"Retry-After": str(error.retry_after)}
            )
        form = await _token_form(request)
        if isinstance(form, Response):
            return form
        value = form["token"]
        try:
            client_id = revoking_client(form)
        except InvalidClient as error:
            refused = _oauth_error(
                401, "invalid_client", error.message, {"WWW-Authenticate": REVOCATION_CHALLENGE}
            )
            detail = {"reason": error.message[:300]}
            return recorded(request, refused, "4", detail, "token-revocation")
        try:
            revoked = endpoint.revoke(value, client_id)
        except NotTheClients as error:
            refused = _oauth_error(400, "unauthorized_client", error.message)
            detail = {"client_id": client_id, "reason": error.message}
            return recorded(request, refused, "4", detail, "token-revocation")
        return recorded(
            request,
            Response(status_code=200, headers=NO_STORE),
            "0",
            {"client_id": client_id, "revoked": revoked or "unknown token"},
            "token-revocation",
        )

    return router
