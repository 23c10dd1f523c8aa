"""Printed documents (PDF)."""
