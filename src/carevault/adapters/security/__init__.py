"""Secrets that people hold: password hashing (Argon2id) and the TOTP second factor."""
