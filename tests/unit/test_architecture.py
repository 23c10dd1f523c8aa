"""The layering, checked on the source: every rule of docs/architecture.md's "Who may import
what" table, and that nothing reads files or settings at import time.

Today's exceptions are listed explicitly, each with its reason, and the lists must be exact: an
entry no longer needed fails the test, so they can only shrink."""

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


def _package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def _from_target(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from … import`` names, a relative one resolved in ``package``."""
    if not node.level:
        return node.module or ""
    base_parts = package.split(".")
    base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def imports_of(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of every module ``source`` imports, relative imports resolved."""
    package = _package_of(module, is_package)
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(node, package)
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


def test_the_tables_stay_inside_the_storage_adapter() -> None:
    imported = {"carevault.adapters.storage.schema", "carevault.adapters.storage.directory_store"}
    assert everywhere_violations("carevault.services.finder", imported) == {
        "carevault.adapters.storage.schema"
    }
    assert everywhere_violations("carevault.adapters.storage.record_store", imported) == set()


def test_typing_only_imports_count_too() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fastapi import X\n"
    assert domain_violations(imports_of(source, "carevault.domain.x")) == {"fastapi", "fastapi.X"}


# --- the rules -------------------------------------------------------------------------------


def _top(name: str) -> str:
    return name.split(".")[0]


def _carevault_outside(name: str, allowed: tuple[str, ...]) -> bool:
    """A carevault module that is none of ``allowed`` (``carevault`` itself is a package)."""
    if name in ("carevault", "carevault.__version__"):
        return False
    return _top(name) == "carevault" and not any(
        _inside(name, "carevault." + package) for package in allowed
    )


def fhirmodel_violations(imported: set[str]) -> set[str]:
    third_party = {"fhir", "pydantic"}
    return {
        name
        for name in imported
        if _carevault_outside(name, ("domain", "fhirmodel"))
        or (_top(name) not in sys.stdlib_module_names | third_party | {"carevault"})
    }


def adapter_violations(imported: set[str]) -> set[str]:
    return {
        name for name in imported if _carevault_outside(name, ("domain", "fhirmodel", "adapters"))
    }


def door_violations(imported: set[str]) -> set[str]:
    """``api`` and ``web`` use services, the domain, fhirmodel and the settings, and never open
    a database themselves."""
    return {
        name
        for name in imported
        if _carevault_outside(name, ("api", "web", "services", "domain", "fhirmodel", "settings"))
        or _top(name) == "sqlalchemy"
    }


def cli_violations(imported: set[str]) -> set[str]:
    return {
        name
        for name in imported
        if _inside(name, "carevault.api") or _inside(name, "carevault.web")
    }


def everywhere_violations(module: str, imported: set[str]) -> set[str]:
    """Rules for every module: only ``bootstrap`` and ``cli`` import the composition root; only
    ``adapters.storage`` imports SQLAlchemy (and Alembic) and names the tables (``schema``): a
    use case names a directory resource by its FHIR type, the store knows where it is kept."""
    bad = set()
    if not (_inside(module, "carevault.bootstrap") or _inside(module, "carevault.cli")):
        bad |= {name for name in imported if _inside(name, "carevault.bootstrap")}
    if not _inside(module, "carevault.adapters.storage"):
        bad |= {name for name in imported if _top(name) in ("sqlalchemy", "alembic")}
        bad |= {name for name in imported if _inside(name, "carevault.adapters.storage.schema")}
    return bad


LAYER_RULES = {
    "carevault.domain": domain_violations,
    "carevault.fhirmodel": fhirmodel_violations,
    "carevault.adapters": adapter_violations,
    "carevault.services": service_violations,
    "carevault.api": door_violations,
    "carevault.web": door_violations,
    "carevault.cli": cli_violations,
}


def shortest(names: set[str]) -> set[str]:
    """``from x import y`` yields x and x.y: keep x only."""
    return {name for name in names if not any(name.startswith(other + ".") for other in names)}


def bound_by_import(source: str, module: str, *, is_package: bool = False) -> dict[str, str]:
    """Names a module binds at its top level by importing them, with where they come from:
    ``from carevault.adapters.storage.x import Store`` binds Store to
    ``carevault.adapters.storage.x.Store``."""
    package = _package_of(module, is_package)
    bound: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom):
            target = _from_target(node, package)
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{target}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name.split(".")[0]] = alias.name
    return bound


def through_reexports(imported: set[str], bindings: dict[str, dict[str, str]]) -> set[str]:
    """Where the imported names really come from: a name a module imports from another module
    that itself imported it (a re-export) counts as imported from its origin too, so that a
    forbidden import cannot be laundered through a module that may make it."""
    found = set(imported)
    pending = list(imported)
    while pending:
        module, _, name = pending.pop().rpartition(".")
        origin = bindings.get(module, {}).get(name)
        if origin is not None and origin not in found:
            found |= {origin, origin.rpartition(".")[0]}
            pending.append(origin)
    return found


def violations_of(module: str, imported: set[str]) -> set[str]:
    bad = everywhere_violations(module, imported)
    for layer, rule in LAYER_RULES.items():
        if _inside(module, layer):
            bad |= rule(imported)
    return shortest(bad)


DATABASE_CALLS = frozenset({"connect", "create_engine"})
# Opening a unit of work: the services own their transactions, so a view or a handler that
# opens one itself holds a transaction no use case owns.
OPENS_UNIT_OF_WORK = frozenset({"units", "unit_of_work", "read_units"})


def calls_of(source: str) -> set[str]:
    """Names of the functions and methods ``source`` calls: ``engine.connect()`` is connect."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                found.add(node.func.id)
            elif isinstance(node.func, ast.Attribute):
                found.add(node.func.attr)
    return found


IMPORT_TIME_READS = frozenset(
    {"open", "read_text", "read_bytes", "files", "load", "loads", "Settings", "getenv"}
)


def import_time_reads(source: str) -> set[str]:
    """Calls that read a file, a package resource or the settings, made when the module is
    imported: anywhere but inside a function body (a class body and a default value run at
    import too)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for part in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
                if part is not None:
                    visit(part)
            return
        if isinstance(node, ast.Lambda):
            return
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in IMPORT_TIME_READS:
                found.add(name)
        if isinstance(node, ast.Attribute) and node.attr == "environ":
            found.add("environ")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def _sources() -> list[tuple[str, str, bool]]:
    return [
        (module_name(path), path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


SOURCES = _sources()
DOMAIN = modules_under("carevault.domain")
SERVICES = modules_under("carevault.services")


def found_violations() -> dict[tuple[str, str], str]:
    """(module, forbidden import or call) for every module."""
    found = {}
    bindings = {
        module: bound_by_import(source, module, is_package=is_package)
        for module, source, is_package in SOURCES
    }
    for module, source, is_package in SOURCES:
        imported = through_reexports(imports_of(source, module, is_package=is_package), bindings)
        for name in violations_of(module, imported):
            found[(module, name)] = "import"
        if _inside(module, "carevault.api") or _inside(module, "carevault.web"):
            for call in calls_of(source) & (DATABASE_CALLS | OPENS_UNIT_OF_WORK):
                found[(module, f"{call}()")] = "call"
    return found


def found_import_time_reads() -> set[tuple[str, str]]:
    return {
        (module, f"{call}()") for module, source, _ in SOURCES for call in import_time_reads(source)
    }


# --- today's exceptions: exact, so that they can only shrink ------------------------------------


ALLOWED_VIOLATIONS: dict[tuple[str, str], str] = {
    ("carevault.api.access", "units()"): (
        "the door's gate: one read-only unit of work for the decision and the handler"
    ),
    ("carevault.bootstrap", "sqlalchemy"): (
        "the composition root builds the engine: its builders name SQLAlchemy's Engine type"
    ),
}

ALLOWED_IMPORT_TIME_READS: dict[tuple[str, str], str] = {}


def _exact(found: set[tuple[str, str]], allowed: dict[tuple[str, str], str]) -> list[str]:
    problems = [f"{module} → {name}: not allowed" for module, name in sorted(found - set(allowed))]
    problems += [
        f"{module} → {name}: no longer needed, remove it from the list"
        for module, name in sorted(set(allowed) - found)
    ]
    return problems


# --- the checks --------------------------------------------------------------------------------


def test_the_checkers_flag_what_their_layer_may_not_import() -> None:
    assert fhirmodel_violations({"fhir.resources", "pydantic", "carevault.domain.x"}) == set()
    assert fhirmodel_violations({"httpx", "carevault.adapters"}) == {"httpx", "carevault.adapters"}
    assert adapter_violations({"carevault.fhirmodel.mhd", "carevault.services.x"}) == {
        "carevault.services.x"
    }
    assert door_violations({"carevault.services.x", "sqlalchemy", "carevault.adapters.k"}) == {
        "sqlalchemy",
        "carevault.adapters.k",
    }
    assert cli_violations({"carevault.bootstrap", "carevault.web.portal"}) == {
        "carevault.web.portal"
    }
    assert everywhere_violations("carevault.services.x", {"carevault.bootstrap", "sqlalchemy"}) == {
        "carevault.bootstrap",
        "sqlalchemy",
    }
    assert everywhere_violations("carevault.cli.main", {"carevault.bootstrap"}) == set()
    assert everywhere_violations("carevault.adapters.storage.x", {"sqlalchemy.exc"}) == set()
    assert shortest({"sqlalchemy", "sqlalchemy.exc", "carevault.x.y", "carevault.x.y.Z"}) == {
        "sqlalchemy",
        "carevault.x.y",
    }


def test_a_forbidden_import_is_found_through_a_module_that_re_exports_it() -> None:
    """The HTTP layer may import services, a service may import the storage adapters: a name
    the service merely re-exports still counts as imported from the adapter (the way the
    prescription handlers once reached the concrete unit of work)."""
    service = "from carevault.adapters.storage.unit_of_work import SqlUnitOfWork\n"
    bindings = {"carevault.services.x": bound_by_import(service, "carevault.services.x")}
    handler = "from carevault.services.x import SqlUnitOfWork\n"
    imported = through_reexports(imports_of(handler, "carevault.api.h"), bindings)
    assert violations_of("carevault.api.h", imported) == {
        "carevault.adapters.storage.unit_of_work"
    }
    own = "from carevault.services.x import Defined\n"
    assert violations_of("carevault.api.h", through_reexports(
        imports_of(own, "carevault.api.h"), bindings)) == set()


def test_import_time_reads_are_found_outside_function_bodies_only() -> None:
    source = (
        "import json, os\n"
        "from importlib import resources\n"
        "TEXT = resources.files('p').joinpath('x.json').read_text('utf-8')\n"
        "HOME = os.environ['HOME']\n"
        "def f(x=open('y')):\n"
        "    return json.loads(open('z').read())\n"
        "class C:\n"
        "    s = Settings()\n"
        "g = lambda: open('w')\n"
    )
    assert import_time_reads(source) == {"files", "read_text", "environ", "open", "Settings"}


def test_there_is_something_to_check() -> None:
    names = {name for name, _ in DOMAIN}
    assert {"carevault.domain", "carevault.domain.errors", "carevault.domain.text"} <= names
    assert "carevault.services" in {name for name, _ in SERVICES}
    assert {"carevault.bootstrap", "carevault.api.fhir.door"} <= {name for name, _, _ in SOURCES}


def test_every_module_keeps_to_the_import_rules_but_the_listed_exceptions() -> None:
    problems = _exact(set(found_violations()), ALLOWED_VIOLATIONS)
    assert not problems, "\n".join(problems)


RECORDERS = frozenset({"carevault.api.route_door", "carevault.api.audit_trail"})
# Views that still build their audit records themselves; each should note its record for the
# route door instead (`admitted(request).note`), and leave this list.
ALLOWED_HAND_BUILT_RECORDS: dict[str, str] = {}


def builds_audit_records(source: str) -> bool:
    return "AuditRecord" in calls_of(source)


def test_the_http_layer_builds_audit_records_only_in_its_two_recorders() -> None:
    """One door, one record: outside /fhir the route door builds a request's record from what
    the handler noted; under /fhir, the audit trail. A handler that builds its own record
    bypasses both (and their 503 when the log cannot be written)."""
    found = {
        module
        for module, source, _ in SOURCES
        if (_inside(module, "carevault.api") or _inside(module, "carevault.web"))
        and module not in RECORDERS
        and builds_audit_records(source)
    }
    problems = [
        f"{m}: builds an AuditRecord by hand"
        for m in sorted(found - set(ALLOWED_HAND_BUILT_RECORDS))
    ]
    problems += [
        f"{m}: no longer needed, remove it from the list"
        for m in sorted(set(ALLOWED_HAND_BUILT_RECORDS) - found)
    ]
    assert not problems, "\n".join(problems)
    assert builds_audit_records("x = AuditRecord(stream='clinical')\n")


def test_nothing_reads_files_or_settings_at_import_time_but_the_listed_exceptions() -> None:
    problems = _exact(found_import_time_reads(), ALLOWED_IMPORT_TIME_READS)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("module", "imported"), DOMAIN, ids=[name for name, _ in DOMAIN])
def test_domain_imports_only_the_standard_library_and_itself(
    module: str, imported: set[str]
) -> None:
    assert domain_violations(imported) == set(), f"{module} imports outside the domain"


@pytest.mark.parametrize(("module", "imported"), SERVICES, ids=[name for name, _ in SERVICES])
def test_services_do_not_import_api_web_or_cli(module: str, imported: set[str]) -> None:
    assert service_violations(imported) == set(), f"{module} reaches into an upper layer"


SERVICE_TESTS = Path(__file__).resolve().parent / "services"
# Service modules without a unit-test module of their own, each with its reason.
UNTESTED_SERVICES: dict[str, str] = {
    "carevault.services.unit_of_work": (
        "the port itself (a Protocol): the fake and the SQL adapter implement it, checked by "
        "the store contract tests on SQLite and PostgreSQL"
    ),
}


def services_without_unit_tests() -> set[str]:
    """Service modules with no ``tests/unit/services/test_<name>.py`` that imports them."""
    missing = set()
    for path in sorted((PACKAGE / "services").glob("*.py")):
        if path.name == "__init__.py":
            continue
        module = module_name(path)
        test = SERVICE_TESTS / f"test_{path.stem}.py"
        if not test.exists() or module not in imports_of(test.read_text(encoding="utf-8"), ""):
            missing.add(module)
    return missing


def test_every_service_module_has_unit_tests_of_its_own() -> None:
    """Each use-case module is tested on the fake unit of work in a module named after it, so
    that a new service comes with its tests (docs/architecture.md, "adding a capability")."""
    found = services_without_unit_tests()
    problems = [f"{m}: no tests/unit/services/test_<name>.py imports it"
                for m in sorted(found - set(UNTESTED_SERVICES))]
    problems += [f"{m}: has unit tests now, remove it from the list"
                 for m in sorted(set(UNTESTED_SERVICES) - found)]
    assert not problems, "\n".join(problems)
