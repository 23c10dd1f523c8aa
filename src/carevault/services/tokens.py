"""SMART Backend Services: client assertions in, short-lived signed access tokens out.

A client (a professional's card, or a hospital system acting for one of its professionals)
proves possession of its certificate's key by signing a JWT assertion (RFC 7523, as SMART's
``private_key_jwt``) that carries the certificate chain in its ``x5c`` header. We check the
chain up to the platform CA and the CRL, the signature, the claims and that the assertion is
fresh and used once; then issue an ES256 access token bound to the scopes granted. Every token
is recorded, so it can be revoked and introspected, and every check is made again on each use:
a revoked certificate or a suspended licence stops live tokens at once.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry

from carevault.adapters.keys.token_signer import TokenSigningKey
from carevault.adapters.storage.oauth_store import IssuedToken
from carevault.domain.errors import CareVaultError, InvalidInput, NotAuthenticated
from carevault.domain.queries import Page, RoleQuery
from carevault.domain.scopes import (
    Scope,
    backend_ceiling,
    narrow,
    parse_scopes,
    resource_scopes,
)
from carevault.fhirmodel.directory import LICENCE_STATUS_URL
from carevault.services.authorities import NO_POWERS, powers_of
from carevault.services.bounded_memo import BoundedMemo
from carevault.services.pki import CertificateRejected, ClientIdentity, validate_client_chain
from carevault.services.unit_of_work import UnitOfWork

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The roles of operators' tokens: never any clinical content (see `carevault.api.access`).
OPERATOR_ROLES = frozenset({"operator", "security-officer", "registrar"})
CLOCK_SKEW = timedelta(seconds=60)
MAX_ASSERTION_LIFETIME = timedelta(minutes=5)
TOKEN_LIFETIME = timedelta(minutes=5)
MAX_ASSERTION_BYTES = 16_384

# joserfc bounds a JWS header at 512 bytes; an x5c chain of two certificates needs a few KB.
_ASSERTIONS = JWSRegistry(algorithms=["ES256"])
_ASSERTIONS.max_header_length = 8_192


class InvalidClient(NotAuthenticated):
    """The client could not be authenticated (RFC 6749 ``invalid_client``)."""


class ScopeRefused(InvalidInput):
    """A token request refused for its scope once its client had authenticated: whose request
    it was is known (``client_id``), unlike a refusal of `authenticate_client`, where only the
    client it claims to be is (and anyone can claim any)."""

    def __init__(self, message: str, client_id: str) -> None:
        super().__init__(message, expression="scope")
        self.client_id = client_id


class ActorRefused(InvalidClient):
    """A system's token request refused for the professional it names, once the system had
    authenticated (``client_id``, as `ScopeRefused`)."""

    def __init__(self, message: str, client_id: str) -> None:
        super().__init__(message, issue_code="security")
        self.client_id = client_id


class InvalidToken(NotAuthenticated):
    """A bearer token that is malformed, expired, revoked or otherwise unusable."""


@dataclass(frozen=True)
class TokenContext:
    key: TokenSigningKey
    issuer: str  # the platform's public base URL
    token_endpoint: str
    fhir_base: str
    clock: Callable[[], datetime]


@dataclass(frozen=True)
class Caller:
    """Who a valid access token speaks for."""

    client_id: str
    fhir_user: str  # Practitioner/<id>, or account:<id> for a patient or representative
    organization: str | None  # Organization/<id>, when a system acts for its professional
    acting_system: str | None  # the system's client_id when it acts for a professional
    scopes: tuple[Scope, ...]
    token_id: str
    patient: str | None = None  # a patient app's launch context: the only record it reaches
    representative: bool = False
    role: str | None = None  # operator or security-officer: never any clinical content


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    expires_in: int
    scope: str
    client_id: str = ""  # the authenticated client (a backend client; recorded with the grant)


def _fail(message: str) -> InvalidClient:
    return InvalidClient(message, issue_code="security")


def _x5c(assertion: str) -> list[bytes]:
    try:
        header = jws.extract_compact(assertion.encode("ascii"), registry=_ASSERTIONS).protected
    # Python's JSON parser raises RecursionError on a header nested a few thousand levels deep.
    except (JoseError, ValueError, UnicodeError, RecursionError) as error:
        raise _fail(f"the client assertion is not a compact JWS: {error}") from None
    if header.get("alg") != "ES256":
        raise _fail("the client assertion must be signed with ES256")
    chain = header.get("x5c")
    if not isinstance(chain, list) or not chain or len(chain) > 2:
        raise _fail("the client assertion header needs x5c: the certificate chain, leaf first")
    try:
        return [base64.b64decode(str(item), validate=True) for item in chain]
    except ValueError:
        raise _fail("x5c must hold base64 DER certificates") from None


def _timestamp(claims: dict[str, Any], name: str) -> datetime:
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(f"the client assertion needs a numeric {name!r} claim")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise _fail(f"the {name!r} claim is out of range") from None


def _check_practitioner(uow: UnitOfWork, practitioner_id: str) -> None:
    stored = uow.directory.practitioner(practitioner_id)
    if stored is None:
        raise _fail("the professional is not in the directory")
    resource = stored.resource
    status = next(
        (
            e.get("valueCode")
            for e in resource.get("extension", [])
            if e.get("url") == LICENCE_STATUS_URL
        ),
        "active",
    )
    if not resource.get("active", True) or status != "active":
        raise _fail("the professional's licence is not active")


def _acts_for(uow: UnitOfWork, claims: dict[str, Any], organization_id: str) -> str:
    """A system must name the professional it acts for, who must belong to its organization."""
    act = claims.get("act")
    identifier = act.get("sub") if isinstance(act, dict) else None
    if not isinstance(identifier, str) or not identifier:
        raise _fail(
            "a system must name the professional it acts for in the 'act' claim "
            '({"sub": professional identifier})'
        )
    found = uow.directory.practitioner_ids_by_identifier([identifier])
    practitioner_id = found.get(identifier)
    if practitioner_id is None:
        raise _fail("the professional named in 'act' is not in the directory")
    _check_practitioner(uow, practitioner_id)
    roles = uow.directory.search_roles(
        RoleQuery(
            practitioner=[(practitioner_id,)], organization=[(organization_id,)], active=True
        ),
        Page(0, 1),
    )
    if roles.total == 0:
        raise _fail("the professional named in 'act' does not belong to this organization")
    return practitioner_id


@dataclass(frozen=True)
class AuthenticatedClient:
    """A client that proved possession of its certificate's key with a fresh assertion."""

    identity: ClientIdentity
    claims: dict[str, Any]


def authenticate_client(
    uow: UnitOfWork,
    ctx: TokenContext,
    *,
    assertion_type: str,
    assertion: str,
    audiences: tuple[str, ...] = (),
) -> AuthenticatedClient:
    """SMART's ``private_key_jwt`` (RFC 7523): the assertion's chain up to the platform CA and
    its CRL, its signature, its claims, a practitioner's licence, and its ``jti`` used once
    (in ``uow``: the caller commits). ``aud`` must be the token endpoint or one of
    ``audiences`` (another endpoint of this authorization server)."""
    if assertion_type != ASSERTION_TYPE:
        raise _fail(f"client_assertion_type must be {ASSERTION_TYPE}")
    if len(assertion) > MAX_ASSERTION_BYTES:
        raise _fail("the client assertion is too large")
    now = ctx.clock()
    try:
        identity = validate_client_chain(uow, _x5c(assertion), now)
    except CertificateRejected as error:
        raise _fail(f"the client certificate was refused: {error.message}") from None
    try:
        decoded = jwt.decode(
            assertion,
            ECKey.import_key(identity.public_key),
            algorithms=["ES256"],
            registry=_ASSERTIONS,
        )
    except (JoseError, ValueError, TypeError, RecursionError) as error:  # see _token_claims
        raise _fail(f"the client assertion's signature does not verify: {error}") from None
    claims = dict(decoded.claims)
    if claims.get("iss") != identity.client_id or claims.get("sub") != identity.client_id:
        raise _fail("iss and sub must both be the client_id of the certificate")
    audience = claims.get("aud")
    named = audience if isinstance(audience, list) else [audience]
    if not any(a == ctx.token_endpoint or a in audiences for a in named):
        raise _fail(
            " or ".join((f"aud must be the token endpoint {ctx.token_endpoint}", *audiences))
        )
    expires = _timestamp(claims, "exp")
    if expires <= now - CLOCK_SKEW:
        raise _fail("the client assertion has expired")
    if expires > now + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
        raise _fail("the client assertion may live at most 5 minutes")
    if "iat" in claims and _timestamp(claims, "iat") > now + CLOCK_SKEW:
        raise _fail("the client assertion was issued in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 8 <= len(jti) <= 255:
        raise _fail("the client assertion needs a jti of 8 to 255 characters")
    if identity.kind == "practitioner":
        assert identity.practitioner_id is not None
        _check_practitioner(uow, identity.practitioner_id)
    if not uow.oauth.use_assertion(identity.client_id, jti, expires + CLOCK_SKEW):
        raise _fail("this client assertion was already used (jti replay)")
    return AuthenticatedClient(identity, claims)


def issue_backend_token(
    uow: UnitOfWork,
    ctx: TokenContext,
    *,
    assertion_type: str,
    assertion: str,
    scope: str,
    authenticated: Callable[[str], None] | None = None,
) -> TokenGrant:
    """The ``client_credentials`` grant with a ``private_key_jwt`` client assertion; a refusal
    after the client authenticated is a `ScopeRefused` or an `ActorRefused`, which name it.
    Such a refusal still commits the spent assertion (nothing else is written before it): an
    assertion is used once, whatever the answer (RFC 7523 §3), so that a copy cannot be tried
    again with another scope or professional within its lifetime. ``authenticated`` is told
    the client's id once it proved it (a per-client rate limit: it may raise, and then nothing
    is issued nor spent)."""
    client = authenticate_client(uow, ctx, assertion_type=assertion_type, assertion=assertion)
    client_id = client.identity.client_id
    if authenticated is not None:
        authenticated(client_id)
    try:
        return _issue_backend_token(uow, ctx, client, scope)
    except InvalidClient as error:
        uow.commit()
        raise ActorRefused(error.message, client_id) from error
    except InvalidInput as error:
        uow.commit()
        raise ScopeRefused(error.message, client_id) from error


def _issue_backend_token(
    uow: UnitOfWork, ctx: TokenContext, client: AuthenticatedClient, scope: str
) -> TokenGrant:
    """The grant once the client authenticated: its scopes, and for a system the professional
    it acts for."""
    identity, claims = client.identity, client.claims
    now = ctx.clock()
    asked = parse_scopes(scope)
    if any(s.context != "system" for s in asked):
        raise InvalidInput("backend services may ask for system/ scopes only", expression="scope")
    if identity.kind == "practitioner":
        assert identity.practitioner_id is not None
        practitioner_id, acting_system, organization = identity.practitioner_id, None, None
        powers = NO_POWERS
    else:
        assert identity.organization_id is not None
        practitioner_id = _acts_for(uow, claims, identity.organization_id)
        acting_system = identity.client_id
        organization = f"Organization/{identity.organization_id}"
        powers = powers_of(uow, identity.organization_id)
    # Never more than the client's kind and its organization's registrations allow: what is
    # asked beyond that is left out, and the response's scope says what was granted.
    scopes = narrow(asked, backend_ceiling(powers.authorities))
    if not scopes:
        raise InvalidInput(
            f"none of the scopes asked for ({scope}) may be granted to this client; a "
            "professional's client may read (system/*.rs), publish documents "
            "(system/DocumentReference.cu) and record care events (system/Encounter.c)",
            expression="scope",
        )
    store = uow.oauth
    granted = " ".join(str(s) for s in scopes)
    token_id = uuid.uuid4().hex
    expires_at = now + TOKEN_LIFETIME
    payload: dict[str, Any] = {
        "iss": ctx.issuer,
        "sub": identity.client_id,
        "aud": ctx.fhir_base,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": token_id,
        "scope": granted,
        "client_id": identity.client_id,
        "fhirUser": f"{ctx.fhir_base}/Practitioner/{practitioner_id}",
    }
    if acting_system is not None:
        payload["act"] = {"sub": acting_system}
        payload["organization"] = organization
    token = jwt.encode(
        {"alg": "ES256", "kid": ctx.key.kid, "typ": "at+jwt"},
        payload,
        ctx.key.jwk,
        algorithms=["ES256"],
    )
    store.save_token(
        IssuedToken(
            token_id,
            identity.client_id,
            identity.serial,
            f"Practitioner/{practitioner_id}",
            granted,
            now,
            expires_at,
            None,
            None,
        )
    )
    uow.commit()
    return TokenGrant(token, int(TOKEN_LIFETIME.total_seconds()), granted, identity.client_id)


# Access tokens whose signature verified, with their claims. The ES256 verification costs more
# than the rest of a token check, and its outcome depends only on the token's bytes and our key,
# so a token that verified once is not verified again on its next request. Only the signature
# is remembered: expiry, revocation, the certificate and the licence are checked on every
# request, as before.
_VERIFIED: BoundedMemo[tuple[str, str], dict[str, Any]] = BoundedMemo(10_000)


def _token_claims(ctx: TokenContext, token: str) -> dict[str, Any]:
    if len(token) > MAX_ASSERTION_BYTES:
        raise InvalidToken("the access token is too large")
    known = _VERIFIED.get((ctx.key.kid, token))
    if known is not None:
        return dict(known)
    try:
        decoded = jwt.decode(token, ctx.key.public_jwk, algorithms=["ES256"])
    # joserfc raises TypeError on a header whose "crit" is not a list, before any signature
    # check: anyone could send one. (RecursionError: see _x5c.)
    except (JoseError, ValueError, TypeError, RecursionError) as error:
        raise InvalidToken(f"the access token does not verify: {error}") from None
    claims = dict(decoded.claims)
    _VERIFIED.add((ctx.key.kid, token), dict(claims))
    return claims


def authenticate(uow: UnitOfWork, ctx: TokenContext, token: str) -> Caller:
    """Check a bearer token completely, on every request: signature, issuer, audience, expiry,
    and that neither the token nor its certificate was revoked and the licence is active."""
    claims = _token_claims(ctx, token)
    now = ctx.clock()
    if claims.get("iss") != ctx.issuer or claims.get("aud") != ctx.fhir_base:
        raise InvalidToken("the access token was not issued for this server")
    exp = claims.get("exp")
    if not isinstance(exp, int) or datetime.fromtimestamp(exp, UTC) <= now:
        raise InvalidToken("the access token has expired")
    issued = uow.oauth.token(str(claims.get("jti", "")))
    if issued is None:
        raise InvalidToken("the access token is not known")
    if issued.revoked_at is not None:
        raise InvalidToken("the access token was revoked")
    if issued.certificate_revoked_at is not None:
        raise InvalidToken("the client certificate was revoked")
    act = claims.get("act")
    if issued.subject.startswith("account:"):
        role = claims.get("role")
        if role in OPERATOR_ROLES:
            return Caller(
                client_id=issued.client_id,
                fhir_user=issued.subject,
                organization=None,
                acting_system=None,
                scopes=resource_scopes(issued.scope),
                token_id=issued.jti,
                role=str(role),
            )
        patient = claims.get("patient")
        if not isinstance(patient, str) or not patient:
            raise InvalidToken("a patient app's token must carry its patient")
        return Caller(
            client_id=issued.client_id,
            fhir_user=issued.subject,
            organization=None,
            acting_system=None,
            scopes=resource_scopes(issued.scope),
            token_id=issued.jti,
            patient=patient,
            representative=isinstance(act, dict),
        )
    practitioner_id = issued.subject.removeprefix("Practitioner/")
    try:
        _check_practitioner(uow, practitioner_id)
    except InvalidClient as error:
        raise InvalidToken(error.message) from None
    return Caller(
        client_id=issued.client_id,
        fhir_user=issued.subject,
        organization=claims.get("organization") if isinstance(act, dict) else None,
        acting_system=act.get("sub") if isinstance(act, dict) else None,
        scopes=parse_scopes(issued.scope),
        token_id=issued.jti,
    )


def introspect(
    uow: UnitOfWork, ctx: TokenContext, token: str, asker: ClientIdentity
) -> dict[str, Any]:
    """RFC 7662 for an authenticated client (see `authenticate_client`): ``{"active": false}``
    for anything not currently usable. A resource server (an organization's system
    certificate, registered by the operator) learns about any token; any other client about
    its own tokens only, and reads ``{"active": false}`` for the rest (§2.2 lets the server
    limit what it tells, and a card has no business checking another client's tokens)."""
    try:
        caller = authenticate(uow, ctx, token)
    except CareVaultError:
        return {"active": False}
    if asker.kind != "system" and caller.client_id != asker.client_id:
        return {"active": False}
    claims = _token_claims(ctx, token)
    answer = {
        "active": True,
        "scope": " ".join(str(s) for s in caller.scopes),
        "client_id": caller.client_id,
        "sub": claims["sub"],
        "exp": claims["exp"],
        "iat": claims["iat"],
        "iss": claims["iss"],
        "aud": claims["aud"],
        "token_type": "Bearer",
    }
    # A representative's or an operator's token names no fhirUser; a patient app's names its
    # patient, the launch context.
    for name in ("fhirUser", "patient"):
        if isinstance(claims.get(name), str):
            answer[name] = claims[name]
    if caller.acting_system:
        answer["act"] = {"sub": caller.acting_system}
    return answer


class NotTheClients(CareVaultError):
    """RFC 7009 §2.1: the token to revoke was not issued to the client asking."""


def revoke(uow: UnitOfWork, ctx: TokenContext, token: str, client_id: str) -> str | None:
    """RFC 7009 for an authenticated client (``client_id``): revoking an unknown or invalid
    token is not an error (None); a token of ours issued to another client is refused
    (`NotTheClients`), whatever its state (live, expired or revoked), so that the answer tells
    nothing about another client's token beyond what its bearer can learn at the FHIR door
    (that it is one of ours). Returns the id of the token revoked, if one was."""
    try:
        claims = _token_claims(ctx, token)
    except InvalidToken:
        return None
    jti = str(claims.get("jti", ""))
    issued = uow.oauth.token(jti)
    if issued is None:
        return None
    if issued.client_id != client_id:
        raise NotTheClients("the token was not issued to this client", issue_code="security")
    changed = uow.oauth.revoke(jti, ctx.clock())
    uow.commit()
    return jti if changed else None
