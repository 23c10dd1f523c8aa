"""Patient apps: the SMART authorization code flow with PKCE, for public clients.

An operator registers the app (its name and exact redirect URIs). The patient, signed in to the
portal, sees which app asks for what and approves; the app receives a one-minute, single-use
code, bound to its redirect URI and to the S256 challenge of a verifier only it knows, and
trades it for a five-minute token restricted to the patient's own record.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from joserfc import jwt

from carevault.adapters.storage.oauth_store import AppClient, AuthorizationCode, IssuedToken
from carevault.domain.errors import InvalidInput, NotAuthenticated, NotFound
from carevault.domain.scopes import (
    ACCOUNT_CEILINGS,
    IDENTITY_SCOPES,
    has_resource_scope,
    narrow_words,
    parse_scopes,
)
from carevault.services.tokens import TOKEN_LIFETIME, TokenContext, TokenGrant
from carevault.services.unit_of_work import UnitOfWork, Units

CODE_LIFETIME = timedelta(seconds=60)
# What an app registered without a list of scopes may be granted: reading the patient's own
# record. An app that writes (a patient's uploads, their choices) or an operator's console is
# registered with the scopes it needs (``carevault apps register --scope``).
DEFAULT_APP_SCOPES = "launch/patient openid fhirUser patient/*.rs"
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 §4.1
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


class InvalidGrant(NotAuthenticated):
    """The code, the verifier or the redirect URI does not match (RFC 6749 invalid_grant)."""


@dataclass(frozen=True)
class AppRequest:
    """A validated authorization request, ready to be shown to the patient."""

    client_id: str
    client_name: str
    redirect_uri: str
    scope: str
    state: str | None
    code_challenge: str

    def for_role(self, kind: str) -> AppRequest:
        """The request narrowed to what an account of ``kind`` may ever hold
        (`ACCOUNT_CEILINGS`); InvalidInput (``invalid_scope``) when nothing asked is."""
        scope = narrow_words(self.scope, ACCOUNT_CEILINGS.get(kind, ""))
        if not has_resource_scope(scope):
            raise InvalidInput(
                f"none of the scopes asked for ({self.scope}) may be granted to this kind of "
                "account",
                expression="scope",
            )
        return replace(self, scope=scope)

    def consented(self, ticked: set[str]) -> AppRequest:
        """The request as the person approved it on the consent page: the resource scopes they
        left ticked (identity scopes are not theirs to untick: they reach no data). Nothing
        ticked is a refusal (InvalidInput)."""
        kept = [w for w in self.scope.split() if w in IDENTITY_SCOPES or w in ticked]
        scope = " ".join(kept)
        if not has_resource_scope(scope):
            raise InvalidInput("no scope was allowed", expression="scope")
        return replace(self, scope=scope)

    @property
    def scope_context(self) -> str:
        """'patient' for a patient app, 'system' for an operator's or security officer's."""
        return "system" if any(w.startswith("system/") for w in self.scope.split()) else ("patient")


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("ascii", "replace")).hexdigest()


def register_app(
    uow: UnitOfWork,
    name: str,
    redirect_uris: list[str],
    now: datetime,
    *,
    scopes: str = DEFAULT_APP_SCOPES,
) -> str:
    """Register a public client with its exact redirect URIs and the scopes it may ever be
    granted (the registration's ceiling: a token never holds more, whatever the app asks)."""
    allowed = registration_scopes(scopes)
    if not name.strip() or len(name) > 200:
        raise InvalidInput("an app needs a name of at most 200 characters")
    if not redirect_uris:
        raise InvalidInput("an app needs at least one redirect URI")
    for uri in redirect_uris:
        parts = urlsplit(uri)
        local = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.fragment or not parts.netloc or (parts.scheme != "https" and not local):
            raise InvalidInput(
                f"redirect URI {uri!r} must be https (or http on loopback), "
                "absolute, without a fragment"
            )
    client_id = "app-" + uuid.uuid4().hex[:16]
    uow.apps.add_client(
        AppClient(client_id, name.strip(), tuple(redirect_uris), now, scopes=allowed)
    )
    uow.commit()
    return client_id


def set_app_scopes(uow: UnitOfWork, client_id: str, scopes: str) -> str:
    """Replace a registered app's ceiling (checked and normalized as at registration): how an
    operator narrows an app registered before scopes were recorded, which kept every scope,
    or one that asked for more than it needs. Tokens issued from now on hold no more; those
    already issued keep their scope until they expire (TOKEN_LIFETIME, minutes). Returns the
    stored scopes."""
    allowed = registration_scopes(scopes)
    if not uow.apps.set_scopes(client_id, allowed):
        raise NotFound(f"no app {client_id!r} is registered")
    uow.commit()
    return allowed


def registration_scopes(scope: str) -> str:
    """A registration's scopes, checked and normalized: identity scopes and SMART scopes of
    either context (an app may serve patients and operators alike; each request is of one)."""
    words = list(dict.fromkeys(scope.split()))
    resource = [w for w in words if w not in IDENTITY_SCOPES]
    if not resource:
        raise InvalidInput("an app needs at least one resource scope", expression="scope")
    parsed = parse_scopes(" ".join(resource))
    return " ".join([*(w for w in words if w in IDENTITY_SCOPES), *(str(s) for s in parsed)])


def requested_scopes(scope: str) -> str:
    """Identity scopes plus either patient/… scopes (a patient's or representative's app) or
    system/… scopes (an operator's tool), never both; returned normalized."""
    words = scope.split()
    resource = [w for w in words if w not in IDENTITY_SCOPES]
    if not resource:
        raise InvalidInput("ask for at least one resource scope", expression="scope")
    parsed = parse_scopes(" ".join(resource))
    contexts = {s.context for s in parsed}
    if contexts not in ({"patient"}, {"system"}):
        raise InvalidInput(
            "ask for patient/… scopes, or for system/… scopes, not both", expression="scope"
        )
    identity = [w for w in words if w in IDENTITY_SCOPES]
    return " ".join([*dict.fromkeys(identity), *(str(s) for s in parsed)])


def check_request(uow: UnitOfWork, params: dict[str, str]) -> AppRequest:
    """Validate an authorization request. Errors about the client or its redirect URI must be
    shown to the person, never sent to that URI (it is not trusted yet)."""
    row = uow.apps.client(params.get("client_id", ""))
    if row is None or row.disabled_at is not None:
        raise NotFound("this app is not registered with CareVault")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in row.redirect_uris:
        raise InvalidInput("the app's redirect_uri is not one registered for it")
    if params.get("response_type") != "code":
        raise InvalidInput("response_type must be code", expression="response_type")
    if params.get("code_challenge_method") != "S256" or not _CHALLENGE.match(
        params.get("code_challenge", "")
    ):
        raise InvalidInput(
            "PKCE with code_challenge_method=S256 is required", expression="code_challenge"
        )
    state = params.get("state")
    if state is not None and len(state) > 500:
        raise InvalidInput("state is too long", expression="state")
    asked = requested_scopes(params.get("scope", ""))
    # Never more than the app's registration allows: what is asked beyond it is left out (the
    # consent page shows what remains), and a request for nothing it may have is refused.
    scope = narrow_words(asked, row.scopes)
    if not has_resource_scope(scope):
        raise InvalidInput(
            f"none of the scopes asked for ({asked}) may be granted to this app: its "
            f"registration allows {row.scopes}",
            expression="scope",
        )
    return AppRequest(row.client_id, row.name, redirect_uri, scope, state, params["code_challenge"])


def approve(
    uow: UnitOfWork,
    request: AppRequest,
    account_id: str,
    patient_id: str | None,
    now: datetime,
    *,
    kind: str = "patient",
) -> str:
    """Issue a code and return the URL to send the browser to."""
    code = secrets.token_urlsafe(32)
    uow.apps.add_code(
        AuthorizationCode(
            code_hash=_hash(code),
            client_id=request.client_id,
            redirect_uri=request.redirect_uri,
            code_challenge=request.code_challenge,
            scope=request.scope,
            account_id=account_id,
            kind=kind,
            patient_id=patient_id,
            expires_at=now + CODE_LIFETIME,
        )
    )
    uow.commit()
    query = {"code": code, **({"state": request.state} if request.state is not None else {})}
    separator = "&" if urlsplit(request.redirect_uri).query else "?"
    return f"{request.redirect_uri}{separator}{urlencode(query)}"


def request_in_force(units: Units, params: dict[str, str]) -> AppRequest:
    """`check_request` in a read of its own (the consent page, before it asks the person)."""
    with units() as uow:
        return check_request(uow, params)


def approve_request(
    units: Units,
    request: AppRequest,
    account_id: str,
    patient_id: str | None,
    now: datetime,
    *,
    kind: str = "patient",
) -> str:
    """`approve` in a transaction of its own: the person said yes on the consent page."""
    with units() as uow:
        return approve(uow, request, account_id, patient_id, now, kind=kind)


def exchange_code(
    uow: UnitOfWork,
    ctx: TokenContext,
    *,
    code: str,
    redirect_uri: str,
    client_id: str,
    code_verifier: str,
) -> tuple[TokenGrant, str | None]:
    """The ``authorization_code`` grant; returns the token and the patient (launch context)."""
    if not _VERIFIER.match(code_verifier):
        raise InvalidGrant("code_verifier must be 43 to 128 unreserved characters")
    now = ctx.clock()
    row = uow.apps.code(_hash(code))
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise InvalidGrant("the code is unknown, used or expired")
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode("ascii")).digest())
        .decode()
        .rstrip("=")
    )
    if not (
        # As bytes: compare_digest refuses a str with non-ASCII characters (a TypeError).
        hmac.compare_digest(challenge.encode(), row.code_challenge.encode())
        and hmac.compare_digest(client_id.encode(), row.client_id.encode())
        and hmac.compare_digest(redirect_uri.encode(), row.redirect_uri.encode())
    ):
        raise InvalidGrant("the code was issued for another client, redirect URI or verifier")
    if not uow.apps.use_code(row.code_hash, now):
        raise InvalidGrant("the code was already used")
    # What the person approved, narrowed again to the app's registration and the account's
    # role as they stand now (an app disabled or narrowed since the consent gets no more).
    app = uow.apps.client(row.client_id)
    if app is None or app.disabled_at is not None:
        raise InvalidGrant("the app is no longer registered")
    scope = narrow_words(narrow_words(row.scope, app.scopes), ACCOUNT_CEILINGS.get(row.kind, ""))
    if not has_resource_scope(scope):
        raise InvalidGrant("nothing the code was approved for may still be granted")
    token_id = uuid.uuid4().hex
    expires_at = now + TOKEN_LIFETIME
    payload: dict[str, Any] = {
        "iss": ctx.issuer,
        "sub": f"account:{row.account_id}",
        "aud": ctx.fhir_base,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": token_id,
        "scope": scope,
        "client_id": row.client_id,
    }
    if row.kind == "patient":
        payload["patient"] = row.patient_id
        payload["fhirUser"] = f"{ctx.fhir_base}/Patient/{row.patient_id}"
    elif row.kind == "representative":
        # Both identities: who signed in (sub) and whose record they act on (patient).
        payload["patient"] = row.patient_id
        payload["act"] = {"sub": f"account:{row.account_id}", "role": "representative"}
    else:
        payload["role"] = row.kind  # operator or security-officer: no patient, ever
    token = jwt.encode(
        {"alg": "ES256", "kid": ctx.key.kid, "typ": "at+jwt"},
        payload,
        ctx.key.jwk,
        algorithms=["ES256"],
    )
    uow.oauth.save_token(
        IssuedToken(
            token_id,
            row.client_id,
            None,
            f"account:{row.account_id}",
            scope,
            now,
            expires_at,
            None,
            None,
        )
    )
    uow.commit()
    return TokenGrant(
        token, int(TOKEN_LIFETIME.total_seconds()), scope, row.client_id
    ), row.patient_id
