"""The portal's message catalogues: every language has every message, with the same
placeholders, so that no page shows a key or fails to fill a sentence in one language."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from carevault.web.i18n import LANGUAGES, catalogue, day, moment

PLACEHOLDER = re.compile(r"\{(\w+)\}")


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_every_language_has_every_message_with_its_placeholders(lang: str) -> None:
    english, other = catalogue("en"), catalogue(lang)
    assert set(other) == set(english)
    for family, texts in english.items():
        assert set(other[family]) == set(texts), family
        for key, text in texts.items():
            assert set(PLACEHOLDER.findall(other[family][key])) == set(
                PLACEHOLDER.findall(text)), f"{family}.{key}"
            assert other[family][key].strip(), f"{family}.{key} is empty"


def test_dates_are_written_in_the_chosen_language_and_local_time() -> None:
    at = datetime(2026, 3, 12, 9, 42, tzinfo=UTC)  # 10:42 in Luxembourg
    assert day(at, "fr") == "12 mars 2026"
    assert day(at, "de") == "12. März 2026"
    assert day(at, "en") == "March 12, 2026"
    assert "10:42" in moment(at, "fr")


def test_an_unknown_language_has_no_catalogue() -> None:
    with pytest.raises(ValueError, match="no catalogue"):
        catalogue("xx")
