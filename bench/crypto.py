"""Envelope encryption throughput: seal and open, local KEK and SoftHSM, against OpenSSL.

One run measures, on this machine, one thread, in this order:

1. ``openssl speed -evp aes-256-gcm -bytes N -seconds S`` for N = 1 KB, 64 KB and 1 MB: the
   baseline, OpenSSL's own AES-256-GCM loop on one buffer (no key setup, no nonce, no wrap).
2. Bare ``AESGCM.encrypt`` (the ``cryptography`` package, one fixed key and nonce): what the
   Python binding costs before any envelope logic.
3. ``seal`` and ``open_sealed`` (carevault.adapters.crypto) with a local KEK (derived from a
   scratch key file, AES-KW): a fresh data key, a fresh nonce, AES-256-GCM with the associated
   data, and a wrap (or an unwrap) per call.
4. The same with a SoftHSM2 KEK: a scratch token in a temporary directory (``SOFTHSM2_CONF``),
   so every seal and open makes one AES-GCM call inside the token for the data key.
5. The KEKs alone: wraps and unwraps per second for both key sources.

Each figure is the number of calls completed in S seconds of wall time (after a short warm-up),
as calls/s and MB/s (10^6 bytes of plaintext per second). Ratios are MB/s ÷ OpenSSL's MB/s at
the same size; the issue's goal is AES-GCM on 1 MB documents at ≥ 80 % of OpenSSL.

Run: ``.venv/bin/python bench/crypto.py [--seconds S] [--no-softhsm]``; the figures are printed
and written to ``bench/results/crypto.json``. SoftHSM2 comes from Debian (``apt-get install
softhsm2``); without it the SoftHSM rows are left out and say why.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carevault.adapters.crypto import KeyRing, open_keyring, open_sealed, seal
from carevault.adapters.keys.local_file import create_key_file

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "crypto.json"
SIZES = {"1KB": 1024, "64KB": 64 * 1024, "1MB": 1024 * 1024}
SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
BENCH_PIN_ENV = "CAREVAULT_BENCH_HSM_PIN"
GOAL_RATIO_1MB = 0.80


def rate(call: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``call`` over ``seconds`` of wall time, after a short warm-up."""
    warm_until = time.perf_counter() + min(0.2, seconds / 5)
    while time.perf_counter() < warm_until:
        call()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        call()
        count += 1
        now = time.perf_counter()
    return count / (now - start)


def openssl_speed(size: int, seconds: float) -> float:
    """OpenSSL's AES-256-GCM throughput in bytes/s for ``size``-byte buffers (one thread)."""
    command = ["openssl", "speed", "-evp", "aes-256-gcm", "-bytes", str(size)]
    command += ["-seconds", str(max(1, round(seconds)))]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^AES-256-GCM\s+([0-9.]+)k\s*$", output, re.MULTILINE | re.IGNORECASE)
    if match is None:
        raise RuntimeError(f"cannot read `{' '.join(command)}`:\n{output}")
    return float(match.group(1)) * 1000  # OpenSSL reports 1000s of bytes per second


def envelope_rates(ring: KeyRing, seconds: float) -> dict[str, dict[str, float]]:
    kek = ring.current
    figures: dict[str, dict[str, float]] = {}
    for label, size in SIZES.items():
        plaintext = os.urandom(size)
        sealed = seal(plaintext, document_id="bench-doc", version=1, kek=kek)

        def do_seal(plaintext: bytes = plaintext) -> object:
            return seal(plaintext, document_id="bench-doc", version=1, kek=kek)

        def do_open(sealed: Any = sealed) -> object:
            return open_sealed(sealed, document_id="bench-doc", version=1, keyring=ring)

        assert do_open() == plaintext
        seal_rate, open_rate = rate(do_seal, seconds), rate(do_open, seconds)
        figures[label] = {
            "seal_per_s": round(seal_rate, 1),
            "seal_mb_per_s": round(seal_rate * size / 1e6, 1),
            "open_per_s": round(open_rate, 1),
            "open_mb_per_s": round(open_rate * size / 1e6, 1),
        }
    return figures


def kek_rates(ring: KeyRing, seconds: float) -> dict[str, float]:
    kek = ring.current
    data_key = os.urandom(32)
    wrapped = kek.wrap(data_key)
    return {
        "wrap_per_s": round(rate(lambda: kek.wrap(data_key), seconds)),
        "unwrap_per_s": round(rate(lambda: kek.unwrap(wrapped), seconds)),
    }


def bare_aesgcm(seconds: float) -> dict[str, float]:
    aead, nonce = AESGCM(AESGCM.generate_key(bit_length=256)), os.urandom(12)
    figures = {}
    for label, size in SIZES.items():
        plaintext = os.urandom(size)

        def encrypt(plaintext: bytes = plaintext) -> bytes:
            return aead.encrypt(nonce, plaintext, b"aad")

        calls = rate(encrypt, seconds)
        figures[label] = round(calls * size / 1e6, 1)
    return figures


@contextmanager
def local_keyring() -> Iterator[KeyRing]:
    with tempfile.TemporaryDirectory(prefix="carevault-bench-") as scratch:
        key_file = Path(scratch) / "carevault.key"
        create_key_file(key_file)
        with open_keyring(f"file:{key_file}") as ring:
            ring.initialize()
            yield ring


@contextmanager
def softhsm_keyring() -> Iterator[KeyRing]:
    """A KeyRing over a scratch SoftHSM token; the PIN is a throwaway for the scratch token."""
    with tempfile.TemporaryDirectory(prefix="carevault-bench-hsm-") as scratch:
        tokens = Path(scratch) / "tokens"
        tokens.mkdir()
        conf = Path(scratch) / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
        # Set before the module is first loaded in this process: SoftHSM reads it then.
        os.environ["SOFTHSM2_CONF"] = str(conf)
        pin = os.urandom(8).hex()
        os.environ[BENCH_PIN_ENV] = pin
        subprocess.run(
            [
                *("softhsm2-util", "--init-token", "--free", "--label", "carevault-bench"),
                *("--so-pin", os.urandom(8).hex(), "--pin", pin),
            ],
            check=True,
            capture_output=True,
        )
        source = f"pkcs11:module={SOFTHSM_MODULE};token=carevault-bench;pin-env={BENCH_PIN_ENV}"
        with open_keyring(source) as ring:
            ring.initialize()
            yield ring


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("cryptography", "python-pkcs11"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    softhsm = None
    if shutil.which("softhsm2-util"):
        softhsm = subprocess.run(
            ["softhsm2-util", "--version"], capture_output=True, text=True
        ).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "openssl": openssl,
        # The library `seal` really runs on: cryptography's wheels bundle their own OpenSSL, which
        # may be newer (and faster) than the `openssl` command of the baseline.
        "cryptography_openssl": backend.openssl_version_text(),
        "softhsm": softhsm,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def with_ratios(
    figures: dict[str, dict[str, float]], baseline: dict[str, float]
) -> dict[str, dict[str, Any]]:
    return {
        label: {
            **row,
            "seal_ratio_vs_openssl": ratio(row["seal_mb_per_s"], baseline[label]),
            "open_ratio_vs_openssl": ratio(row["open_mb_per_s"], baseline[label]),
        }
        for label, row in figures.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (default 2)")
    parser.add_argument("--no-softhsm", action="store_true", help="leave the SoftHSM rows out")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    seconds: float = args.seconds

    print(f"openssl speed -evp aes-256-gcm ({seconds:g} s per size) …", flush=True)
    openssl = {label: round(openssl_speed(size, seconds) / 1e6, 1) for label, size in SIZES.items()}
    print("bare AESGCM.encrypt …", flush=True)
    bare = bare_aesgcm(seconds)
    print("seal/open, local KEK …", flush=True)
    with local_keyring() as ring:
        local = with_ratios(envelope_rates(ring, seconds), openssl)
        local_kek = kek_rates(ring, seconds)

    softhsm: dict[str, dict[str, Any]] | None = None
    softhsm_kek: dict[str, float] | None = None
    softhsm_note = None
    if args.no_softhsm:
        softhsm_note = "left out (--no-softhsm)"
    elif not (shutil.which("softhsm2-util") and SOFTHSM_MODULE.exists()):
        softhsm_note = "SoftHSM2 is not installed: apt-get install softhsm2"
    else:
        print("seal/open, SoftHSM KEK …", flush=True)
        with softhsm_keyring() as ring:
            softhsm = with_ratios(envelope_rates(ring, seconds), openssl)
            softhsm_kek = kek_rates(ring, seconds)
    if softhsm_note:
        print(f"SoftHSM: {softhsm_note}")

    headline = local["1MB"]["seal_ratio_vs_openssl"]
    result = {
        "aes_gcm_ratio_vs_openssl": headline,
        "aes_gcm_open_ratio_vs_openssl": local["1MB"]["open_ratio_vs_openssl"],
        "goal_ratio": GOAL_RATIO_1MB,
        "goal_met": headline is not None and headline >= GOAL_RATIO_1MB,
        "openssl_mb_per_s": openssl,
        "bare_aesgcm_mb_per_s": bare,
        "local": local,
        "softhsm": softhsm if softhsm is not None else softhsm_note,
        "kek_ops_per_s": {"local": local_kek, "softhsm": softhsm_kek},
        "seconds_per_measurement": seconds,
        "threads": 1,
        "machine": machine(),
        "date": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }

    rows = [("", "size", "calls/s seal", "MB/s seal", "calls/s open", "MB/s open", "÷ openssl")]
    for name, figures in (("local KEK", local), ("SoftHSM KEK", softhsm or {})):
        for label, row in figures.items():
            rows.append(
                (
                    name,
                    label,
                    f"{row['seal_per_s']:,.0f}",
                    f"{row['seal_mb_per_s']:,.1f}",
                    f"{row['open_per_s']:,.0f}",
                    f"{row['open_mb_per_s']:,.1f}",
                    f"{row['seal_ratio_vs_openssl']} / {row['open_ratio_vs_openssl']}",
                )
            )
    for label in SIZES:
        rows.append(("openssl speed", label, "", f"{openssl[label]:,.1f}", "", "", ""))
        rows.append(("bare AESGCM", label, "", f"{bare[label]:,.1f}", "", "", ""))
    widths = [max(len(line[i]) for line in rows) for i in range(len(rows[0]))]
    for line in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
    print(f"KEK wrap/unwrap per s: local {local_kek}, SoftHSM {softhsm_kek}")
    print(
        f"AES-GCM 1 MB seal ÷ openssl: {headline} (goal ≥ {GOAL_RATIO_1MB}: "
        f"{'met' if result['goal_met'] else 'NOT met'})"
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
