"""A conformance report as a page a person reads: one self-contained, accessible HTML file.

The page is a rendering of the signed JSON, for reading; what is trusted is the JSON's
signature (`carevault conformance verify`). It has no script and no outside resource, states
each step's result in words (never by colour alone), and uses a table with a caption and
header cells so that a screen reader announces each result with its step.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

_STATUS = {
    "passed": "Performed correctly",
    "failed": "Failed",
    "not-attempted": "Not attempted",
}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem;
       padding: 0 1rem; color: #1a1a1a; background: #fff; line-height: 1.5; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; font-weight: bold; padding: 0.5rem 0; }
th, td { border: 1px solid #666; padding: 0.5rem; text-align: left; vertical-align: top; }
th { background: #eee; }
.passed { color: #0b5d1e; } .failed { color: #a00000; } .not-attempted { color: #6b4e00; }
.verdict { font-size: 1.25rem; font-weight: bold; }
code { overflow-wrap: anywhere; }
"""


def _text(value: Any) -> str:
    return escape(str(value), quote=True)


def _errors(step: Mapping[str, Any]) -> str:
    errors = step.get("errors") or []
    if not errors:
        return "None"
    items = "".join(
        f"<li>Audit entry {_text(e.get('entry'))} at {_text(e.get('recorded'))}: "
        f"<code>{_text(e.get('error'))}</code></li>"
        for e in errors
        if isinstance(e, Mapping)
    )
    more = int(step.get("failed-attempts", 0)) - len(errors)
    tail = f"<p>and {more} more failed attempt(s)</p>" if more > 0 else ""
    return f"<ul>{items}</ul>{tail}"


def report_page(document: Mapping[str, Any]) -> str:
    """The HTML page of a signed report file (``{"report": …, "signature": …}``)."""
    report: Mapping[str, Any] = document.get("report") or {}
    passed = report.get("passed") is True
    verdict = "PASSED: every step was performed correctly" if passed else "NOT PASSED"
    evidence: Mapping[str, Any] = report.get("evidence") or {}
    rows = "".join(
        "<tr>"
        f'<th scope="row">{_text(s.get("title"))}<br><small>{_text(s.get("transaction"))}'
        "</small></th>"
        f'<td class="{_text(s.get("status"))}">'
        f"{_text(_STATUS.get(str(s.get('status')), s.get('status')))}</td>"
        f"<td>{_text(s.get('attempts'))} request(s), {_text(s.get('failed-attempts'))} "
        f"failed</td>"
        f"<td>{_text(s.get('observed'))}</td>"
        f"<td>{_errors(s)}</td>"
        "</tr>"
        for s in report.get("steps") or []
        if isinstance(s, Mapping)
    )
    title = f"Conformance report: {report.get('system', '?')}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_text(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<main>
<h1>{_text(title)}</h1>
<p class="verdict {"passed" if passed else "failed"}">{_text(verdict)}</p>
<dl>
<dt>System</dt><dd>{_text(report.get("system"))}</dd>
<dt>SMART client</dt><dd><code>{_text(report.get("client_id"))}</code></dd>
<dt>Platform</dt><dd>{_text(report.get("platform"))} ({_text(report.get("environment"))})</dd>
<dt>Registered</dt><dd>{_text(report.get("registered"))}</dd>
<dt>Report issued</dt><dd>{_text(report.get("issued"))}</dd>
<dt>Evidence</dt><dd>{_text(evidence.get("requests"))} request(s) of the system, audit log
entries {_text(evidence.get("from-entry"))} to {_text(evidence.get("to-entry"))} of the
{_text(evidence.get("stream"))} stream</dd>
</dl>
<table>
<caption>The scenario, step by step, as the platform recorded the system's requests</caption>
<thead><tr><th scope="col">Step</th><th scope="col">Result</th><th scope="col">Requests</th>
<th scope="col">What the platform observes</th><th scope="col">Errors</th></tr></thead>
<tbody>{rows}</tbody>
</table>
<h2>Checking this report</h2>
<p>This page is a reading aid. The report is the JSON file beside it, signed by the platform
(EdDSA); check it offline with the platform's public key
(<code>/.well-known/carevault-signing-key.pem</code>):
<code>carevault conformance verify REPORT.json --public-key KEY.pem</code>.</p>
</main>
</body>
</html>
"""
