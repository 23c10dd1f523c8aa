"""Retrieval over IMAP: Debian's Dovecot, configured and run by CareVault.

CareVault writes a private Dovecot configuration (`render_config`). It has its own
``base_dir``, a loopback listener, STARTTLS required (TLS 1.2+), and no plaintext
authentication before TLS. It reads the Maildirs the submission server delivers to
(``maildir:ROOT/%n/Maildir``, as the mail user) and checks logins against the ``passwd-file``s
that CareVault keeps (`ImapPasswords`). A professional logs in with their messaging address and
a generated credential. It is 256 random bits, shown once, and stored only as its SHA-512.
A slow password hash protects guessable passwords; nothing can be guessed here, so a fast one
is enough. Dovecot compares it, and a new credential replaces the old one at once.

`DovecotServer` runs ``dovecot -F`` as a child process and stops it by its own pid.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DovecotServer",
    "ImapPasswords",
    "ImapSettings",
    "dovecot_binary",
    "internal_group",
    "render_config",
]

_LOCAL = re.compile(r"[a-z0-9][a-z0-9._\-]{0,63}")


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None
    )


def internal_group(user: str = "dovecot") -> int | None:
    """The group of Dovecot's internal user, whose auth process reads the credentials."""
    try:
        return pwd.getpwnam(user).pw_gid
    except KeyError:
        return None


@dataclass(frozen=True)
class ImapSettings:
    state_dir: Path  # Dovecot's base_dir, its configuration and log
    maildir_root: Path
    passwd_dir: Path
    cert_file: Path
    key_file: Path
    mail_uid: int
    mail_gid: int
    host: str = "127.0.0.1"
    port: int = 1143


def _path(path: Path) -> str:
    text = str(path.resolve())
    if any(c in text for c in '\n\r"<>{}%$'):
        raise ValueError(f"{text!r} cannot be written into a Dovecot configuration")
    return text


def render_config(settings: ImapSettings) -> str:
    state = _path(settings.state_dir)
    return f"""# Written by CareVault (adapters/messaging/dovecot.py); regenerated at every start.
base_dir = {state}/run
state_dir = {state}/state
instance_name = carevault-{settings.port}
protocols = imap
listen = {settings.host}
log_path = {state}/dovecot.log
ssl = required
ssl_cert = <{_path(settings.cert_file)}
ssl_key = <{_path(settings.key_file)}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain
auth_username_format = %Lu
mail_location = maildir:{_path(settings.maildir_root)}/%n/Maildir
mail_privileged_group =
first_valid_uid = {max(1, settings.mail_uid)}
first_valid_gid = {max(1, settings.mail_gid)}
passdb {{
  driver = passwd-file
  args = scheme=SHA512 username_format=%n {_path(settings.passwd_dir)}/%n
}}
userdb {{
  driver = static
  args = uid={settings.mail_uid} gid={settings.mail_gid} home={_path(settings.maildir_root)}/%n
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {settings.host}
    port = {settings.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


class ImapPasswords:
    """The IMAP credentials: one ``passwd-file`` per mailbox, ``DIR/<local part>``, holding
    ``local:{SHA512.b64}digest``.

    One file per mailbox because Dovecot checks a passwd-file for changes at most once a
    second: a credential issued just after someone else's login would otherwise wait for
    the next second. Dovecot's auth process reads the files as Dovecot's internal user
    (``dovecot`` on Debian). When ``group`` (that user's group) is given, a file is 0640 and
    belongs to it; otherwise it is 0600."""

    def __init__(self, directory: Path, group: int | None = None) -> None:
        self.directory = directory
        self.group = group

    def path(self, local_part: str) -> Path:
        if not _LOCAL.fullmatch(local_part):
            raise ValueError(f"{local_part!r} is not a mailbox name")
        return self.directory / local_part

    def _write(self, path: Path, line: str) -> None:
        self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as file:
                if self.group is not None:
                    os.fchown(file.fileno(), -1, self.group)
                    os.fchmod(file.fileno(), 0o640)
                file.write(line)
                file.flush()
                os.fsync(file.fileno())
            # Dovecot re-reads a file whose mtime changed, to the second: a replacement in the
            # same second would go unseen, so the new file is dated at least a second later.
            try:
                previous = int(path.stat().st_mtime)
            except FileNotFoundError:
                previous = 0
            stamp = max(int(time.time()), previous + 1)
            os.utime(temporary, (stamp, stamp))
            os.replace(temporary, path)  # atomic: Dovecot reads the old file or the new one
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def issue(self, local_part: str) -> str:
        """A new credential for ``local_part`` (replacing any older one); returned once."""
        path = self.path(local_part)
        secret = secrets.token_urlsafe(32)
        digest = base64.b64encode(hashlib.sha512(secret.encode("ascii")).digest()).decode()
        self._write(path, f"{local_part}:{{SHA512.b64}}{digest}\n")
        return secret

    def revoke(self, local_part: str) -> bool:
        try:
            self.path(local_part).unlink()
        except FileNotFoundError:
            return False
        return True


class DovecotServer:
    """A private Dovecot instance; `start` returns once it accepts connections."""

    def __init__(self, settings: ImapSettings, binary: str | None = None) -> None:
        self.settings = settings
        self.binary = binary or dovecot_binary()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.settings.state_dir / "dovecot.conf"

    def start(self, timeout: float = 20.0) -> None:
        if self.binary is None:
            raise RuntimeError("dovecot is not installed (apt-get install dovecot-imapd)")
        for folder in (self.settings.state_dir, self.settings.state_dir / "state"):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.config_file.write_text(render_config(self.settings), encoding="utf-8")
        self.process = subprocess.Popen(  # noqa: S603 - a fixed binary, our own configuration
            [self.binary, "-F", "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"dovecot stopped at start: {error.strip()[:500]}")
            try:
                with socket.create_connection((self.settings.host, self.settings.port), 0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("dovecot did not start listening in time")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
