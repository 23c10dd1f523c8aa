"""The access matrix's rows for a professional's mailbox over HTTP (``/messaging/mailbox``).

No engine decision is involved: a mailbox is its owner's alone, whatever any record says. The
expectation is stated here from the token's facts, independently of the service: no usable
token, 401; a valid token of a patient, a representative or an operator, of a system acting
for a professional, or one whose scopes do not read ``Communication``, 403; a professional's
own card token reaches their own mailbox (an empty one in the matrix's world: the listing
answers 200 with their address, and a message id it does not hold 404)."""

from __future__ import annotations

from typing import Any

from carevault.domain.messaging import address_of
from carevault.domain.scopes import permits
from carevault.fhirmodel.directory import practitioner_entry
from support.access_matrix import (
    UNAUTHENTICATED,
    Call,
    Expected,
    Oracle,
    Row,
    app_row,
)
from support.matrix_world import Caller, World

MAILBOX = "/messaging/mailbox"
UNKNOWN_MESSAGE = "1700000000000000000.0123456789abcdef.nowhere,S=1"


def _expect(found_status: int) -> Any:
    def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
        with oracle.uow() as uow:
            found = oracle.token_caller(uow, caller)
        if found is None:
            return Expected(False, UNAUTHENTICATED, "no usable token")
        if found.role is not None or found.patient is not None:
            return Expected(False, frozenset({403}), "not a professional's token")
        if found.acting_system is not None:
            return Expected(False, frozenset({403}), "a system acting for a professional")
        if not permits(found.scopes, "Communication", "r"):
            return Expected(False, frozenset({403}), "its scopes do not read Communication")
        return Expected(True, frozenset({found_status}), "the professional's own mailbox")
    return expect


def _own_address(oracle: Oracle, caller: Caller, expected: Expected, response: Any) -> list[str]:
    if not expected.permit:
        return []
    world = oracle.world
    with oracle.uow() as uow:
        stored = uow.directory.practitioner(caller.practitioner_id or "")
    assert stored is not None
    identifier = practitioner_entry(stored.resource, world.platform.directory.systems).identifier
    mine = address_of(identifier, world.platform.settings.messaging_domain)
    body = response.json()
    return [] if body.get("address") == mine else [f"another's mailbox: {body.get('address')}"]


def _call(method: str, path: str) -> Any:
    return lambda _w, _c, _p: Call(method, path, fhir=False)


@app_row(MAILBOX, "GET")
def _listing(world: World) -> list[Row]:
    return [Row(f"GET {MAILBOX} (the caller's own mailbox)", (MAILBOX, "GET"),
                ("Communication", "r"), _call("GET", MAILBOX), expect=_expect(200),
                check=_own_address)]


for _method in ("GET", "DELETE"):
    app_row(f"{MAILBOX}/{{message_id}}", _method)(
        lambda _w, m=_method: [Row(
            f"{m} {MAILBOX}/{{id}} (a message the caller's mailbox does not hold)",
            (f"{MAILBOX}/{{message_id}}", m), ("Communication", "r"),
            _call(m, f"{MAILBOX}/{UNKNOWN_MESSAGE}"), expect=_expect(404))])
