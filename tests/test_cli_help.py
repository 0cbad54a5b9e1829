"""Every command explains itself: `--help` exits 0 and shows the first line of the command's
docstring (the operator's help text), for every command and subcommand."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from movieops import __version__
from movieops.cli import cli

ROOT: Any = typer.main.get_command(cli)


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(argv path, command) for the root and each command below it."""
    found = [(path, group)]
    for name, command in sorted(getattr(group, "commands", {}).items()):
        found += _commands(command, (*path, name))
    return found


COMMANDS = _commands(ROOT)


def _flat(text: str) -> str:
    """Help text without Rich's panel borders and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_every_documented_command_is_checked() -> None:
    """The walk finds the commands the README documents, subcommands included."""
    names = {" ".join(path) for path, _ in COMMANDS}
    expected = {"up", "down", "status", "health", "logs", "rate-limits", "refresh", "contract"}
    expected |= {"top", "load"}
    assert names >= expected | {"doctor", "jobs", "jobs ls", "jobs show"}


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(path) or "movieops" for path, _ in COMMANDS]
)
def test_each_command_has_help_with_its_docstring(path: tuple[str, ...], command: Any) -> None:
    """`movieops … --help` exits 0 and shows the docstring's first line."""
    docstring = command.help or (command.callback.__doc__ if command.callback else None)
    assert docstring, f"movieops {' '.join(path)} has no docstring"
    first_line = docstring.strip().splitlines()[0]
    result = CliRunner().invoke(cli, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert _flat(first_line) in _flat(result.stdout)


def test_version_prints_the_package_version() -> None:
    """`movieops --version` prints exactly `movieops <version>` and exits 0."""
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"movieops {__version__}\n"
