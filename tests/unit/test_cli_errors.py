"""A command's expected failures are one readable line and exit status 1, never a stack trace:
the database's own reason (not SQLAlchemy's statement and parameters, which may hold what a
terminal or a log must not), CareVault's refusals, and nothing else swallowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from sqlalchemy import create_engine, text

from carevault.cli.errors import friendly
from carevault.domain.errors import CareVaultError


def test_a_database_refusal_is_one_line_with_the_databases_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = create_engine("sqlite://")

    @friendly
    def command() -> None:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, secret TEXT)"))
            connection.execute(text("INSERT INTO t VALUES (1, 'first')"))
            connection.execute(text("INSERT INTO t VALUES (1, :secret)"), {"secret": "s3cr3t"})

    with pytest.raises(typer.Exit) as exited:
        command()
    assert exited.value.exit_code == 1
    said = capsys.readouterr().err
    assert said.startswith("error: the database refused the operation: UNIQUE constraint")
    assert said.count("\n") == 1
    assert "s3cr3t" not in said and "INSERT" not in said


def test_a_refusal_of_carevault_is_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    @friendly
    def command() -> None:
        raise CareVaultError("the certificate is already revoked")

    with pytest.raises(typer.Exit):
        command()
    assert capsys.readouterr().err == "error: the certificate is already revoked\n"


def test_a_file_a_command_cannot_read_or_write_is_one_line_with_its_name(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A missing file, a folder where a file was expected, an unwritable target: the path and
    the system's reason, not a traceback."""
    for failing in (lambda: (tmp_path / "missing.pem").read_bytes(),
                    lambda: tmp_path.read_bytes(),
                    lambda: (tmp_path / "no" / "such" / "out.pem").write_bytes(b"x")):
        with pytest.raises(typer.Exit) as exited:
            friendly(failing)()
        assert exited.value.exit_code == 1
        said = capsys.readouterr().err
        assert said.startswith(f"error: {tmp_path}") and said.count("\n") == 1


def test_a_bug_is_not_dressed_as_an_expected_failure() -> None:
    @friendly
    def command() -> None:
        raise KeyError("a programming error")

    with pytest.raises(KeyError):
        command()
