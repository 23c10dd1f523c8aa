"""A professional's mailbox over HTTP (plain JSON, not FHIR): the other way to retrieve what
IMAP serves (docs/messaging.md, "Retrieval over HTTP").

- ``GET /messaging/mailbox``: the caller's address and their messages (id, size, when, seen);
- ``GET /messaging/mailbox/{id}``: one message exactly as delivered (``message/rfc822``: its
  outer headers and its ``application/pkcs7-mime`` body), or with ``Accept:
  application/pkcs7-mime`` the CMS envelope alone (DER). The platform never decrypts it;
- ``DELETE /messaging/mailbox/{id}``: the owner deletes it for good.

The mailbox is the token's (`PROFESSIONAL`: a professional's own card token that may read
``Communication``); no request names a mailbox, so none can name another's. Every request is
recorded by the route door in the clinical stream, refused ones included: the message's id,
size and SHA-256 (the digest the submission's record has), never its content.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from carevault.api.openapi import PLAIN_ERROR, bearer
from carevault.api.openapi import answer as documented
from carevault.api.route_door import PROFESSIONAL, Audited, Authenticator, Caller, access, admitted
from carevault.domain.errors import CareVaultError, NotAuthenticated, NotFound
from carevault.services.mailbox import Fetched, MailboxOwner, MailboxService, NotMailboxOwner

PREFIX = "/messaging/mailbox"
MESSAGE_MEDIA_TYPE = "message/rfc822"
ENVELOPE_MEDIA_TYPE = "application/pkcs7-mime"
NO_STORE = {"Cache-Control": "no-store"}
_OWNER = "carevault.mailbox-owner"

LISTING: dict[str, Any] = {
    "type": "object",
    "required": ["address", "messages"],
    "properties": {
        "address": {"type": "string"},
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "size", "received", "seen"],
                "properties": {
                    "id": {"type": "string"},
                    "size": {"type": "integer"},
                    "received": {"type": "string", "format": "date-time"},
                    "seen": {"type": "boolean"},
                },
            },
        },
    },
}
BINARY = {"type": "string", "format": "binary"}
REFUSED: dict[int | str, dict[str, Any]] = {
    401: documented("no valid access token", schema=PLAIN_ERROR),
    403: documented(
        "a valid token that is not a professional's own, or that may not read Communication",
        schema=PLAIN_ERROR,
    ),
    503: documented("the request could not be recorded; nothing was done", schema=PLAIN_ERROR),
}
UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: documented("your mailbox holds no such message", schema=PLAIN_ERROR)
}


def professional_authenticator(service: MailboxService) -> Authenticator:
    """The route door's ``professional`` authenticator: the mailbox owner a bearer token
    speaks for; a valid token of anyone else is named and refused (`Caller.refused`)."""

    def authenticate(request: Request) -> Caller | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            owner = service.owner_of_token(token.strip())
        except NotMailboxOwner as error:
            return Caller(error.who, refused=error.message)
        except NotAuthenticated:
            return None
        request.scope[_OWNER] = owner
        return Caller(f"Practitioner/{owner.practitioner_id}", "practitioner")

    return authenticate


def _owner(request: Request) -> MailboxOwner:
    found = request.scope.get(_OWNER)
    if not isinstance(found, MailboxOwner):
        raise RuntimeError("the professional authenticator did not run")
    return found


def _noted(request: Request, fetched: Fetched) -> None:
    admitted(request).note(
        "0", {"message": fetched.id, "size": str(fetched.size), "sha256": fetched.digest}
    )


def _unknown(request: Request, message_id: str, error: CareVaultError) -> CareVaultError:
    admitted(request).note("4", {"message": message_id[:200], "result": error.message}, status=404)
    return error


def mailbox_router(service: MailboxService) -> APIRouter:
    router = APIRouter(prefix=PREFIX)

    @router.get(
        "",
        responses={200: documented("your address and your messages", schema=LISTING), **REFUSED},
        openapi_extra=bearer(),
    )
    @access(PROFESSIONAL, Audited("clinical", "access", "R", "mailbox-list", "Mailbox"))
    def listing(request: Request) -> JSONResponse:
        owner = _owner(request)
        messages = service.messages(owner)
        admitted(request).note("0", {"address": owner.address, "count": str(len(messages))})
        return JSONResponse(
            {
                "address": owner.address,
                "messages": [
                    {
                        "id": m.id,
                        "size": m.size,
                        "received": m.received.isoformat(),
                        "seen": m.seen,
                    }
                    for m in messages
                ],
            },
            headers=NO_STORE,
        )

    @router.get(
        "/{message_id}",
        response_class=Response,
        responses={
            200: {
                "description": "the message as delivered (encrypted), or its CMS envelope",
                "content": {
                    MESSAGE_MEDIA_TYPE: {"schema": BINARY},
                    ENVELOPE_MEDIA_TYPE: {"schema": BINARY},
                },
                "headers": {
                    "X-Content-SHA256": {
                        "description": "the SHA-256 (hex) of the message as delivered",
                        "schema": {"type": "string"},
                    }
                },
            },
            400: documented("the message holds no S/MIME envelope to give", schema=PLAIN_ERROR),
            **UNKNOWN,
            **REFUSED,
        },
        openapi_extra=bearer(),
    )
    @access(PROFESSIONAL, Audited("clinical", "access", "R", "mailbox-read", "Message"))
    def message(message_id: str, request: Request) -> Response:
        try:
            fetched = service.fetch(_owner(request), message_id)
        except NotFound as error:
            raise _unknown(request, message_id, error) from None
        _noted(request, fetched)
        headers = {**NO_STORE, "X-Content-SHA256": fetched.digest}
        if ENVELOPE_MEDIA_TYPE in request.headers.get("accept", ""):
            envelope = service.envelope(fetched)  # after the note: the read is recorded
            return Response(
                envelope,
                media_type=f"{ENVELOPE_MEDIA_TYPE}; smime-type=authEnveloped-data",
                headers=headers,
            )
        return Response(fetched.content, media_type=MESSAGE_MEDIA_TYPE, headers=headers)

    @router.delete(
        "/{message_id}",
        status_code=204,
        response_class=Response,
        responses={204: documented("deleted for good", None), **UNKNOWN, **REFUSED},
        openapi_extra=bearer(),
    )
    @access(PROFESSIONAL, Audited("clinical", "access", "D", "mailbox-delete", "Message"))
    def delete(message_id: str, request: Request) -> Response:
        try:
            fetched = service.delete(_owner(request), message_id)
        except NotFound as error:
            raise _unknown(request, message_id, error) from None
        _noted(request, fetched)
        return Response(status_code=204, headers=NO_STORE)

    return router
