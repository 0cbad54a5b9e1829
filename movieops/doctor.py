"""`movieops doctor`: the preflight checks on their own, each with its one-line fix."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from movieops.errors import MovieOpsError, PreflightFailed
from movieops.runtime import Check, Runtime, UpOptions
from movieops.runtime.selection import docker_problem
from movieops.stack import failing, ready_document

if TYPE_CHECKING:
    from app.config import Settings


def run_checks(
    stack: Callable[[], Settings], runtime: Callable[[], Runtime], *, proxy: bool
) -> list[Check]:
    """Python, settings, Docker, then the runtime's own preflight.

    Raises ConfigError when the settings are invalid, PreflightFailed (with every check as data)
    when any check fails.
    """
    checks = [
        Check(
            "python",
            sys.version_info >= (3, 11),
            sys.version.split()[0],
            "install Python 3.11 or newer",
        ),
        Check("settings", True, "MOVIE_* and MOVIEOPS_* are valid"),
    ]
    stack()  # raises ConfigError on invalid settings
    problem = docker_problem()
    checks.append(
        Check(
            "docker",
            True,
            problem or "engine and Compose plugin answer",
            "optional: without Docker, movieops uses the embedded local runtime"
            if problem
            else None,
        )
    )
    checks.extend(runtime().preflight(UpOptions(proxy=proxy)))
    checks.append(schema_check(runtime))
    bad = failing(checks)
    if bad:
        raise PreflightFailed(
            f"{len(bad)} check(s) failed: {bad[0].detail}", hint=bad[0].fix, data=checks
        )
    return checks


def schema_check(runtime: Callable[[], Runtime]) -> Check:
    """The database's schema revision, as the running API reports it (/ready), against the
    newest revision of this checkout's migrations. Informational: the migration step of `up`
    brings the database to the newest revision."""
    from app.db import head_revision

    head = head_revision()
    try:
        answer = ready_document(runtime().endpoints().api_url)
    except MovieOpsError:
        answer = None
    database = answer[1].get("checks", {}).get("database") if answer else None
    revision = database.get("revision") if isinstance(database, dict) else None
    if not revision:
        return Check("database schema", True, f"not running; `up` migrates it to revision {head}")
    if revision == head:
        return Check("database schema", True, f"revision {revision} (the newest)")
    return Check(
        "database schema",
        True,
        f"revision {revision}; this checkout's newest is {head} (`up --build` migrates to it)",
    )
