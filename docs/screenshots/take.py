"""Screenshots of the patient portal's main pages, for the README: ``docs/screenshots/*.png``
(the professional workspace's are taken by its journeys: ``CAREVAULT_SCREENSHOTS=1`` with
tests/e2e/test_workspace_journeys.py).

A real server on demo data, set up as `bench/portal.py` does (a scratch PostgreSQL database,
``carevault demo``, a physician who sees the first demo patient and publishes signed documents
to their record), then the physician declares an emergency so that the history shows one; the
patient signs in with password and TOTP and Debian's Chromium (never a downloaded one) takes
each page at a phone-friendly width.

Run: ``.venv/bin/python docs/screenshots/take.py`` (about a minute). It needs PostgreSQL as the
benchmarks do, and Chromium and Playwright as the browser tests do.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DATABASE = "carevault_screenshots"
# (file, page, what it shows)
SHOTS = (
    ("history-en.png", "/me?lang=en", "who accessed the record, an emergency highlighted"),
    ("history-de.png", "/me?lang=de&show=emergencies", "the same history in German, filtered"),
    ("documents-fr.png", "/me/documents?lang=fr", "the documents of the record, in French"),
    ("access-en.png", "/me/access?lang=en", "who can see the record, and its settings"),
    ("passkeys-en.png", "/me/passkeys?lang=en", "the account's passkeys, and adding one"),
    ("password-fr.png", "/me/password?lang=fr", "changing the password, in French"),
)


def _portal_bench() -> ModuleType:
    path = ROOT / "bench" / "portal.py"
    spec = importlib.util.spec_from_file_location("bench_portal", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_portal"] = module
    spec.loader.exec_module(module)
    return module


def declare_emergency(base_url: str, card: Any, patient_id: str) -> None:
    answer = httpx.post(
        f"{base_url}/fhir/Patient/{patient_id}/$emergency-access", timeout=30,
        headers={**card.headers(), "Content-Type": "application/fhir+json"},
        json={"resourceType": "Parameters",
              "parameter": [{"name": "reason", "valueString": "found unconscious at home"}]})
    if answer.status_code != 200:
        raise RuntimeError(f"$emergency-access answered {answer.status_code}: {answer.text}")
    read = httpx.get(f"{base_url}/fhir/DocumentReference", params={
        "patient": f"Patient/{patient_id}"}, headers=card.headers(), timeout=30)
    if read.status_code != 200:
        raise RuntimeError(f"the read under the emergency answered {read.status_code}")


def shoot(base_url: str, cookie: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    name, _, value = cookie.partition("=")
    taken = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 720, "height": 900})
            context.add_cookies([{"name": name, "value": value, "url": base_url}])
            page = context.new_page()
            for file, path, _what in SHOTS:
                answer = page.goto(base_url + path, wait_until="load")
                if answer is None or answer.status != 200:
                    raise RuntimeError(f"{path} answered {answer.status if answer else None}")
                page.screenshot(path=str(HERE / file), full_page=True)
                taken.append(HERE / file)
        finally:
            browser.close()
    return taken


def main() -> None:
    bench = _portal_bench()
    docs = bench.docs
    opts = bench.options(["--quick", "--documents", "6"])
    workdir = Path(tempfile.mkdtemp(prefix="carevault-screenshots-"))
    pg = docs.Postgres(opts.postgres, DATABASE)
    server: Any = None
    try:
        pg.create()
        port = docs.free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = docs.carevault_env(workdir, pg.url, base_url)
        docs.cli(env, workdir, "init")
        docs.cli(env, workdir, "db", "upgrade")
        accounts = workdir / "demo-accounts.json"
        docs.cli(env, workdir, "demo", "--patients", "5", "--accounts", str(accounts))
        demo = json.loads(accounts.read_text("utf-8"))["patients"][0]
        server = bench.retrieval.start_server(bench.retrieval.current(), env, workdir, port, 1)
        card = bench.publish_documents(env, workdir, base_url, pg, str(demo["patient_id"]),
                                       opts)
        declare_emergency(base_url, card, str(demo["patient_id"]))
        cookie = bench.sign_in(base_url, demo["portal"])
        for path in shoot(base_url, cookie):
            print(f"written {path.relative_to(ROOT)}")
    finally:
        if server is not None:
            server.stop()
        with contextlib.suppress(Exception):
            pg.drop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
