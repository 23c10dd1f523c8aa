"""`bench/bare.py`'s own machinery, without CareVault: its wrk script paces for real (wrk against
a small local server), charges a server that falls behind for the wait, submits each line of a
``once`` list at most once, and its result parsing, ratios, goals and merge do what they say.
The benchmark's figures are its own, not this file's."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bare.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("bench_bare", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_bare"] = module
    spec.loader.exec_module(module)
    return module


bare = _load()
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects
    service_seconds = 0.0
    bodies: ClassVar[list[bytes]] = []

    def _answer(self, status: int) -> None:
        if self.service_seconds and self.path != "/health":
            time.sleep(self.service_seconds)
        payload = b"ok"
        self.send_response(status)
        asked = self.headers.get("X-Request-ID")
        if asked:
            self.send_header("X-Request-ID", asked)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._answer(200)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).bodies.append(body)
        self._answer(201)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # wrk resets its connections at the end of a run: not worth a traceback


def _serve(service_seconds: float) -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"service_seconds": service_seconds, "bodies": []})
    server = _Server(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fast_server() -> Iterator[tuple[str, type[_Handler]]]:
    yield from _serve(0.0)


@pytest.fixture
def slow_server() -> Iterator[tuple[str, type[_Handler]]]:
    yield from _serve(0.04)


@needs_wrk
def test_the_paced_script_starts_requests_at_the_rate_asked(
        fast_server: tuple[str, type[_Handler]], tmp_path: Path) -> None:
    url, _handler = fast_server
    bare.write_items([f"/item/{n}" for n in range(50)], 2, tmp_path / "paths")
    run = bare.wrk(url, method="GET", target="/item", items=tmp_path / "paths", seconds=3,
                   threads=2, connections=8, workdir=tmp_path, rate=100.0)
    assert run.errors == 0 and run.unmatched == 0
    # 100/s from 0.1 s after the start: about 290 scheduled starts answered in 3 s (a loaded
    # machine may lose a few at the end; an unpaced wrk would send thousands)
    assert 230 <= len(run.latencies_ms) <= 300
    assert run.requests == len(run.latencies_ms)  # every answer was a scheduled request
    assert run.lateness_ms[len(run.lateness_ms) // 2] < 5  # sent on time, mostly


@needs_wrk
def test_a_server_that_falls_behind_is_charged_for_the_wait(
        slow_server: tuple[str, type[_Handler]], tmp_path: Path) -> None:
    """One connection, a request due every 20 ms, 40 ms to answer each: the schedule slips
    by 20 ms a request. wrk's own latency (from the moment it writes) stays near 40 ms; the
    latency from the scheduled start grows with the backlog."""
    url, _handler = slow_server
    bare.write_items(["/slow"], 1, tmp_path / "paths")
    run = bare.wrk(url, method="GET", target="/slow", items=tmp_path / "paths", seconds=2,
                   threads=1, connections=1, workdir=tmp_path, rate=50.0)
    assert run.errors == 0 and len(run.latencies_ms) >= 20
    wrk_p99_ms = run.summary["latency_us"]["p99"] / 1000
    scheduled_p99 = bare.ms(run.latencies_ms, 99)
    assert 35 <= wrk_p99_ms < 150
    assert scheduled_p99 > 400  # about 0.9 s behind by the end
    assert bare.ms(run.lateness_ms, 99) > 300


@needs_wrk
def test_a_once_list_submits_each_body_at_most_once(
        fast_server: tuple[str, type[_Handler]], tmp_path: Path) -> None:
    url, handler = fast_server
    bodies = [json.dumps({"resourceType": "Bundle", "n": n}) for n in range(40)]
    bare.write_items(bodies, 2, tmp_path / "bodies")
    run = bare.wrk(url, method="POST", target="/bundles", items=tmp_path / "bodies", seconds=2,
                   threads=2, connections=4, workdir=tmp_path, once=True,
                   headers={"Content-Type": "application/fhir+json"})
    assert run.exhausted
    sent = [json.loads(b)["n"] for b in handler.bodies]
    assert len(sent) == len(set(sent))  # none twice
    # wrk calls request() once to check the script before the run, which takes one line
    assert len(sent) >= 39 and set(sent) <= set(range(40))


def test_write_items_deals_lines_to_threads_and_refuses_newlines(tmp_path: Path) -> None:
    bare.write_items(["a", "b", "c"], 2, tmp_path / "x")
    assert (tmp_path / "x.0").read_text() == "a\nc\n"
    assert (tmp_path / "x.1").read_text() == "b\n"
    with pytest.raises(ValueError, match="newline"):
        bare.write_items(["a\nb", "c"], 1, tmp_path / "y")
    with pytest.raises(ValueError, match="fewer"):
        bare.write_items(["a"], 2, tmp_path / "z")


def test_parse_result_reads_the_summary_threads_and_samples() -> None:
    text = "\n".join([
        '{"requests": 12, "duration_us": 2000000, "bytes": 100, "errors": {"connect": 0, '
        '"read": 0, "write": 0, "status": 1, "timeout": 0}, "latency_us": {"p50": 1000, '
        '"p90": 2000, "p99": 3000, "max": 4000, "mean": 1500.0}}',
        "thread 0 false 5 0 4",  # 5 answers without a scheduled id, 4 requests unscheduled
        "L 2500", "L 1500", "D 100",
        "thread 1 true 4 1 4",
        "L 9000", "D 0",
    ])
    run = bare.parse_result(text)
    assert run.requests == 12 and run.seconds == 2.0 and run.errors == 1
    assert run.exhausted and run.failed == 1 and run.warm == 8 and run.unmatched == 1
    assert run.latencies_ms == [1.5, 2.5, 9.0]
    assert run.lateness_ms == [0.0, 0.1]
    with pytest.raises(ValueError, match="unexpected line"):
        bare.parse_result(text + "\nX 1")


def _found(per_s: float, p99: float | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "per_s": per_s, "cpu_ms_per_request": {"server": 1000 / per_s, "postgres": 0.5,
                                               "wrk": 0.05},
        "cores_busy": {"server": 1.4, "postgres": 0.4, "wrk": 0.1, "other": 0.05,
                       "machine": 1.95},
        "wrk_latency_ms": {"p99": 10.0}, "wrk_cores_per_thread": 0.05,
    }
    if p99 is not None:
        found["scheduled"] = {"per_s": per_s, "p50_ms": p99 / 3, "p99_ms": p99,
                              "sent_late_p99_ms": 0.1}
    return found


def test_summarize_takes_each_ratio_per_round_and_judges_the_goals() -> None:
    runs = {
        "retrieve": {"secure": [_found(300), _found(320)], "bare": [_found(1000), _found(800)]},
        "paced": {"secure": [_found(150, 30), _found(150, 50)],
                  "bare": [_found(150, 10), _found(150, 20)]},
        "submit": {"secure": [_found(100), _found(100)], "bare": [_found(400), _found(200)]},
    }
    result = bare.summarize(runs, 155.0, 2)
    assert result["round_ratios"]["retrieve"] == [0.3, 0.4]
    assert result["retrieve_ratio"] == 0.35  # the median of the rounds' ratios
    assert result["paced_p99_ratio"] == 2.75  # median of 3.0 and 2.5: above the goal of 2
    assert result["submit_ratio"] == 0.375
    goals = result["goals"]
    assert goals["retrieve_ratio"]["met"] and goals["submit_ratio"]["met"]
    assert not goals["paced_p99_ratio"]["met"] and not result["goals_met"]
    assert result["baseline_saturation"]["server_bound"]
    per_cpu = result["per_cpu_second"]
    # 1000 ÷ the median server CPU ms (of 3.333 and 3.125 ms)
    assert per_cpu["retrieve"]["secure"]["requests_per_server_cpu_s"] == round(1000 / 3.229, 1)
    assert per_cpu["submit"]["secure"]["resources_per_server_cpu_s"] == 400.0


def test_goal_bounds_are_inclusive_and_a_missing_value_misses() -> None:
    assert bare.goal(0.33, 0.33, at_least=True)["met"]
    assert not bare.goal(0.329, 0.33, at_least=True)["met"]
    assert bare.goal(2.0, 2.0, at_least=False)["met"]
    assert not bare.goal(None, 2.0, at_least=False)["met"]
    assert bare.ratio(1.0, 0.0) is None


def test_merge_keeps_the_other_keys_of_documents_json(tmp_path: Path) -> None:
    path = tmp_path / "documents.json"
    path.write_text(json.dumps({"retrieve_per_s": 392.5, "goals": {"x": 1}}))
    result = {"retrieve_ratio": 0.2, "paced_p99_ratio": 3.1, "submit_ratio": 0.4,
              "goals": {"retrieve_ratio": {"met": False}}, "date": "2026-01-01T00:00:00+00:00",
              "machine": {"quiet": False}}
    bare.merge_into_documents(path, result)
    merged = json.loads(path.read_text())
    assert merged["retrieve_per_s"] == 392.5 and merged["goals"] == {"x": 1}
    assert merged["bare_baselines"]["retrieve_ratio"] == 0.2
    assert merged["bare_baselines"]["source"] == "bench/bare.py"
    assert merged["bare_baselines"]["date"] == "2026-01-01T00:00:00+00:00"
