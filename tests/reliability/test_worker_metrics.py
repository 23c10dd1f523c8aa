"""``carevault serve --workers 2``: /metrics counts every worker's requests, whichever worker
answers the scrape (the supervisor gives the workers one PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e
CAREVAULT = str(Path(sys.executable).with_name("carevault"))
SECRET = "metrics-secret-for-the-workers-test-1"
REQUESTS = 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_scrape_counts_the_requests_of_every_worker(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREVAULT_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    credential = tmp_path / "metrics.secret"
    credential.write_text(SECRET)
    credential.chmod(0o600)
    env.update({"CAREVAULT_ENVIRONMENT": "dev", "CAREVAULT_METRICS_CREDENTIAL_FILE":
                str(credential), "CAREVAULT_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"})
    subprocess.run([CAREVAULT, "init"], cwd=tmp_path, env=env, check=True, capture_output=True,
                   timeout=300)
    with (tmp_path / "server.err").open("wb") as err:
        server = subprocess.Popen([CAREVAULT, "serve", "--host", "127.0.0.1", "--port",
                                   str(port), "--workers", "2"], cwd=tmp_path, env=env,
                                  stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.err").read_text()[-3000:]
            time.sleep(0.2)
        for _ in range(REQUESTS):  # a new connection each: the kernel spreads them
            assert httpx.get(f"{base}/health/live", timeout=10).status_code == 200
        counted = []
        for _ in range(6):
            text = httpx.get(f"{base}/metrics", timeout=10,
                             headers={"Authorization": f"Bearer {SECRET}"}).text
            found = re.search(r'carevault_http_requests_total\{method="GET",'
                              r'route="/health/live",status="200"\} (\d+)', text)
            assert found, text[:3000]
            counted.append(int(float(found.group(1))))
        assert counted == [REQUESTS] * 6
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
