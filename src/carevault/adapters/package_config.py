"""The configuration CareVault ships as package data (``carevault/config/``), read when asked.

The domain parses a mapping (`ProfileMatrix.from_mapping`); reading the file is this adapter's
job, so that importing the domain reads nothing. Deployments point
``CAREVAULT_PROFILE_MATRIX_FILE`` at their own matrix (`bootstrap.load_profile_matrix`).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from carevault.domain.authorization import ProfileMatrix


def builtin_text(name: str) -> str:
    """One file of ``carevault/config``, as text."""
    return resources.files("carevault.config").joinpath(name).read_text("utf-8")


@cache
def builtin_profile_matrix() -> ProfileMatrix:
    """The built-in matrix (``profile-matrix.json``), the one place its defaults are written:
    psychiatric, genetic and HIV-related classes for physicians only; pharmacists see
    medication, prescriptions, allergies and vaccinations; an assistant has no profile of their
    own (they work with their mandator's)."""
    return ProfileMatrix.from_mapping(json.loads(builtin_text("profile-matrix.json")))
