"""Helpers for driving the CLI in tests: invoke, parse and validate the JSON envelope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from typer.testing import CliRunner

from movieops.cli import cli
from movieops.output import ENVELOPE_SCHEMA_PATH

SCHEMA = json.loads(ENVELOPE_SCHEMA_PATH.read_text())


class Cli:
    """`movieops --project-dir DIR …` through Typer's CliRunner, with an environment."""

    def __init__(self, project_dir: Path, env: dict[str, str], runtime: str = "local") -> None:
        self.project_dir = project_dir
        self.env = env
        self.runtime = runtime
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Any:
        """Run a command; returns Click's Result (exit_code, stdout, stderr)."""
        argv = ["--runtime", self.runtime, "--project-dir", str(self.project_dir), *args]
        return self.runner.invoke(cli, argv, env={**self.env, **(env or {})})

    def json(self, *args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
        """Run with --json; check the exit code and the envelope; return the envelope."""
        result = self(*args, "--json", env=env)
        assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
        document = json.loads(result.stdout)
        jsonschema.validate(document, SCHEMA)
        assert document["ok"] is (code == 0)
        return document
