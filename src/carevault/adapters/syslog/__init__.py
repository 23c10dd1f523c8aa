"""Syslog adapters: RFC 5424 messages sent over TLS (RFC 5425) to an ATNA repository."""
