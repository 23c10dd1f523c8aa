"""The portal's languages: French, English and German, chosen by the person.

Words live in JSON message catalogues beside this module (``messages/<lang>.json``, one object
per page family: ``portal``, ``presence``, …), read once on first use (nothing is read at import
time); every catalogue has exactly the keys of the English one (tested), so that a page never
shows a key instead of a sentence. Dates and times are written by Babel in the chosen
language, in the platform's time zone.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Final
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from fastapi import Request

LANGUAGES: Final = ("fr", "en", "de")
DEFAULT_LANGUAGE: Final = "en"
# The names of the languages in themselves, for the language choice of every page.
LANGUAGE_NAMES: Final = {"fr": "Français", "en": "English", "de": "Deutsch"}
# Dates are shown in the platform's country (the Luxembourg model): a person reads local time.
TIME_ZONE: Final = ZoneInfo("Europe/Luxembourg")

Catalogue = dict[str, dict[str, str]]


def language(request: Request) -> str:
    """The language the person chose (``?lang=``), English when they chose none we speak."""
    chosen = request.query_params.get("lang", DEFAULT_LANGUAGE)
    return chosen if chosen in LANGUAGES else DEFAULT_LANGUAGE


@cache
def catalogue(lang: str) -> Catalogue:
    """Every message of one language, by page family then key."""
    if lang not in LANGUAGES:
        raise ValueError(f"no catalogue for language {lang!r}")
    text = resources.files("carevault.web").joinpath("messages", f"{lang}.json").read_text("utf-8")
    loaded: Catalogue = json.loads(text)
    return loaded


def messages(lang: str, family: str = "portal") -> dict[str, str]:
    """One page family's messages in ``lang``."""
    return catalogue(lang)[family]


def _local(value: datetime) -> datetime:
    """``value`` in local time; at the edge of the years Python holds (an access given until
    9999-12-31 through the API), as it is: a page must not fail on a date it shows."""
    try:
        return value.astimezone(TIME_ZONE)
    except OverflowError:
        return value


def day(value: datetime, lang: str) -> str:
    """A date as a person writes it in ``lang`` (5 December 2026, 5 décembre 2026, …)."""
    return format_date(_local(value), format="long", locale=lang)


def moment(value: datetime, lang: str) -> str:
    """A date and time, short enough for a table row, in ``lang`` and local time."""
    return format_datetime(_local(value), format="medium", locale=lang)


def month(value: datetime, lang: str) -> str:
    """A month and year (for the accesses-per-month chart)."""
    return format_date(_local(value), format="MMMM y", locale=lang)


__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "LANGUAGE_NAMES",
    "catalogue",
    "day",
    "language",
    "messages",
    "moment",
    "month",
]
