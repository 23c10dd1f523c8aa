"""Syslog adapters: RFC 5424 messages sent to an ATNA repository over TLS.

Two transports, one contract (``deliver(messages)``: return when every message is confirmed,
or raise ``DeliveryError`` saying how many *leading* messages were confirmed):

- ``tls_sender.TlsSyslogSender``: RFC 5425 (octet-counted frames over TLS). RFC 5425 has no
  acknowledgement, so a batch is confirmed all or nothing, from the way the connection ends.
- ``relp_sender.RelpSender``: RELP over TLS (rsyslog's ``imrelp``). Every message is
  acknowledged by the receiver, so a failure part-way through a batch confirms its prefix.
"""

from __future__ import annotations

__all__ = ["DeliveryError"]


class DeliveryError(Exception):
    """Not every message of the batch was confirmed; the unconfirmed ones must be sent again.

    ``confirmed`` is how many messages at the start of the batch the receiver did confirm
    before the failure (0 when none, always 0 for a transport that confirms all or nothing).
    The caller may treat those as delivered and send again only the rest.
    """

    def __init__(self, message: str, *, confirmed: int = 0) -> None:
        if confirmed < 0:
            raise ValueError("confirmed cannot be negative")
        super().__init__(message)
        self.confirmed = confirmed
