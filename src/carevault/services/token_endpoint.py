"""The OAuth token endpoint's use cases, each in a transaction of its own: what the HTTP layer
(`carevault.api.oauth_routes`) calls, so that it opens no unit of work itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from carevault.services import patient_apps, tokens
from carevault.services.pki import ClientIdentity
from carevault.services.tokens import TokenContext, TokenGrant
from carevault.services.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class TokenEndpoint:
    units: Callable[[], UnitOfWork]
    context: TokenContext

    def issue_backend_token(
        self,
        *,
        assertion_type: str,
        assertion: str,
        scope: str,
        authenticated: Callable[[str], None] | None = None,
    ) -> TokenGrant:
        """The ``client_credentials`` grant (`tokens.issue_backend_token`; a refusal after the
        client authenticated still spends its assertion)."""
        with self.units() as uow:
            return tokens.issue_backend_token(
                uow,
                self.context,
                assertion_type=assertion_type,
                assertion=assertion,
                scope=scope,
                authenticated=authenticated,
            )

    def exchange_code(
        self, *, code: str, redirect_uri: str, client_id: str, code_verifier: str
    ) -> tuple[TokenGrant, str | None]:
        """The ``authorization_code`` grant (`patient_apps.exchange_code`)."""
        with self.units() as uow:
            return patient_apps.exchange_code(
                uow,
                self.context,
                code=code,
                redirect_uri=redirect_uri,
                client_id=client_id,
                code_verifier=code_verifier,
            )

    def authenticate_client(
        self, *, assertion_type: str, assertion: str, audiences: tuple[str, ...]
    ) -> ClientIdentity:
        """The client behind a client assertion; its ``jti`` is spent (committed)."""
        with self.units() as uow:
            identity = tokens.authenticate_client(
                uow,
                self.context,
                assertion_type=assertion_type,
                assertion=assertion,
                audiences=audiences,
            ).identity
            uow.commit()
        return identity

    def introspect(self, token: str, asker: ClientIdentity) -> dict[str, Any]:
        with self.units() as uow:
            return tokens.introspect(uow, self.context, token, asker)

    def public_client(self, client_id: str) -> bool:
        """Whether ``client_id`` names a registered public client (a patient app) in service:
        how a public client authenticates (RFC 6749 §2.3, RFC 7009 §2.1)."""
        with self.units() as uow:
            app = uow.apps.client(client_id)
        return app is not None and app.disabled_at is None

    def revoke(self, token: str, client_id: str) -> str | None:
        """`tokens.revoke` for the authenticated client ``client_id``."""
        with self.units() as uow:
            return tokens.revoke(uow, self.context, token, client_id)
