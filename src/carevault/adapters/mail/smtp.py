"""Sending mail through an SMTP relay (the platform's own, configured by
``CAREVAULT_SMTP_HOST`` / ``CAREVAULT_SMTP_PORT``), with the standard library's client."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

__all__ = ["SmtpSender"]


class SmtpSender:
    """One connection per batch of messages; a refused message raises ``smtplib.SMTPException``
    (the caller keeps it for the next round)."""

    def __init__(self, host: str, port: int, *, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout

    def send(self, messages: list[EmailMessage]) -> list[int]:
        """Send ``messages`` in order; the indexes of those the relay accepted."""
        accepted: list[int] = []
        if not messages:
            return accepted
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as relay:
            for index, message in enumerate(messages):
                try:
                    relay.send_message(message)
                except smtplib.SMTPRecipientsRefused:
                    continue  # a bad address: not retried for ever, counted as refused
                accepted.append(index)
        return accepted
