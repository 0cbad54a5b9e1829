"""The ``movieops`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from app.config import SettingsError, load_settings
from movieops import __version__, foreground
from movieops.errors import ConfigError, MovieOpsError

cli = typer.Typer(
    name="movieops",
    help="Run and operate the movie API stack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        print(f"movieops {__version__}")
        raise typer.Exit()


@cli.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Run and operate the movie API stack."""


@cli.command()
def up(
    state_dir: Annotated[
        Path, typer.Option(help="Where the embedded runtime keeps its data and logs.")
    ] = Path(".movieops"),
) -> None:
    """Start the stack in the foreground: the API, the worker and an embedded valkey-server (if no
    Redis answers).

    Ctrl-C stops everything it started.
    """
    try:
        try:
            settings = load_settings()
        except SettingsError as exc:
            raise ConfigError(
                str(exc), hint="fix the variable in your environment or .env"
            ) from None
        code = foreground.run(settings, state_dir)
    except MovieOpsError as exc:
        stderr.print(f"[red]error:[/red] {exc.message}", highlight=False)
        if exc.hint:
            stderr.print(f"hint: {exc.hint}", highlight=False)
        raise typer.Exit(int(exc.exit_code)) from None
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
