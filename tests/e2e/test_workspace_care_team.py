"""A grant to a care team reaches its member (issue #16), in Debian's Chromium against a real
server on demo data: a registrar writes a care team with a demo physician as its member (the
registrar's FHIR API); the physician gets a card and enrols a passkey, and is refused the demo
patient's record; the patient signs in to the portal, finds the team by a word of its name on
"who can see my record" and gives it access until a date; the physician's workspace home then
lists the patient through the team, and the record shows its documents. The portal's pages
(who can see my record, the team found, the access given) and the workspace's are axe-clean in
French, German and English."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.browser import axe_violations, chromium, new_page, page_errors

from .conftest import CAREVAULT, carevault_env, free_port, registrar_token, unused_totp

pytestmark = pytest.mark.e2e

LANGUAGES = ("fr", "de", "en")
TEAM = "Équipe Soins Palliatifs"


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


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("workspace-care-team")
    # WebAuthn refuses an IP address: the public address (the relying party) is localhost.
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
        from .conftest import _wait_until_healthy

        _wait_until_healthy(process, base, workdir / "server.err")
        yield Site(workdir, base, accounts)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def care_team(site: Site, member_id: str) -> str:
    """The registrar writes a care team of the member's organization, the member in it."""
    token = registrar_token(site.base, site.workdir)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json",
               "Accept": "application/fhir+json"}
    with httpx.Client(base_url=f"{site.base}/fhir", headers=headers, timeout=30.0) as fhir:
        roles = fhir.get("/PractitionerRole", params={"practitioner": member_id})
        assert roles.status_code == 200, roles.text
        organization = next(
            entry["resource"]["organization"]["reference"]
            for entry in roles.json()["entry"] if "organization" in entry["resource"])
        made = fhir.post("/CareTeam", json={
            "resourceType": "CareTeam", "status": "active", "name": TEAM,
            "managingOrganization": [{"reference": organization}],
            "participant": [{"member": {"reference": f"Practitioner/{member_id}"}}]})
        assert made.status_code == 201, made.text
        return str(made.json()["id"])


def enrol(site: Site, page: Any, card: Path) -> None:
    """The professional proves their card with the command line, then enrols a passkey with
    Chromium's virtual authenticator: the workspace's home follows."""
    made = json.loads(site.cli("card", "enrol", "--card", str(card), "--base", site.base,
                               "--json"))
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
        "automaticPresenceSimulation": True}})
    page.goto(f"{site.base}/workspace/enrol?lang=en")
    page.fill("#code", made["code"])
    page.click("#enrol")
    page.wait_for_url(f"{site.base}/workspace?lang=en")


def each_language(page: Any, url: str) -> None:
    """The page, axe-clean in the three languages (English last)."""
    for lang in LANGUAGES:
        page.goto(f"{url}{'&' if '?' in url else '?'}lang={lang}", wait_until="load")
        assert axe_violations(page) == [], (url, lang)


def find_team(site: Site, page: Any, lang: str) -> Any:
    """The team as the patient finds it on "who can see my record", in ``lang``."""
    page.goto(f"{site.base}/me/access?lang={lang}", wait_until="load")
    assert axe_violations(page) == [], ("/me/access", lang)
    page.fill("#find-name", "palliatifs")
    with page.expect_navigation(wait_until="load"):
        page.click("#find-submit")
    assert axe_violations(page) == [], ("/me/access/find", lang)
    return page.locator('#found li[data-party="care_team"]')


def test_a_grant_to_a_care_team_reaches_its_member(site: Site, browser: Any) -> None:
    patient = site.patient
    member = [p for p in site.accounts["professionals"] if p["profession"] == "physician"][1]
    team = care_team(site, member["practitioner_id"])
    card = site.workdir / "member-card"
    site.cli("pki", "issue-practitioner", member["practitioner_id"], "--out", str(card))
    record = f"{site.base}/workspace/record/{patient['patient_id']}"
    with new_page(browser) as workspace:
        problems = page_errors(workspace)
        enrol(site, workspace, card)
        assert workspace.locator("#no-grants").is_visible()
        workspace.goto(f"{record}?lang=en", wait_until="load")
        assert workspace.locator("#refusal").is_visible()  # nothing lets them in yet

        with new_page(browser) as portal:
            portal.goto(f"{site.base}/login?lang=en", wait_until="load")
            credentials = patient["portal"]
            portal.fill("#login", credentials["login"])
            portal.fill("#password", credentials["password"])
            portal.fill("#code", unused_totp(credentials["totp_secret"]))
            with portal.expect_navigation(wait_until="load"):
                portal.click("#signin")
            assert "/me" in portal.url, portal.url
            for lang in LANGUAGES:  # English last: the grant is given from there
                found = find_team(site, portal, lang)
            assert found.count() == 1 and found.get_attribute("data-party-id") == team
            shown = found.inner_text()
            assert TEAM in shown and "members now: 1" in shown
            assert member["name"] not in shown  # the team, never who is in it
            assert found.locator("button.block").count() == 0  # a team is not blocked
            assert found.locator("input.end").get_attribute("required") is not None
            found.locator("select.level").select_option("normal")
            with portal.expect_navigation(wait_until="load"):
                found.locator("button.grant").click()
            assert portal.locator("#done").is_visible()
            assert f"{TEAM} (care team)" in portal.inner_text("#grant-list")
            each_language(portal, f"{site.base}/me/access")

        workspace.goto(f"{site.base}/workspace?lang=en", wait_until="load")
        line = workspace.locator("#grants tbody tr", has_text=TEAM)
        assert line.count() == 1
        assert patient["name"].split()[-1] in line.inner_text()
        each_language(workspace, f"{site.base}/workspace")
        with workspace.expect_navigation(wait_until="load"):
            workspace.goto(f"{site.base}/workspace?lang=en")
            line.locator("a").click()
        assert workspace.url.split("?")[0] == record
        assert workspace.locator("#refusal").count() == 0
        assert workspace.locator("#documents tbody tr").count() >= 1
        assert workspace.locator("#documents tbody tr", has_text="Consultation").count() == 1
        each_language(workspace, record)
        assert problems == []
