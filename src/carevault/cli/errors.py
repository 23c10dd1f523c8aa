"""One readable line and exit status 1 for every expected failure of a command."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from carevault.adapters.keys.local_file import KeyFileError
from carevault.adapters.storage.database import DATABASE_ERRORS, database_refusal
from carevault.domain.errors import CareVaultError
from carevault.settings import ConfigurationError

P = ParamSpec("P")
R = TypeVar("R")


def friendly(command: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into one readable line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (CareVaultError, ConfigurationError, KeyFileError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
        except DATABASE_ERRORS as error:
            reason = database_refusal(error)
            typer.echo(f"error: the database refused the operation: {reason}", err=True)
            raise typer.Exit(1) from None
        except OSError as error:  # a file a command reads or writes: missing, unreadable, …
            where = f"{error.filename}: " if error.filename else ""
            typer.echo(f"error: {where}{error.strerror or error}", err=True)
            raise typer.Exit(1) from None

    return wrapper
