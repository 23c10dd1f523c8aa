"""The soak benchmark runs end to end for a few seconds: no error, and every request it sent
is in the audit log (the figures themselves are the benchmark's, not this test's)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench" / "soak.py"


def test_a_few_seconds_of_soak_lose_no_audit_entry(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_soak", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_soak"] = module
    spec.loader.exec_module(module)
    out = tmp_path / "soak.json"
    result = module.main(["--minutes", "0.1", "--report-every", "2", "--calibrate", "1",
                          "--patients", "1", "--clients", "2", "--out", str(out)])
    assert result["requests"] > 0 and result["errors"] == 0
    assert result["missing_from_audit_log"] == 0
    minutes = json.loads(out.read_text())["per_minute"]
    assert [m["minute"] for m in minutes] == [0, 1, 2]  # three periods of two seconds
    assert out.with_suffix(".svg").read_text().startswith("<svg")
