"""Alert latency: how long after an abuse the security officer sees its alert (issue 19, item 2:
"raises an alert within a minute of the event").

`bench/anomaly.py` scores the detector on a generated month and reports, per kind, the stream
time from an incident's *first* access to its first alert: for a pattern that needs several
accesses to show (scraping, emergency as a routine) that is the pattern's own length, not the
platform's delay. This bench measures the delay itself, end to end, on the running platform:
the production app in this process (``carevault.bootstrap.build``, Starlette's test client,
its lifespan running the chores as ``carevault serve`` does: the detector's scan every
``HOUSEKEEPING_SECONDS``), a physician breaking the glass on a celebrity's record and reading
it, and a security officer polling the FHIR ``DetectedIssue`` queue (every 0.2 s) until the
``vip`` alert of that access is there. Each incident starts at a random moment of the chores'
cycle, so the figures cover the whole cycle rather than one phase of it.

The delay is the chore's interval (an access waits for the next round) plus the scan: at most
about 30 s; this bench shows it. It reports every sample, p50 and the maximum.

Run: ``.venv/bin/python bench/alert_latency.py --out bench/results/alert-latency.json``
(about 5 minutes), or ``--incidents 2`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import platform as machine
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CELEBRITY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "CEL"}
OFFICER_SCOPE = "system/AuditEvent.rs system/DetectedIssue.rus"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
POLL_SECONDS = 0.2
GIVE_UP_SECONDS = 180.0  # an alert not seen by then is reported as missed, not waited for


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from carevault.adapters.keys.local_file import create_key_file
    from carevault.adapters.storage.database import connect, upgrade
    from carevault.bootstrap import build
    from carevault.services.chores import HOUSEKEEPING_SECONDS
    from carevault.settings import Settings
    from support.authorities import registrar_token
    from support.builders import patient
    from support.tokens import officer_headers, professional_token

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=10)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    samples: list[float] = []
    missed = 0
    with tempfile.TemporaryDirectory(prefix="carevault-alerts-") as scratch:
        url = args.database_url or f"sqlite:///{Path(scratch) / 'carevault.db'}"
        engine = connect(url, pool_size=12)
        upgrade(engine)
        key_file = Path(scratch) / "carevault.key"
        create_key_file(key_file)
        settings = Settings(database_url=url, key_source=f"file:{key_file}", environment="dev",
                            _env_file=None)  # type: ignore[call-arg]
        platform = build(settings, engine)
        # Entering the client runs the app's lifespan, which runs the chores thread.
        with TestClient(platform.app, base_url="http://127.0.0.1:8000",
                        client=("127.0.0.1", 50000)) as client:
            for n in range(args.incidents):
                # Tokens live five minutes: fresh ones for each incident.
                registrar = {"Authorization": f"Bearer {registrar_token(platform)}", **FHIR_JSON}
                officer = {**officer_headers(platform, OFFICER_SCOPE), **FHIR_JSON}
                resource = patient(platform.directory.systems, 500 + n, family=f"Star{n}")
                resource["meta"] = {"security": [CELEBRITY]}
                made = client.post("/fhir/Patient", json=resource, headers=registrar)
                made.raise_for_status()
                star = str(made.json()["id"])
                nosy = {"Authorization": "Bearer " + professional_token(
                    platform, identifier=f"HP-LATENCY-{n}", family=f"Curieux{n}",
                    profession="physician", specialty="emergency-medicine"), **FHIR_JSON}
                time.sleep(rng.uniform(0, HOUSEKEEPING_SECONDS))  # anywhere in the cycle
                glass = client.post(
                    f"/fhir/Patient/{star}/$emergency-access", headers=nosy,
                    json={"resourceType": "Parameters", "parameter": [
                        {"name": "reason", "valueString": "unconscious on arrival"}]})
                glass.raise_for_status()
                client.get("/fhir/Encounter", params={"patient": f"Patient/{star}"},
                           headers=nosy).raise_for_status()
                accessed = time.monotonic()
                seen = None
                while time.monotonic() - accessed < GIVE_UP_SECONDS:
                    found = client.get("/fhir/DetectedIssue", params={"code": "vip"},
                                       headers=officer)
                    found.raise_for_status()
                    if any(e["resource"].get("patient", {}).get("reference") == f"Patient/{star}"
                           for e in found.json().get("entry", [])):
                        seen = time.monotonic() - accessed
                        break
                    time.sleep(POLL_SECONDS)
                if seen is None:
                    missed += 1
                else:
                    samples.append(seen)
                print(json.dumps({"incident": n, "seconds_to_alert":
                                  None if seen is None else round(seen, 2)}), flush=True)
        engine.dispose()
    result = {
        "incidents": args.incidents,
        "alerts_seen": len(samples),
        "missed": missed,
        "chore_interval_seconds": HOUSEKEEPING_SECONDS,
        "poll_seconds": POLL_SECONDS,
        "seconds_to_alert_p50": round(statistics.median(samples), 2) if samples else None,
        "seconds_to_alert_max": round(max(samples), 2) if samples else None,
        "within_a_minute": bool(samples) and missed == 0 and max(samples) <= 60.0,
        "samples": [round(s, 2) for s in samples],
        "database": "postgresql" if args.database_url else "sqlite",
        "machine": {"python": machine.python_version(), "platform": machine.platform()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
