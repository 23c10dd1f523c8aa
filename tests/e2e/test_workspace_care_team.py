"""A grant to a care team reaches its member (issue #16), in Debian's Chromium against a real
server on demo data: a registrar writes a care team with a demo physician as its member (the
registrar's FHIR API); the physician gets a card and enrols a passkey, and is refused the demo
patient's record; the patient signs in to the portal, finds the team by a word of its name on
"who can see my record" and gives it access until a date; the physician's workspace home then
lists the patient through the team, and the record shows its documents. The portal's pages
(who can see my record, the team found, the access given) and the workspace's are axe-clean in
French, German and English."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.browser import axe_violations, chromium, new_page, page_errors

from .conftest import registrar_token, unused_totp
from .workspace_site import LANGUAGES, Site, demo_site, each_language, enrol

pytestmark = pytest.mark.e2e

TEAM = "Équipe Soins Palliatifs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with demo_site(tmp_path_factory.mktemp("workspace-care-team")) as served:
        yield served


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
