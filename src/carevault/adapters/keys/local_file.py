"""The embedded key source: a local key file readable by its owner only.

The file holds named 256-bit keys (JSON, base64). It is created with ``O_EXCL`` and mode 0600 in
one system call, so there is no moment at which another user could read it, and loading refuses a
file that group or others can read: a key that may have leaked is not a key.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path


class KeyFileError(Exception):
    """The key file is missing, unreadable, malformed or too widely readable."""


def key_file_path(key_source: str) -> Path:
    """The path of a ``file:PATH`` key source."""
    scheme, _, rest = key_source.partition(":")
    if scheme != "file" or not rest:
        raise KeyFileError(f"unsupported key source {scheme!r}: expected 'file:PATH'")
    return Path(rest)


def create_key_file(path: Path) -> bool:
    """Create the key file with one fresh master key; return False if it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # var/: the keys and the data
    content = {
        "format": "carevault-keys/1",
        "created": datetime.now(UTC).isoformat(),
        "keys": {"master-1": base64.b64encode(secrets.token_bytes(32)).decode("ascii")},
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(content, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def load_keys(path: Path) -> dict[str, bytes]:
    """Read the named keys, refusing a file that anyone but its owner can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist: run 'carevault init'") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} is readable by others: chmod 600 it")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        keys = content["keys"]
        if not isinstance(keys, dict):
            raise TypeError("'keys' is not an object")
        return {name: base64.b64decode(value, validate=True) for name, value in keys.items()}
    except (ValueError, KeyError, TypeError) as error:
        raise KeyFileError(f"key file {path} is malformed: {error}") from None
