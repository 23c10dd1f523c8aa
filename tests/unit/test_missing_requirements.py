"""The block at the end of a run that says which suites did not run, why, and the one
``apt-get install`` line that brings what is missing; and that under ``CI=true`` the same
suites fail instead.

A small test tree is run by a real pytest in a subprocess, with the project's own
``tests/conftest.py`` (its hooks) and requirements of its own that are missing on any machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]

NEEDS = '''
from support.requirements import Requirement, require

PRESENT = Requirement("A present tool", "present-tool", lambda: None)
GADGET = Requirement("The gadget", "gadget-tools", lambda: "/usr/bin/gadget not found")
WIDGET = Requirement("The widget", "widget", lambda: "libwidget.so.3 not found",
                     hint="or build it from source")
'''

TREE = {
    "needs.py": NEEDS,
    "test_gadget.py": (
        "from needs import GADGET, PRESENT, require\n\n"
        "def test_one():\n    require(GADGET)\n\n"
        "def test_two():\n    require(PRESENT, GADGET)\n\n"
        "def test_present():\n    require(PRESENT)\n"
    ),
    "test_widget.py": (
        "import pytest\nfrom needs import WIDGET, require\n\n"
        "@pytest.fixture(scope='module')\ndef widget():\n    require(WIDGET)\n\n"
        "def test_uses_it(widget):\n    pass\n\n"
        "def test_uses_it_again(widget):\n    pass\n"
    ),
    "test_plain.py": "def test_nothing_needed():\n    pass\n",
}


def run(tmp_path: Path, *args: str, ci: bool = False) -> subprocess.CompletedProcess[str]:
    tree = tmp_path / "tree"
    if not tree.exists():
        tree.mkdir()
        (tree / "conftest.py").write_text((TESTS / "conftest.py").read_text("utf-8"), "utf-8")
        (tree / "pytest.ini").write_text(  # the project's conftest imports a deprecated path
            "[pytest]\nfilterwarnings =\n"
            "    ignore:Using `httpx` with `starlette.testclient` is deprecated\n", "utf-8")
        for name, text in TREE.items():
            (tree / name).write_text(text, "utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(tree)])
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(tree / "pytest.ini"), "--rootdir", str(tree),
         "-p", "no:cacheprovider", "--import-mode=importlib", "-q", "-rs", *args],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300, check=False)


def block(output: str) -> list[str]:
    """The lines of the block: after its separator, up to the final counts line."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "suites that did not run" in line)
    assert "=" * 10 in lines[start]
    return lines[start + 1:-1]


def test_the_block_says_what_did_not_run_why_and_how_to_get_it(tmp_path: Path) -> None:
    done = run(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().splitlines()[-1].startswith("2 passed, 4 skipped")
    assert block(done.stdout) == [
        "4 tests were skipped: this machine lacks what their suites need.",
        "  The gadget: /usr/bin/gadget not found",
        "      test_gadget.py (2)",
        "  The widget: libwidget.so.3 not found",
        "      test_widget.py (2)",
        "      or build it from source",
        "To run them all: sudo apt-get install gadget-tools widget",
        "Under CI=true these suites fail instead of being skipped.",
    ]
    # It comes last, after pytest's own summary; one install line, of what is missing only.
    assert done.stdout.index("short test summary info") < done.stdout.index(
        "suites that did not run")
    assert done.stdout.count("apt-get install gadget-tools widget") == 1
    assert "present-tool" not in done.stdout
    # Each skip says the same thing the same way.
    assert done.stdout.count("SKIPPED") == 3  # pytest groups identical reasons
    assert ("needs The gadget: /usr/bin/gadget not found; apt-get install gadget-tools"
            in done.stdout)


def test_under_ci_the_same_suites_fail(tmp_path: Path) -> None:
    done = run(tmp_path, ci=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.rstrip().splitlines()[-1].startswith("2 failed, 2 passed, 2 errors")
    assert block(done.stdout) == [
        "4 tests failed (CI=true: they are required): this machine lacks what their suites "
        "need.",
        "  The gadget: /usr/bin/gadget not found",
        "      test_gadget.py (2)",
        "  The widget: libwidget.so.3 not found",
        "      test_widget.py (2)",
        "      or build it from source",
        "To run them all: sudo apt-get install gadget-tools widget",
    ]
    assert "(required under CI=true)" in done.stdout


def test_nothing_is_said_when_every_suite_ran(tmp_path: Path) -> None:
    done = run(tmp_path, "test_plain.py", "test_gadget.py::test_present")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "suites that did not run" not in done.stdout
    assert "apt-get" not in done.stdout


@pytest.mark.parametrize("name", ["POSTGRESQL", "SOFTHSM2", "RSYSLOG", "RSYSLOG_GNUTLS",
                                  "RSYSLOG_RELP", "CHROMIUM_BROWSER", "PLAYWRIGHT",
                                  "OPENSSL_TS"])
def test_every_optional_dependency_fails_under_ci(name: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the machine has: told it is missing, each requirement skips outside CI and
    fails under CI=true (the suites reach them only through `require` / `missing`)."""
    from support import requirements

    requirement = getattr(requirements, name)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"needs {requirement.name}: gone"):
        requirements.missing(requirement, "gone")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI=true"):
        requirements.missing(requirement, "gone")


def test_rsyslog_modules_are_looked_for_where_debian_puts_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from support import requirements

    monkeypatch.setattr(requirements, "RSYSLOG_MODULE_DIRS", (str(tmp_path),))
    assert requirements.RSYSLOG_GNUTLS.find() == "rsyslog's lmnsd_gtls.so is not installed"
    assert requirements.RSYSLOG_RELP.find() == "rsyslog's imrelp.so is not installed"
    (tmp_path / "lmnsd_gtls.so").touch()
    assert requirements.RSYSLOG_GNUTLS.find() is None
    assert requirements.RSYSLOG_RELP.find() is not None
