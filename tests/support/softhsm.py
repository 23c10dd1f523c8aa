"""A private SoftHSM2 token for a test (selected with ``SOFTHSM2_CONF``).

Without SoftHSM2 the HSM tests are skipped, except under ``CI=true``, where they fail
(`support.requirements`).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pytest

from support.requirements import SOFTHSM2, SOFTHSM_MODULE, require

TOKEN = "carevault-test"
PIN = "2468-1357"
SO_PIN = "87654321"
PIN_ENV = "CAREVAULT_TEST_HSM_PIN"


@dataclass(frozen=True)
class SoftHsm:
    key_source: str
    conf: Path


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    require(SOFTHSM2)
    tokens = tmp_path / "softhsm-tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.setenv(PIN_ENV, PIN)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--so-pin",
            SO_PIN,
            "--pin",
            PIN,
        ],
        check=True,
        capture_output=True,
    )
    # The module read SOFTHSM2_CONF when this process first loaded it: start it again so it
    # sees this test's token directory (and nothing of the previous test's).
    pkcs11.lib(str(SOFTHSM_MODULE)).reinitialize()
    return SoftHsm(
        key_source=f"pkcs11:module={SOFTHSM_MODULE};token={TOKEN};pin-env={PIN_ENV}", conf=conf
    )


