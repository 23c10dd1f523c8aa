"""The operator's instruments: /health/live, /health/ready, /metrics, request ids, JSON logs.

Who may read them is decided in `carevault.api.instruments` (docs/operations.md): the health
answers are public and carry states only; /metrics needs the metrics credential, and every
attempt on it is in the operators' audit stream."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from carevault.adapters.storage.database import connect
from carevault.adapters.storage.health import database_health
from carevault.api.instruments import _REQUEST_ID, JsonFormatter
from carevault.bootstrap import Platform, build
from carevault.domain.audit import AuditRecord
from carevault.services.readiness import Readiness
from carevault.settings import Settings
from support.tokens import professional_token

SECRET = "metrics-secret-for-the-tests-0123456789"


@pytest.fixture
def metered(settings: Settings, engine: Engine, tmp_path: Path) -> Platform:
    credential = tmp_path / "metrics.secret"
    credential.write_text(SECRET + "\n")
    credential.chmod(0o600)
    return build(settings.model_copy(update={"metrics_credential_file": credential}), engine)


@pytest.fixture
def http(metered: Platform) -> Iterator[TestClient]:
    token = professional_token(metered)
    with TestClient(metered.app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000),
                    headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def operator_entries(platform: Platform, before: int) -> list[AuditRecord]:
    rows = platform.audit.entries("operator", before, platform.audit.size("operator"))
    return [AuditRecord.from_canonical(data) for _, data in rows]


def test_live_and_ready_answer_anyone_with_states_only(http: TestClient, database_url: str
                                                       ) -> None:
    assert http.get("/health/live", headers={"Authorization": ""}).json() == {"status": "live"}
    ready = http.get("/health/ready", headers={"Authorization": ""})
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready"
    expected = {"database": True, "audit": True, "keys": True}
    if database_url.startswith("postgresql"):  # a lone server: no standby, nothing to wait for
        expected["replication"] = True
        assert body["checks"]["replication"]["state"] == "none"
    assert {name: check["ok"] for name, check in body["checks"].items()} == expected
    assert body["checks"]["database"]["state"] == "writable"


def test_ready_says_not_ready_when_the_keys_are_gone(http: TestClient, metered: Platform) -> None:
    key_file = Path(metered.settings.key_source.removeprefix("file:"))
    key_file.rename(key_file.with_suffix(".elsewhere"))
    ready = http.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["keys"] == {"ok": False, "state": "unavailable"}
    assert str(key_file) not in ready.text  # a state, not the error's text
    key_file.with_suffix(".elsewhere").rename(key_file)
    assert http.get("/health/ready").status_code == 200


def test_ready_says_not_ready_when_the_database_is_unreachable(metered: Platform) -> None:
    nowhere = connect("postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=2")
    readiness = Readiness(lambda: database_health(nowhere), metered.audit, lambda: None)
    report = readiness.report()
    assert not report.ready
    states = {check.name: (check.ok, check.state) for check in report.checks}
    assert states["database"] == (False, "unreachable")
    assert states["audit"][0] is False
    nowhere.dispose()


def test_metrics_are_refused_without_the_credential_and_every_attempt_is_recorded(
        http: TestClient, metered: Platform) -> None:
    before = metered.audit.size("operator")
    professional = http.get("/metrics")  # a valid professional's token is no metrics credential
    assert professional.status_code == 401
    wrong = http.get("/metrics", headers={"Authorization": "Bearer " + SECRET[:-1] + "x"})
    assert wrong.status_code == 401
    nothing = http.get("/metrics", headers={"Authorization": ""})
    assert nothing.status_code == 401
    assert "carevault_" not in professional.text + wrong.text + nothing.text
    served = http.get("/metrics", headers={"Authorization": f"Bearer {SECRET}"})
    assert served.status_code == 200
    records = [r for r in operator_entries(metered, before) if r.interaction == "metrics"]
    assert [r.outcome for r in records] == ["4", "4", "4", "0"]
    assert records[-1].request_id == served.headers["x-request-id"]


def test_metrics_are_refused_to_all_when_no_credential_is_configured(
        client: TestClient) -> None:
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {SECRET}"}
                      ).status_code == 401


def test_metrics_count_by_route_template_and_decision_without_ids(
        http: TestClient, metered: Platform) -> None:
    assert http.get("/fhir/Practitioner").status_code == 200
    http.get("/fhir/Patient/secret-id-4711")
    http.get("/fhir/Patient/secret-id-4711/_history/2")
    http.get("/fhir/NoSuchType/zz-9")
    text = http.get("/metrics", headers={"Authorization": f"Bearer {SECRET}"}).text
    assert "secret-id-4711" not in text and "NoSuchType" not in text and "zz-9" not in text
    assert 'route="/fhir/Practitioner"' in text
    assert 'route="/fhir/Patient/{id}"' in text
    assert 'route="/fhir/Patient/{id}/_history/{vid}"' in text
    assert 'route="/fhir/{type}/{id}"' in text
    assert 'carevault_access_decisions_total{outcome="permit"}' in text
    assert "carevault_http_request_duration_seconds_bucket" in text
    assert "carevault_audit_queue_depth" in text
    assert "carevault_database_writable 1.0" in text


def test_every_answer_carries_a_request_id_that_its_audit_entry_carries(
        http: TestClient, metered: Platform) -> None:
    before = metered.audit.size("clinical")
    mine = http.get("/fhir/Practitioner", headers={"X-Request-ID": "lb-7f3a.42"})
    assert mine.headers["x-request-id"] == "lb-7f3a.42"
    rows = metered.audit.entries("clinical", before, metered.audit.size("clinical"))
    assert AuditRecord.from_canonical(rows[0][1]).request_id == "lb-7f3a.42"
    hostile = http.get("/health/live", headers={"X-Request-ID": "a\tb<script>" + "x" * 100})
    assert "<" not in hostile.headers["x-request-id"]
    assert len(hostile.headers["x-request-id"]) == 32  # a new one


def test_json_log_lines_carry_the_request_id_and_no_exception_text() -> None:
    formatter = JsonFormatter()
    token = _REQUEST_ID.set("req-1")
    try:
        try:
            raise ValueError("patient 1234 secret detail")
        except ValueError:
            record = logging.LogRecord("carevault.test", logging.ERROR, __file__, 1,
                                       "failed %s", ("once",), exc_info=sys.exc_info())
        line = json.loads(formatter.format(record))
    finally:
        _REQUEST_ID.reset(token)
    assert line["request_id"] == "req-1" and line["message"] == "failed once"
    assert line["exception"] == "ValueError"
    assert "secret detail" not in json.dumps(line)


def test_an_error_nothing_answered_on_the_fhir_lane_is_a_500_outcome_and_raised(
        metered: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """The FHIR API's own lane (`carevault.api.app.CareVaultApp`) ends in a last resort: an
    exception out of the door is answered 500 with an OperationOutcome, the security headers
    and the request id, and raised again for the server's log."""
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a defect in the door")

    monkeypatch.setattr(metered.door, "handle", broken)
    with TestClient(metered.app, raise_server_exceptions=False) as client:
        answer = client.get("/fhir/Patient", headers={"X-Request-ID": "lane-0001"})
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("application/fhir+json")
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert "a defect" not in answer.text  # the exception's words stay in the server
    assert answer.headers["x-request-id"] == "lane-0001"
    assert "frame-ancestors" in answer.headers["content-security-policy"]
    with TestClient(metered.app) as client, pytest.raises(RuntimeError, match="a defect"):
        client.get("/fhir/Patient")
