"""What the optional test suites need from the machine, and one way of saying it is missing.

Some suites need software that ``pip`` does not install: a PostgreSQL server, SoftHSM2, rsyslog
with its TLS and RELP modules, Debian's Chromium, ``openssl``. A test asks for what it needs
with `require` (or, when it found out itself, `missing`). When something is missing, the test is
skipped with a reason of one shape ("needs X: what is missing; apt-get install P") - except
under ``CI=true``, where it fails: a CI machine without them would be green while testing
nothing.

Every such skip or failure is marked on its report (``user_properties``), so that at the end of
the run `pytest_terminal_summary` (wired in ``tests/conftest.py``) prints one block: which suites
did not run, why, and the one ``apt-get install`` line that brings everything missing.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

PROPERTY = "missing_requirement"


@dataclass(frozen=True)
class Requirement:
    """Something a suite needs from the machine. ``find`` says what is missing (None: all is
    there); ``package`` is the Debian package that provides it, if one does; ``hint`` what else
    to do."""

    name: str
    package: str | None
    find: Callable[[], str | None] = lambda: None
    hint: str | None = None

    def reason(self, problem: str) -> str:
        fix = [f"apt-get install {self.package}"] if self.package else []
        fix += [self.hint] if self.hint else []
        return f"needs {self.name}: {problem}" + (f"; {'; '.join(fix)}" if fix else "")


def under_ci() -> bool:
    return os.environ.get("CI") == "true"


def missing(requirement: Requirement, problem: str) -> NoReturn:
    """Skip the current test (fail it under ``CI=true``): ``requirement`` is not met.

    The exception is pytest's own (reported as any skip or failure), carrying what was missing
    for `pytest_runtest_makereport`."""
    reason = requirement.reason(problem)
    stop: pytest.skip.Exception | pytest.fail.Exception = (
        pytest.fail.Exception(f"{reason} (required under CI=true)", pytrace=False)
        if under_ci()
        else pytest.skip.Exception(reason)
    )
    # Plain strings only: under pytest-xdist the report crosses a process boundary.
    stop.missing_requirement = (  # type: ignore[union-attr]
        requirement.name, requirement.package, requirement.hint, problem, under_ci())
    raise stop from None  # whatever was being handled is in ``problem``


def require(*requirements: Requirement) -> None:
    """Skip the current test (fail it under ``CI=true``) unless every requirement is met."""
    for requirement in requirements:
        problem = requirement.find()
        if problem is not None:
            missing(requirement, problem)


# --- what the suites need ------------------------------------------------------------------

RSYSLOG_MODULE_DIRS = (
    *sorted(glob.glob("/usr/lib/*-linux-gnu/rsyslog")),
    "/usr/lib/rsyslog",
    "/usr/lib64/rsyslog",
)
RSYSLOGD_CANDIDATES = ("/usr/sbin/rsyslogd", "/sbin/rsyslogd")
SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
CHROMIUM = Path("/usr/bin/chromium")
OPENSSL = "/usr/bin/openssl"


def find_rsyslogd() -> str | None:
    found = shutil.which("rsyslogd")
    if found:
        return found
    return next((path for path in RSYSLOGD_CANDIDATES if os.access(path, os.X_OK)), None)


def _rsyslog_module(name: str) -> Callable[[], str | None]:
    def find() -> str | None:
        if any(Path(directory, name).exists() for directory in RSYSLOG_MODULE_DIRS):
            return None
        return f"rsyslog's {name} is not installed"

    return find


def _missing_paths(*paths: tuple[str, bool]) -> str | None:
    absent = [name for name, present in paths if not present]
    return f"{', '.join(absent)} not found" if absent else None


def openssl_path() -> str | None:
    return OPENSSL if Path(OPENSSL).is_file() else shutil.which("openssl")


def _find_openssl_ts() -> str | None:
    path = openssl_path()
    if path is None:
        return "the openssl command is not installed"
    probe = subprocess.run([path, "ts", "-help"], capture_output=True, timeout=30, check=False)
    return None if probe.returncode == 0 else f"{path} has no working 'ts' subcommand"


def _postgresql_installed() -> bool:
    return shutil.which("pg_ctlcluster") is not None or Path("/usr/lib/postgresql").is_dir()


POSTGRESQL = Requirement(
    "PostgreSQL",
    None if _postgresql_installed() else "postgresql",
    hint="start the server (pg_ctlcluster <version> main start) or point "
    "CAREVAULT_TEST_DATABASE_URL at one",
)
SOFTHSM2 = Requirement(
    "SoftHSM2",
    "softhsm2",
    lambda: _missing_paths(
        ("softhsm2-util", shutil.which("softhsm2-util") is not None),
        (str(SOFTHSM_MODULE), SOFTHSM_MODULE.exists()),
    ),
)
RSYSLOG = Requirement(
    "rsyslog", "rsyslog", lambda: None if find_rsyslogd() else "rsyslogd is not installed"
)
RSYSLOG_GNUTLS = Requirement(
    "rsyslog's TLS driver", "rsyslog-gnutls", _rsyslog_module("lmnsd_gtls.so")
)
RSYSLOG_RELP = Requirement("rsyslog's RELP input", "rsyslog-relp", _rsyslog_module("imrelp.so"))
CHROMIUM_BROWSER = Requirement(
    "Chromium", "chromium", lambda: None if CHROMIUM.exists() else f"{CHROMIUM} not found"
)
PLAYWRIGHT = Requirement(
    "Playwright",
    None,
    lambda: None
    if importlib.util.find_spec("playwright") is not None
    else "the playwright package is not installed",
    hint=".venv/bin/pip install -e '.[test]'",
)
OPENSSL_TS = Requirement("openssl", "openssl", _find_openssl_ts)
DOVECOT_IMAPD = Requirement(
    "Dovecot's IMAP server",
    "dovecot-imapd",
    lambda: _missing_paths(
        ("dovecot", shutil.which("dovecot") is not None or Path("/usr/sbin/dovecot").exists()),
        ("imap", Path("/usr/lib/dovecot/imap").exists()),
    ),
)


def find_nginx() -> str | None:
    """Debian's nginx, on the PATH or where Debian puts it (``/usr/sbin``, often off a user's
    PATH)."""
    return shutil.which("nginx") or next(
        (str(p) for p in (Path("/usr/sbin/nginx"),) if p.exists()), None
    )


NGINX = Requirement(
    "nginx", "nginx", lambda: None if find_nginx() else "nginx is not installed"
)


# --- the reports and the summary -------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Mark the report of a test stopped by a missing requirement with what was missing."""
    report = yield
    marked = getattr(call.excinfo.value, PROPERTY, None) if call.excinfo is not None else None
    if marked is not None:
        report.user_properties.append((PROPERTY, marked))
    return report


Stopped = dict[tuple[str, str | None, str | None], tuple[str, dict[str, int], bool]]


def _stopped(reports: Iterable[pytest.TestReport]) -> Stopped:
    """For each missing requirement: what was missing, the tests it stopped per file, and
    whether they failed (CI) rather than skipped."""
    found: Stopped = {}
    for report in reports:
        for name, value in getattr(report, "user_properties", ()):
            if name != PROPERTY:
                continue
            name_, package, hint, problem, failed = value
            _, files, _ = found.setdefault((name_, package, hint), (problem, {}, failed))
            path = report.nodeid.split("::", 1)[0]
            files[path] = files.get(path, 0) + 1
    return found


def _files(files: dict[str, int], shown: int = 4) -> str:
    names = [f"{path} ({count})" for path, count in sorted(files.items())]
    more = f" and {len(names) - shown} more files" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def summary_lines(reports: Iterable[pytest.TestReport]) -> list[str]:
    """The block printed at the end of a run; empty when every suite could run."""
    stopped = _stopped(reports)
    if not stopped:
        return []
    failed = any(f for _, _, f in stopped.values())
    tests = sum(sum(files.values()) for _, files, _ in stopped.values())
    verb = "failed (CI=true: they are required)" if failed else "were skipped"
    lines = [f"{tests} tests {verb}: this machine lacks what their suites need."]
    for (name, _, hint), (problem, files, _) in sorted(stopped.items(), key=lambda i: i[0][0]):
        lines.append(f"  {name}: {problem}")
        lines.append(f"      {_files(files)}")
        if hint:
            lines.append(f"      {hint}")
    packages = sorted({package for _, package, _ in stopped if package})
    if packages:
        lines.append("To run them all: sudo apt-get install " + " ".join(packages))
    if not failed:
        lines.append("Under CI=true these suites fail instead of being skipped.")
    return lines


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter,
) -> Generator[None, None, None]:
    """After everything else the run prints (the outermost wrapper ends last), one block."""
    yield
    reports = [
        report
        for kind in ("skipped", "failed", "error")
        for report in terminalreporter.stats.get(kind, [])
        if isinstance(report, pytest.TestReport)
    ]
    lines = summary_lines(reports)
    if lines:
        terminalreporter.write_sep("=", "suites that did not run", yellow=True, bold=True)
        for line in lines:
            terminalreporter.write_line(line)
