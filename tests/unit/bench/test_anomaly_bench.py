"""The anomaly benchmark runs end to end on a tiny population and reports every key the issue
asks for (the figures themselves are the benchmark's, not this test's)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench" / "anomaly.py"


def test_a_tiny_month_reports_every_kind(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_anomaly", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_anomaly"] = module
    spec.loader.exec_module(module)
    out = tmp_path / "anomaly.json"
    assert (
        module.main(
            [
                "--scale",
                "0.005",
                "--days",
                "4",
                "--warmup-days",
                "3",
                "--incidents",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    for key in ("auc", "explained_share", "events_per_s", "per_kind"):
        assert key in result
    assert set(result["per_kind"]) == set(module.KINDS)
    for figures in result["per_kind"].values():
        assert {"recall", "precision", "auc", "seconds_to_detect"} <= set(figures)
        assert figures["incidents"] >= 1
    assert 0.0 < result["explained_share"] <= 1.0
    assert result["events"] > result["abusive_accesses"] > 0
