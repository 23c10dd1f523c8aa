"""What a browser may keep of the portal's forms: every field a person types into says so.

Browsers remember what is typed into text fields and offer it to the next person who uses the
same field on the same computer (a hospital workstation, a family's laptop): a national
identification number, a document's title, a patient's name or birth date searched, the reason
given for an emergency access. Each field of every template therefore carries an
``autocomplete`` attribute: ``off``, or the token of what it deliberately is (``username``,
``one-time-code``, ``current-password``, ``new-password``)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import carevault.web

TEMPLATES = Path(carevault.web.__file__).parent / "templates"
NOT_TYPED = {"hidden", "submit", "button", "checkbox", "radio", "file", "reset", "image"}
DELIBERATE = {"off", "username", "one-time-code", "current-password", "new-password"}


class Fields(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[int, str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("input", "textarea"):
            self.found.append((self.getpos()[0], tag, dict(attrs)))


def typed_fields(text: str) -> list[tuple[int, str, dict[str, str | None]]]:
    parser = Fields()
    parser.feed(text)
    return [(line, tag, attrs) for line, tag, attrs in parser.found
            if tag == "textarea" or (attrs.get("type") or "text") not in NOT_TYPED]


def test_every_typed_field_says_what_the_browser_may_keep() -> None:
    undeclared = [
        f"{path.name}:{line} {tag} {attrs.get('name')!r}: {attrs.get('autocomplete')!r}"
        for path in sorted(TEMPLATES.glob("*.html"))
        for line, tag, attrs in typed_fields(path.read_text("utf-8"))
        if attrs.get("autocomplete") not in DELIBERATE
    ]
    assert not undeclared, undeclared


def test_the_fields_of_personal_data_are_among_those_checked() -> None:
    """The check reads the fields it is meant to: a national identification number, a
    document's title, a birth date searched, an emergency's reason."""
    seen = {(path.name, attrs.get("name")) for path in TEMPLATES.glob("*.html")
            for _, _, attrs in typed_fields(path.read_text("utf-8"))}
    assert {("enrol.html", "national_id"), ("workspace_publish.html", "title"),
            ("documents.html", "title"), ("workspace_find.html", "birthdate"),
            ("workspace_emergency.html", "reason")} <= seen
