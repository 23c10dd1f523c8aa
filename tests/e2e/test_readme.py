"""The README's examples run as written (issue #13): a newcomer's `make run`, then every block
the README marks ``<!-- readme-test -->``, in order, in one shell, as a newcomer would type them
in a second terminal.

`make run` runs in a scratch directory holding the Makefile, pyproject.toml, the examples and
a link to this checkout's virtualenv (whose install stamp is newer than pyproject.toml, so
nothing is installed again). It serves on a free port with ``PORT=…``, which the README says
moves every address; the blocks' ``127.0.0.1:8000`` is read as that port. Each block's commands
must succeed (``set -euo pipefail``; the README's ``curl -f`` fails on an HTTP error).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- readme-test -->\n```(sh|python)\n(.*?)```", re.S)
STARTUP_SECONDS = 240.0  # make run: init, pki init, a small demo, then serve
SCRIPT_SECONDS = 600.0


def readme_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(
        (ROOT / "README.md").read_text(encoding="utf-8"))]


def as_shell(blocks: list[tuple[str, str]], port: int) -> str:
    lines = ["set -euo pipefail"]
    for language, code in blocks:
        if language == "python":
            code = f".venv/bin/python - <<'PY'\n{code}PY\n"
        lines.append(code)
    return "\n".join(lines).replace("127.0.0.1:8000", f"127.0.0.1:{port}")


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """`make run PORT=…` in a scratch directory, as a newcomer runs it."""
    if shutil.which("make") is None:
        pytest.fail("make is needed to run the README's `make run` (apt-get install make)")
    workdir = tmp_path / "newcomer"
    workdir.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, workdir / name)
    (workdir / "examples").symlink_to(ROOT / "examples")
    venv = Path(sys.executable).parent.parent
    if not (venv / ".installed").exists():
        (venv / ".installed").touch()  # the virtualenv running these tests is installed
    (workdir / ".venv").symlink_to(venv)
    # That virtualenv is installed for this pyproject: make must not rebuild it (through the
    # symlink) because the checkout's pyproject.toml changed after it was installed.
    stamp = (venv / ".installed").stat()
    os.utime(workdir / "pyproject.toml", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CAREVAULT_") and k not in ("MAKEFLAGS", "MAKELEVEL")}
    log = (workdir / "make-run.log").open("wb")
    process = subprocess.Popen(
        ["make", "run", f"PORT={port}", "DEMO_PATIENTS=300", "DEMO_PROFESSIONALS=80"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"make run exited {process.returncode}:\n"
                            f"{(workdir / 'make-run.log').read_text(errors='replace')}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("make run did not serve in time:\n"
                            f"{(workdir / 'make-run.log').read_text(errors='replace')}")
            time.sleep(0.5)
        yield workdir, port
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have ended already
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=20)
        log.close()


def test_the_readme_marks_its_runnable_examples() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 6
    for _language, code in blocks:
        # A runnable example holds no placeholder a reader would have to replace.
        assert not re.search(r"<[a-z][a-z ]*>", code), code


def test_every_readme_example_runs_against_make_run(make_run: tuple[Path, int]) -> None:
    workdir, port = make_run
    script = as_shell(readme_blocks(), port)
    done = subprocess.run(["bash", "-c", script], cwd=workdir, capture_output=True, text=True,
                          timeout=SCRIPT_SECONDS, check=False,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("CAREVAULT_")})
    assert done.returncode == 0, (
        f"a README example failed (exit {done.returncode})\nstdout:\n{done.stdout[-4000:]}\n"
        f"stderr:\n{done.stderr[-4000:]}")
    # The examples did what they say: a published document, an officer's view of the log.
    assert "granted: system/*.rs system/DocumentReference.c" in done.stderr
    assert '"entries"' in done.stdout
    assert (workdir / "document.bin").read_bytes().startswith(b"%PDF")
