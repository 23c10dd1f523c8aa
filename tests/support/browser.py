"""Debian's Chromium through Playwright, with axe-core for the accessibility checks.

Playwright never downloads a browser here: the system Chromium is launched by path. axe-core
comes from npm, installed by `.ci/run` into ``/opt/carevault-npm`` (``AXE``); it is injected as
an init script before each page loads, so that the page's own strict CSP stays enforced (an
injected script tag would be refused by it). ``axe_violations`` runs it and returns the serious
and critical violations, the ones a page must not have.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.requirements import CHROMIUM, CHROMIUM_BROWSER, PLAYWRIGHT, require

AXE = Path(os.environ.get("CAREVAULT_AXE", "/opt/carevault-npm/node_modules/axe-core/axe.min.js"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT_MS = 30_000
# WCAG 2.1 A and AA, as the issue asks.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@contextmanager
def chromium() -> Iterator[Any]:
    """One browser (a test module shares it: starting Chromium is the slow part)."""
    require(CHROMIUM_BROWSER, PLAYWRIGHT)
    if not AXE.is_file():
        import pytest

        if os.environ.get("CI") == "true":
            pytest.fail(f"axe-core is missing at {AXE} (.ci/run installs it)")
        pytest.skip(f"axe-core is not installed at {AXE}")
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def new_page(browser: Any, **options: Any) -> Iterator[Any]:
    """A fresh context (its own cookies) with axe-core loaded into every page."""
    context = browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(path=str(AXE))
    try:
        yield context.new_page()
    finally:
        context.close()


def axe_violations(page: Any) -> list[str]:
    """The page's serious and critical accessibility violations, one line each."""
    found = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS
    )
    return [
        f"{page.url}: {v['id']} ({v['impact']}): {v['help']} — "
        + "; ".join(node["target"][0] for node in v["nodes"][:3] if node.get("target"))
        for v in found["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def page_errors(page: Any) -> list[str]:
    """Uncaught errors and CSP refusals, gathered as the page runs."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: problems.append(f"console: {message.text}")
        if message.type == "error" and "Content Security Policy" in message.text
        else None,
    )
    return problems


__all__ = ["AXE", "axe_violations", "chromium", "new_page", "page_errors"]
