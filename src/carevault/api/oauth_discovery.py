"""OAuth 2 / SMART on FHIR discovery: the authorization server's metadata (SMART's
``smart-configuration``, RFC 8414's ``oauth-authorization-server``, which IHE IUA clients read)
and the token signing keys. Public and read-only: every route here is ``PUBLIC``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from carevault.api.openapi import answer
from carevault.api.route_door import PUBLIC, access
from carevault.services.tokens import TokenContext

METADATA = answer("SMART / RFC 8414 metadata", schema={"type": "object", "required": ["issuer"]})
JWKS = {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array"}}}


def server_metadata(tokens: TokenContext) -> dict[str, Any]:
    """What SMART's ``smart-configuration`` and RFC 8414's metadata announce: the endpoints,
    the client authentication each takes, the scopes and SMART capabilities."""
    return {
        "issuer": tokens.issuer,
        "jwks_uri": f"{tokens.issuer}/.well-known/jwks.json",
        "token_endpoint": tokens.token_endpoint,
        "introspection_endpoint": f"{tokens.issuer}/oauth/introspect",
        "revocation_endpoint": f"{tokens.issuer}/oauth/revoke",
        "authorization_endpoint": f"{tokens.issuer}/oauth/authorize",
        "grant_types_supported": ["client_credentials", "authorization_code"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        # As the issue fixes it; public patient apps are announced by "client-public" and
        # authenticate their code with PKCE instead.
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        # RFC 8414: introspection needs the same client authentication (RFC 7662 §2.1).
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
        "introspection_endpoint_auth_signing_alg_values_supported": ["ES256"],
        # RFC 7009 §2.1: a confidential client's assertion, or a public client's client_id
        # alone ("none", RFC 8414 §2).
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        "revocation_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "scopes_supported": [
            "system/*.rs",
            "system/Patient.rs",
            "system/Practitioner.rs",
            "system/PractitionerRole.rs",
            "system/Organization.rs",
            "system/AuditEvent.rs",
            # The security officer's alerts: reading them, and reviewing them ($acknowledge,
            # $assign, $close, $notify-patient).
            "system/DetectedIssue.rs",
            "system/DetectedIssue.rus",
            "system/Patient.cruds",
            "patient/Patient.rs",
            "patient/AuditEvent.rs",
            "launch/patient",
            "openid",
            "fhirUser",
        ],
        "capabilities": [
            "client-confidential-asymmetric",
            "client-public",
            "launch-standalone",
            "context-standalone-patient",
            "permission-patient",
            "permission-v1",
            "permission-v2",
        ],
    }


def discovery_router(tokens: TokenContext) -> APIRouter:
    router = APIRouter()

    @router.get("/.well-known/smart-configuration", responses={200: METADATA})
    @access(PUBLIC)
    def smart_configuration() -> JSONResponse:
        return JSONResponse(server_metadata(tokens))

    @router.get("/.well-known/oauth-authorization-server", responses={200: METADATA})
    @access(PUBLIC)
    def authorization_server_metadata() -> JSONResponse:
        """RFC 8414 metadata, the form IHE IUA (ITI-103) clients read."""
        return JSONResponse(server_metadata(tokens))

    @router.get(
        "/.well-known/jwks.json", responses={200: answer("the token signing keys", schema=JWKS)}
    )
    @access(PUBLIC)
    def jwks() -> JSONResponse:
        return JSONResponse(tokens.key.jwks())

    return router
