"""The repository itself: what a careless merge leaves behind is caught before CI runs it.

Session 7's CI never ran a test: a merge had committed conflict markers into ``.ci/run``,
and bash refused the script after 0 s. These checks make that a failing test on the
developer's machine instead.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^(<{7} |>{7} |={7}$)", re.MULTILINE)


def _tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    return [ROOT / name.decode() for name in listed if name]


def test_no_tracked_file_holds_a_merge_conflict_marker() -> None:
    offenders = []
    for path in _tracked_files():
        if not path.is_file() or path.suffix in {".png", ".pdf", ".der", ".p12", ".ico"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if MARKER.search(text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_ci_entry_point_and_shell_scripts_parse() -> None:
    scripts = [ROOT / ".ci" / "run"] + [p for p in _tracked_files() if p.suffix == ".sh"]
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def test_a_planted_conflict_marker_is_found() -> None:
    planted = "a = 1\n<<<<<<< HEAD\nb = 2\n=======\nb = 3\n>>>>>>> main\n"
    assert MARKER.search(planted) is not None
    assert MARKER.search("a = 1\n# ======= a ruler in a comment\n") is None
