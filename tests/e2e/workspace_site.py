"""A real CareVault on demo data for the workspace's browser journeys
(test_workspace_journeys.py, test_workspace_care_team.py): served at ``http://localhost:PORT``
because WebAuthn refuses an IP address as its relying party; ``pki init`` before the demo, so
that the demo physician's card (``var/demo-card``) signs the demo documents; and the steps every
journey shares: a professional's card proof and passkey, a page axe-clean in three languages."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.browser import axe_violations

from .conftest import CAREVAULT, _wait_until_healthy, carevault_env, free_port

LANGUAGES = ("fr", "de", "en")


@dataclass(frozen=True)
class Site:
    workdir: Path
    base: str
    accounts: dict[str, Any]

    def cli(self, *args: str) -> str:
        done = subprocess.run([CAREVAULT, *args], cwd=self.workdir,
                              env=carevault_env(self.workdir, self.base), capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, f"carevault {' '.join(args)}: {done.stderr}"
        return done.stdout

    @property
    def patient(self) -> dict[str, Any]:
        return dict(self.accounts["patients"][0])

    @property
    def demo_card(self) -> Path:
        return self.workdir / "var" / "demo-card"


@contextlib.contextmanager
def demo_site(workdir: Path) -> Iterator[Site]:
    """``carevault init``, ``pki init``, ``demo``, then ``serve`` until the block ends."""
    port = free_port()
    base = f"http://localhost:{port}"
    accounts_file = workdir / "var" / "demo-accounts.json"
    setup = Site(workdir, base, {})
    setup.cli("init")
    setup.cli("pki", "init")
    setup.cli("demo", "--patients", "60", "--professionals", "40", "--accounts",
              str(accounts_file))
    accounts = json.loads(accounts_file.read_text(encoding="utf-8"))
    env = {**carevault_env(workdir, base), "CAREVAULT_RATE_LIMIT_PER_MINUTE": "1000000"}
    with (workdir / "server.out").open("wb") as out, (workdir / "server.err").open("wb") as err:
        process = subprocess.Popen([CAREVAULT, "serve", "--host", "127.0.0.1", "--port",
                                    str(port)], cwd=workdir, env=env, stdout=out, stderr=err)
    try:
        _wait_until_healthy(process, base, workdir / "server.err")
        yield Site(workdir, base, accounts)
    finally:
        process.terminate()
        process.wait(timeout=30)


def authenticator(page: Any) -> None:
    """Chromium's virtual authenticator (CDP ``WebAuthn``) on the page's context."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
        "automaticPresenceSimulation": True}})


def enrol(site: Site, page: Any, card: Path) -> None:
    """The professional proves their card with the command line, then enrols a passkey in the
    browser: the workspace's home follows."""
    made = json.loads(site.cli("card", "enrol", "--card", str(card), "--base", site.base,
                               "--json"))
    authenticator(page)
    page.goto(f"{site.base}/workspace/enrol?lang=en")
    page.fill("#code", made["code"])
    page.click("#enrol")
    page.wait_for_url(f"{site.base}/workspace?lang=en")


def each_language(page: Any, url: str) -> None:
    """The page, axe-clean in the three languages (English last)."""
    for lang in LANGUAGES:
        page.goto(f"{url}{'&' if '?' in url else '?'}lang={lang}", wait_until="load")
        assert axe_violations(page) == [], (url, lang)
