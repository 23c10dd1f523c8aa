"""What a lost database means to a request, in one place.

A failover, a restart or an exhausted pool surfaces as the driver's or the pool's exception,
from wherever the request met it: a unit of work (which already says `Unavailable`), the audit
log's own reads, an authenticator, a page's history, a chore. The doors (`carevault.api.fhir.
outcome`, `carevault.api.route_door`) pass every exception that is not one of the domain's
through `as_unavailable` before they call it an incident: a lost database is answered 503 with
``Retry-After`` and "send the same request again", never 500. Which exceptions mean a lost
database is the storage adapter's knowledge (`lost_database`).
"""

from __future__ import annotations

from carevault.adapters.storage.database import lost_database
from carevault.domain.errors import SEND_AGAIN, Unavailable

LOST = f"the database is unavailable for a moment (a failover?); {SEND_AGAIN}"


def as_unavailable(error: BaseException) -> Unavailable | None:
    """``error`` as the domain's `Unavailable` if it says the database is unavailable for the
    moment, else None (an incident: the caller answers it as one)."""
    if isinstance(error, Unavailable):
        return error
    if lost_database(error):
        return Unavailable(LOST)
    return None
