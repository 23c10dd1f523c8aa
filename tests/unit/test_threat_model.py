"""docs/security/threat-model.md names the code and the tests behind each mitigation: every
``tests/…::test_name`` it cites is a test that exists, and every ``src/…`` or ``deploy/…`` path
it cites is there, so that the document cannot quietly point at nothing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "docs" / "security" / "threat-model.md"
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
PATH_REFERENCE = re.compile(r"`((?:src|deploy)/[\w/.-]+?)`")


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")}


def test_every_cited_test_exists() -> None:
    cited = TEST_REFERENCE.findall(MODEL.read_text(encoding="utf-8"))
    assert len(cited) > 100, "the model cites fewer tests than expected: is the pattern right?"
    missing = [f"{file}::{name}" for file, name in cited
               if not (ROOT / file).is_file() or name not in defined_tests(ROOT / file)]
    assert missing == []


def test_every_cited_path_exists() -> None:
    cited = set(PATH_REFERENCE.findall(MODEL.read_text(encoding="utf-8")))
    assert cited
    assert sorted(p for p in cited if not (ROOT / p).exists()) == []
