"""The ``dtl`` command line: parse arguments, build a config, call one API function.

No logic a test would want to call lives here. User errors (:class:`dtl_dist.errors.UserInputError`)
are printed as one line on stderr and exit with code 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer

from dtl_dist.errors import UserInputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Deep transfer learning of soil spectral libraries for local soil organic carbon (Shen et al. 2022).",
)


def user_errors(fn):
    """Turn a UserInputError into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserInputError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper


# --- commands -----------------------------------------------------------------------------------------
# Each command: @app.command() + @user_errors, options only, then one call into the package.


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
