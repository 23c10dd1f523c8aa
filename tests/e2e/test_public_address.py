"""In ``dev`` without ``CAREVAULT_PUBLIC_BASE_URL``, the platform tells clients the address it
really serves: ``carevault serve --port P`` advertises ``http://127.0.0.1:P`` in its SMART
configuration, accepts client assertions addressed to that token endpoint (and no longer to
``:8000``), and writes its links with that port. With one server process and with two (whose
workers build their settings from the environment the supervisor hands them).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from support.mhd import FHIR_JSON, backend_token

from .conftest import (
    CAREVAULT,
    COMMAND_SECONDS,
    _stop,
    _wait_until_healthy,
    carevault_env,
    free_port,
)

pytestmark = pytest.mark.e2e

PRACTITIONER = "HP-PORT-1"


def _env(workdir: Path) -> dict[str, str]:
    env = carevault_env(workdir)
    del env["CAREVAULT_PUBLIC_BASE_URL"]  # what is tested: the address is not configured
    env.pop("CAREVAULT_WORKERS", None)
    return env


def _cli(workdir: Path, *args: str) -> str:
    done = subprocess.run([CAREVAULT, *args], cwd=workdir, env=_env(workdir),
                          capture_output=True, text=True, timeout=COMMAND_SECONDS, check=False)
    assert done.returncode == 0, (
        f"`carevault {' '.join(args)}` exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout


@pytest.fixture(scope="module")
def platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialized platform with one physician holding a certificate."""
    workdir = tmp_path_factory.mktemp("public-address")
    _cli(workdir, "init")
    _cli(workdir, "pki", "init")
    added = _cli(workdir, "directory", "add-practitioner", "--identifier", PRACTITIONER,
                 "--family", "Weber", "--given", "Anne", "--profession", "physician", "--json")
    practitioner_id = httpx.Response(200, content=added).json()["id"]
    _cli(workdir, "pki", "issue-practitioner", practitioner_id, "--out", str(workdir / "card"))
    return workdir


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def served(request: pytest.FixtureRequest, platform_dir: Path) -> Iterator[str]:
    """``carevault serve --port <free port>`` (with ``--workers``); yields the address."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    stderr = platform_dir / f"server-{port}.err"
    with (platform_dir / f"server-{port}.out").open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [CAREVAULT, "serve", "--port", str(port), "--workers", str(request.param)],
            cwd=platform_dir, env=_env(platform_dir), stdout=out, stderr=err)
    try:
        _wait_until_healthy(process, base_url, stderr)
        yield base_url
    finally:
        _stop(process)


def test_the_served_port_is_the_advertised_one(served: str, platform_dir: Path) -> None:
    port = urlsplit(served).port
    assert port != 8000
    configuration = httpx.get(f"{served}/.well-known/smart-configuration").json()
    assert configuration["token_endpoint"] == f"{served}/oauth/token"
    assert configuration["issuer"] == served
    for key in ("jwks_uri", "authorization_endpoint", "introspection_endpoint",
                "revocation_endpoint"):
        assert urlsplit(configuration[key]).port == port, (key, configuration[key])

    # A client assertion addressed to the advertised token endpoint gets a token ...
    token = backend_token(served, platform_dir / "card", PRACTITIONER,
                          scope="system/Practitioner.rs",
                          aud=configuration["token_endpoint"])
    bundle = httpx.get(f"{served}/fhir/Practitioner", params={"identifier": PRACTITIONER},
                       headers={"Authorization": f"Bearer {token}", "Accept": FHIR_JSON})
    assert bundle.status_code == 200, bundle.text
    # ... and the links the platform writes use the address served too.
    links = [link["url"] for link in bundle.json()["link"]]
    assert links
    assert all(link.startswith(f"{served}/fhir/") for link in links), links
    capability = httpx.get(f"{served}/fhir/metadata").json()
    assert capability["implementation"]["url"] == f"{served}/fhir"

    # The development default is no longer the audience: one addressed to :8000 is refused.
    with pytest.raises(AssertionError, match="aud must be the token endpoint"):
        backend_token(served, platform_dir / "card", PRACTITIONER,
                      scope="system/Practitioner.rs", aud="http://127.0.0.1:8000/oauth/token")
