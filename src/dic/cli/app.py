"""The Typer root: global options and the one error handler for every command."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
import typer

from dic.cli.output import errors
from dic.errors import ConfigError, DefinitionError, DicError, InputError

app = typer.Typer(
    name="dic",
    help="Data Integration Center: FHIR repository, SQL-on-FHIR views, cohorts and safe outputs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@dataclass
class Settings:
    repo: Path = Path("dic-repo")
    json: bool = False
    verbose: bool = False


settings = Settings()


@app.callback()
def root(
    repo: Path = typer.Option(
        Path(os.environ.get("DIC_REPO", "dic-repo")), "--repo", help="Repository folder (env DIC_REPO)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable JSON output."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks on errors."),
) -> None:
    settings.repo, settings.json, settings.verbose = repo, json_output, verbose


USAGE_ERRORS = (InputError, DefinitionError, ConfigError)


def run() -> None:
    """Run the CLI: exit 0 on success, 1 on a runtime failure, 2 on a usage error or invalid definition."""
    try:
        code = app(standalone_mode=False)  # returns typer.Exit's code instead of raising
        if isinstance(code, int) and code:
            sys.exit(code)
    except SystemExit:
        raise
    except DicError as error:
        code = 2 if isinstance(error, USAGE_ERRORS) else 1
        _report(error, code)
    except typer.Abort:
        sys.exit(1)
    except Exception as error:  # click usage errors arrive here in non-standalone mode
        import click

        # Typer >= 0.2x vendors its own click (typer._click): its usage errors are not click's classes
        if isinstance(error, click.exceptions.ClickException | typer.TyperException) and hasattr(error, "show"):
            error.show()
            sys.exit(error.exit_code)
        if isinstance(error, click.exceptions.Exit):
            sys.exit(error.exit_code)
        _report(error, 1)


def _report(error: BaseException, code: int) -> None:
    if settings.verbose:
        import traceback

        traceback.print_exception(error)
    problems = [str(p) for p in getattr(error, "problems", [])]
    if settings.json:
        payload = {"error": type(error).__name__, "message": str(error).split("\n")[0], "problems": problems}
        sys.stdout.write(orjson.dumps(payload).decode() + "\n")
    else:
        from rich.text import Text

        errors.print(Text("error: ", style="red") + Text(str(error)), highlight=False)
    sys.exit(code)
