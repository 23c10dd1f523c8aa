"""A private nginx (Debian's ``nginx`` package) for a test: its own configuration, pid file,
logs and temporary directories under one prefix, in the foreground, as a child process.

Without nginx (``apt-get install nginx``) the tests that need it are skipped, except under
``CI=true``, where they fail; ``.ci/run`` installs it.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from support.requirements import NGINX, find_nginx, require

START_SECONDS = 15.0


def nginx_binary() -> str:
    """The nginx binary; skips the test when it is missing (the run's summary says so), fails
    under ``CI=true``."""
    require(NGINX)
    found = find_nginx()
    assert found is not None
    return found


class Nginx:
    """nginx running ``site`` (an http-level configuration) under ``prefix``."""

    def __init__(self, prefix: Path, site: str) -> None:
        self.binary = nginx_binary()
        self.prefix = prefix
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        (prefix / "site.conf").write_text(site)
        temp = "\n".join(f"    {kind}_temp_path {prefix / (kind + '_temp')};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # As root, nginx's workers would become "nobody", who cannot enter pytest's private
        # temporary directory: they stay the user running the test.
        user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(
            f"{user}worker_processes 1;\npid {prefix / 'nginx.pid'};\n"
            f"error_log {prefix / 'logs' / 'error.log'} info;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"    access_log {prefix / 'logs' / 'access.log'};\n"
            f"{temp}\n"
            f"    include {prefix / 'site.conf'};\n"
            "}\n")
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-e", "stderr", "-p", str(self.prefix), "-c", str(self.conf),
                *extra]

    def check(self) -> None:
        """``nginx -t``: the configuration is valid."""
        done = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30,
                              check=False)
        assert done.returncode == 0, f"nginx -t:\n{done.stderr}\n{self.conf.read_text()}"

    def start(self, *ports: int) -> None:
        """Start in the foreground; return once every port in ``ports`` accepts."""
        self.check()
        self.stderr = (self.prefix / "stderr.log").open("wb")
        self.process = subprocess.Popen(self.command("-g", "daemon off;"),
                                        stdout=self.stderr, stderr=self.stderr)
        deadline = time.monotonic() + START_SECONDS
        waiting = list(ports)
        while waiting:
            if self.process.poll() is not None:
                pytest.fail(f"nginx exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", waiting[0]), timeout=1):
                    waiting.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"nginx did not listen on {waiting[0]}:\n{self.log()}")
                time.sleep(0.1)

    def log(self) -> str:
        parts = [path.read_text(errors="replace")[-4000:]
                 for path in (self.prefix / "stderr.log", self.prefix / "logs" / "error.log")
                 if path.exists()]
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGQUIT (graceful), then SIGKILL; nginx's master ends its own workers."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if getattr(self, "stderr", None) is not None:
            self.stderr.close()
