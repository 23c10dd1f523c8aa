"""The layering, checked on the source: the domain depends on nothing but the standard library,
and the services never reach up into the HTTP, web or command-line layers."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "carevault"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of every module ``source`` imports, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            # ``from carevault import api`` imports the module carevault.api
            found.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def modules_under(package: str) -> list[tuple[str, set[str]]]:
    root = SRC.joinpath(*package.split("."))
    result = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path)
        source = path.read_text(encoding="utf-8")
        result.append((name, imports_of(source, name, is_package=path.name == "__init__.py")))
    return result


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def domain_violations(imported: set[str]) -> set[str]:
    """What a domain module may not import: anything but the standard library and the domain."""
    allowed_stdlib = sys.stdlib_module_names
    bad = set()
    for name in imported:
        top = name.split(".")[0]
        if top == "carevault":
            # ``from carevault.domain import x`` also yields "carevault.domain.x": fine.
            if not _inside(name, "carevault.domain"):
                bad.add(name)
        elif top not in allowed_stdlib:
            bad.add(name)
    return bad


UPPER_LAYERS = ("carevault.api", "carevault.web", "carevault.cli")


def service_violations(imported: set[str]) -> set[str]:
    return {name for name in imported if any(_inside(name, layer) for layer in UPPER_LAYERS)}


# --- the checker itself ----------------------------------------------------------------------


def test_import_collection_resolves_relative_and_from_imports() -> None:
    source = (
        "import os, json\n"
        "import sqlalchemy.orm\n"
        "from . import text\n"
        "from ..adapters.storage import schema\n"
        "from carevault import api\n"
        "from carevault.domain.errors import InvalidInput\n"
    )
    found = imports_of(source, "carevault.domain.directory")
    assert {"os", "json", "sqlalchemy.orm", "carevault.domain.text"} <= found
    assert "carevault.adapters.storage.schema" in found
    assert "carevault.api" in found
    assert domain_violations(found) == {
        "sqlalchemy.orm",
        "carevault.adapters.storage",
        "carevault.adapters.storage.schema",
        "carevault",
        "carevault.api",
    }


def test_relative_imports_in_a_package_init() -> None:
    found = imports_of("from .errors import X\n", "carevault.domain", is_package=True)
    assert "carevault.domain.errors" in found


def test_the_checker_flags_what_services_may_not_import() -> None:
    imported = {"carevault.api.fhir.door", "carevault.webhooks", "carevault.adapters", "json"}
    assert service_violations(imported) == {"carevault.api.fhir.door"}


def test_typing_only_imports_count_too() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fastapi import X\n"
    assert domain_violations(imports_of(source, "carevault.domain.x")) == {"fastapi", "fastapi.X"}


# --- the rules -------------------------------------------------------------------------------

DOMAIN = modules_under("carevault.domain")
SERVICES = modules_under("carevault.services")


def test_there_is_something_to_check() -> None:
    names = {name for name, _ in DOMAIN}
    assert {"carevault.domain", "carevault.domain.errors", "carevault.domain.text"} <= names
    assert "carevault.services" in {name for name, _ in SERVICES}


@pytest.mark.parametrize(("module", "imported"), DOMAIN, ids=[name for name, _ in DOMAIN])
def test_domain_imports_only_the_standard_library_and_itself(
    module: str, imported: set[str]
) -> None:
    assert domain_violations(imported) == set(), f"{module} imports outside the domain"


@pytest.mark.parametrize(("module", "imported"), SERVICES, ids=[name for name, _ in SERVICES])
def test_services_do_not_import_api_web_or_cli(module: str, imported: set[str]) -> None:
    assert service_violations(imported) == set(), f"{module} reaches into an upper layer"
