"""The deploy's migration step, run by movieops for the stacks it starts as processes (the local
runtime, the contract's disposable API): ``python -m app.migrate`` once, before the API and the
worker start; they wait for the schema revision it records."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from movieops.errors import PreflightFailed

TIMEOUT_SECONDS = 300


def run_migration_step(environment: Mapping[str, str], cwd: Path) -> None:
    """Run ``python -m app.migrate`` with ``environment`` over this process's; raise
    PreflightFailed with its one-line error when it fails."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app.migrate"],
            env={**os.environ, **environment},
            capture_output=True,
            text=True,
            cwd=cwd,
            check=False,
            timeout=TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise PreflightFailed(
            f"the database migration did not finish within {TIMEOUT_SECONDS}s",
            hint="check that the database answers; `python -m app.migrate` runs the step alone",
        ) from None
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise PreflightFailed(
            f"the database migration failed: {lines[-1][:300]}",
            hint="check MOVIE_DATABASE_URL; `python -m app.migrate` runs the step alone",
        )
