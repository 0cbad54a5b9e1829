"""The docs never rot: every shell command in the README and the runbook exists and parses (the
movieops ones against the real CLI), and the generated tables match the code."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
from typer._click.exceptions import MissingParameter, NoSuchOption, UsageError

from app.config import Settings
from app.main import create_app
from movieops.cli import cli
from scripts.sync_docs import render_env_example, render_routes_table, render_settings_table

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "docs" / "runbooks" / "compose.md",
    ROOT / "docs" / "runbooks" / "swarm.md",
]
UV_RUN_TOOLS = {"pytest", "ruff", "mypy", "arq"}


def shell_blocks(document: Path) -> list[str]:
    """The ```bash blocks of a markdown document."""
    return re.findall(r"```bash\n(.*?)```", document.read_text(), re.S)


def commands(block: str) -> list[list[str]]:
    """Each command of a block: continuation lines joined, comments dropped, split at | && ;."""
    joined = re.sub(r"\\\n\s*", " ", block)
    found = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, "&&"]:
            if word in {"|", "&&", ";", "||"}:
                if current:
                    found.append(current)
                current = []
            else:
                current.append(word)
    return found


ALL = [
    (document.name, command)
    for document in DOCUMENTS
    for block in shell_blocks(document)
    for command in commands(block)
]


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["up", "--nope"], NoSuchOption, "No such option: --nope"),
        (["refresh"], MissingParameter, "Missing parameter: user"),
        (["jobs", "nope"], UsageError, "No such command 'nope'"),
        (["rate-limits", "--count", "x"], typer.BadParameter, "valid integer"),
        (["fly"], UsageError, "No such command 'fly'"),
    ],
)
def test_the_parser_rejects_what_the_cli_rejects(
    args: list[str], error: type[Exception], message: str
) -> None:
    """The check has teeth: unknown options, missing required options, bad values and unknown
    commands are each Click's own usage error (the CLI's exit 2)."""
    with pytest.raises(error, match=re.escape(message)):
        parse_movieops(args)


def test_the_documents_have_commands_to_check() -> None:
    """The extraction finds the README's two commands and the runbook's."""
    flat = [" ".join(command) for _, command in ALL]
    assert "uv run movieops up" in flat
    assert "uv run pytest" in flat
    assert any(c.startswith("docker compose exec redis redis-cli --scan") for c in flat)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_shell_block_is_valid_bash(document: Path) -> None:
    """`bash -n` accepts every block."""
    for block in shell_blocks(document):
        result = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
        assert result.returncode == 0, (block, result.stderr)


def parse_movieops(args: list[str]) -> None:
    """Parse a movieops command line with the real CLI without running it (Click raises on an
    unknown command, option or value)."""
    command: Any = typer.main.get_command(cli)
    context = command.make_context("movieops", list(args))
    while hasattr(command, "get_command"):  # a group: resolve the subcommand and parse on
        remaining = [*context._protected_args, *context.args]
        if not remaining:
            return
        name, *rest = remaining
        sub = command.get_command(context, name)
        if sub is None:
            context.fail(f"No such command {name!r}.")  # raises Click's UsageError, as Click does
        context = sub.make_context(name, rest, parent=context)
        command = sub


@pytest.mark.parametrize(("document", "command"), ALL, ids=lambda v: str(v)[:60])
def test_every_command_exists_and_parses(document: str, command: list[str]) -> None:
    """movieops lines parse against the CLI; project tools and modules exist; the rest are
    programs on PATH (docker's compose subcommands checked with docker compose's own help)."""
    words = list(command)
    if words[:2] == ["uv", "run"]:
        words = words[2:]
        while words[0] == "--group":  # a dependency group, e.g. uv run --group bench …
            words = words[2:]
        if words[0] == "movieops":
            parse_movieops(words[1:])
            return
        if words[0] == "python" and words[1] == "-m":
            assert importlib.util.find_spec(words[2]) is not None, words
            return
        if words[0] == "python":
            assert (ROOT / words[1]).exists(), words
            return
        assert words[0] in UV_RUN_TOOLS, words
        assert shutil.which(words[0]) or shutil.which(words[0], path=str(ROOT / ".venv/bin"))
        return
    if words[0] == "uv":
        assert words[1] in {"sync", "run", "lock"}, words
        return
    if words[0] == "bash":
        assert (ROOT / words[1]).exists(), words
        return
    if words[0] == "docker" and not shutil.which("docker"):
        pytest.skip("docker is not installed here (CI has it)")
    assert shutil.which(words[0]), f"{words[0]} is not installed ({document})"
    if words[:2] == ["docker", "compose"]:
        verbs = [
            w for w in words[2:] if not w.startswith("-") and w.endswith(("yaml", "proxy")) is False
        ]
        result = subprocess.run(
            ["docker", "compose", verbs[0], "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, (words, result.stderr)


def test_readme_settings_table_lists_every_variable() -> None:
    """Every MOVIE_* and MOVIEOPS_* setting, with its default (scripts/sync_docs.py)."""
    assert render_settings_table() in (ROOT / "README.md").read_text()


def test_env_example_is_generated_from_the_settings() -> None:
    """.env.example matches scripts/sync_docs.py's output."""
    assert (ROOT / ".env.example").read_text() == render_env_example()


def test_contract_lists_exactly_the_live_routes_and_statuses() -> None:
    """The route table of docs/service-contract.md = the app's OpenAPI schema, both ways."""
    text = (ROOT / "docs" / "service-contract.md").read_text()
    documented = set(
        re.findall(r"^\| (GET|POST|PUT|DELETE|PATCH) \| (\S+) \| ([\d, ]+) \|$", text, re.M)
    )
    schema = create_app(Settings(_env_file=None)).openapi()
    live = {
        (method.upper(), path, ", ".join(sorted(op["responses"])))
        for path, operations in schema["paths"].items()
        for method, op in operations.items()
    }
    assert documented == live
    assert render_routes_table() in text
