"""Secure messaging: S/MIME messages, mailboxes, the submission server."""
