"""uvicorn's access log, as `carevault serve` configures it (text lines or JSON lines): the
request's path without its query, which for a FHIR search holds names, birth dates and national
identification numbers."""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from carevault.api.instruments import json_log_config, text_log_config

SEARCH = "/fhir/Patient?identifier=urn:lu:matricule|1985021512345&family=Dupont"
LOGGERS = ("carevault", "uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def restored() -> Iterator[None]:
    """dictConfig changes the process's loggers: they are put back as they were."""
    kept = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).filters[:],
                   logging.getLogger(name).propagate, logging.getLogger(name).level)
            for name in LOGGERS}
    yield
    for name, (handlers, filters, propagate, level) in kept.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.filters, logger.propagate = handlers, filters, propagate
        logger.setLevel(level)


def _uvicorn_line(path: str) -> None:
    """What uvicorn's HTTP protocols log for each answered request."""
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:40312", "GET", path, "1.1", 200)


@pytest.mark.parametrize(("config", "stream"), [
    (text_log_config, "out"), (lambda: json_log_config("info"), "err")])
def test_the_access_log_line_has_no_query(
        restored: None, capsys: pytest.CaptureFixture[str],
        config: Callable[[], dict[str, Any]], stream: str) -> None:
    logging.config.dictConfig(config())
    _uvicorn_line(SEARCH)
    _uvicorn_line("/fhir/Binary/4f1c")
    captured = capsys.readouterr()
    written = captured.out if stream == "out" else captured.err
    lines = [line for line in written.splitlines() if line]
    if stream == "err":  # JSON lines
        lines = [json.loads(line)["message"] for line in lines]
    assert len(lines) == 2  # text lines add the level and the status phrase
    assert '127.0.0.1:40312 - "GET /fhir/Patient HTTP/1.1" 200' in lines[0]
    assert '127.0.0.1:40312 - "GET /fhir/Binary/4f1c HTTP/1.1" 200' in lines[1]
    assert "1985021512345" not in written and "Dupont" not in written


@pytest.mark.parametrize("config", [text_log_config, lambda: json_log_config("info")])
@pytest.mark.parametrize("logger", ["carevault.api.fhir.outcome", "uvicorn.error"])
def test_an_exception_is_logged_by_its_type_never_its_text(
        restored: None, capsys: pytest.CaptureFixture[str],
        config: Callable[[], dict[str, Any]], logger: str) -> None:
    """What a failed statement or a validation error says quotes the values it was given."""
    logging.config.dictConfig(config())
    try:
        raise ValueError("[parameters: ('1985021512345', 'Dupont')]")
    except ValueError:
        logging.getLogger(logger).exception("incident 7f3a: unexpected error")
    written = capsys.readouterr().err
    assert "incident 7f3a: unexpected error" in written and "ValueError" in written
    assert "1985021512345" not in written and "Dupont" not in written
    assert "Traceback" not in written
