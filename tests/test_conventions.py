"""What users naturally type: `uvicorn app.main:app`, errors that say what to do next, a failing
`up` that shows why and stops early, and `doctor` on a running stack."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest

from movieops.errors import (
    ConfigError,
    JobTimeout,
    MovieOpsError,
    NotRunning,
    PreflightFailed,
    Unhealthy,
    UsageError,
)
from movieops.output import envelope
from movieops.preflight import database_check
from movieops.stack import last_exception
from tests.clihelp import SCHEMA, Cli
from tests.support import ValkeyProcess, free_port

ROOT = Path(__file__).resolve().parent.parent


def _stack_env() -> dict[str, str]:
    return {
        "MOVIE_PORT": str(free_port()),
        "MOVIE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }


# --- uvicorn app.main:app -------------------------------------------------------------------


def _uvicorn(port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--port",
            str(port),
            "--no-proxy-headers",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_uvicorn_serves_app_main_app_with_settings_from_the_environment(
    valkey: ValkeyProcess, tmp_path: Path
) -> None:
    """`uvicorn app.main:app` serves the API built from MOVIE_* (password-protected Redis)."""
    port = free_port()
    env = {
        "MOVIE_REDIS_URL": valkey.url,
        "MOVIE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'movies.db'}",
    }
    # The deploy's migration step first: the API waits for the schema it creates.
    subprocess.run(
        [sys.executable, "-m", "app.migrate"], env={**os.environ, **env}, check=True, cwd=ROOT
    )
    server = _uvicorn(port, env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "uvicorn never answered"
                time.sleep(0.2)
        assert health.status_code == 200
        movies = httpx.get(f"http://127.0.0.1:{port}/movies", params={"limit": 3})
        assert movies.status_code == 200
        assert len(movies.json()["items"]) == 3
        # Counted in the password-protected Redis: the settings came from the environment.
        assert int(movies.headers["X-RateLimit-Remaining"]) < int(
            movies.headers["X-RateLimit-Limit"]
        )
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_uvicorn_refuses_an_invalid_setting_with_one_line(tmp_path: Path) -> None:
    """An invalid MOVIE_* setting: uvicorn exits non-zero with the one-line settings error."""
    server = _uvicorn(free_port(), {"MOVIE_LOG_LEVEL": "LOUD"})
    _, stderr = server.communicate(timeout=60)
    assert server.returncode != 0
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith("error: invalid settings: MOVIE_LOG_LEVEL")


def test_importing_app_main_reads_no_settings_and_fastapi_cli_finds_app() -> None:
    """`import app.main` reads nothing (invalid settings do not matter); `app` is in dir()."""
    check = (
        "import app.main as m; assert 'app' not in vars(m); assert 'app' in dir(m); "
        "print(m.create_app.__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", check],
        cwd=ROOT,
        env={**os.environ, "MOVIE_LOG_LEVEL": "LOUD"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "create_app"


# --- the error envelope ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "retryable", "next_command"),
    [
        (NotRunning("nothing answers"), True, "movieops up"),
        (
            Unhealthy("api did not become healthy", next_command="movieops logs api"),
            True,
            "movieops logs api",
        ),
        (Unhealthy("2 probes failing"), True, "movieops logs"),
        (JobTimeout("still queued"), True, "movieops health"),
        (UsageError("bad flag"), False, None),
        (ConfigError("MOVIE_PORT: bad"), False, None),
        (PreflightFailed("port taken"), False, None),
        (MovieOpsError("unexpected"), False, None),
    ],
)
def test_error_envelope_says_whether_to_retry_and_what_to_run_next(
    error: MovieOpsError, retryable: bool, next_command: str | None
) -> None:
    """error.retryable and error.next_command are in the envelope, valid under the schema."""
    document = envelope("up", error=error)
    jsonschema.validate(document, SCHEMA)
    assert document["schema_version"] == 1
    assert document["error"]["retryable"] is retryable
    assert document["error"]["next_command"] == next_command


def test_schema_rejects_a_non_boolean_retryable() -> None:
    """The schema types the new fields."""
    document = envelope("up", error=NotRunning("down"))
    document["error"]["retryable"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, SCHEMA)


def test_not_running_suggests_up_in_json_and_in_the_terminal(tmp_path: Path) -> None:
    """`health` with nothing running: the envelope and the human output both say `movieops up`."""
    run = Cli(tmp_path, _stack_env())
    error = run.json("health", code=9)["error"]
    assert (error["code"], error["retryable"], error["next_command"]) == (
        "not_running",
        True,
        "movieops up",
    )
    human = run("health")
    assert human.exit_code == 9
    assert "next: movieops up" in human.stderr.splitlines()


def test_an_unknown_job_suggests_listing_the_jobs(tmp_path: Path, valkey: ValkeyProcess) -> None:
    """`jobs show` of a job Redis does not know: next is `movieops jobs ls`, not `up`."""
    run = Cli(tmp_path, {})
    error = run.json("--redis-url", valkey.url, "jobs", "show", "refresh:404404", code=9)["error"]
    assert error["next_command"] == "movieops jobs ls"


# --- a failing `up` -------------------------------------------------------------------------


def test_database_check_names_a_directory_that_cannot_be_created(tmp_path: Path) -> None:
    """A parent that is a file, or a path that is a directory, fails with the fix; else ok."""
    (tmp_path / "afile").write_text("x")
    blocked = database_check("sqlite+aiosqlite:///afile/sub/movies.db", tmp_path)
    assert not blocked.ok
    assert f"{tmp_path / 'afile'} is a file" in blocked.detail
    assert blocked.fix is not None
    assert "MOVIE_DATABASE_URL" in blocked.fix
    directory = database_check(f"sqlite+aiosqlite:///{tmp_path}", tmp_path)
    assert not directory.ok
    assert "is a directory" in directory.detail
    assert database_check("sqlite+aiosqlite:///./data/new/movies.db", tmp_path).ok
    assert database_check("postgresql+asyncpg://db/movies", tmp_path).ok


def test_up_with_a_database_directory_that_cannot_exist_fails_preflight(tmp_path: Path) -> None:
    """`up` exits 4 with the database check's message and fix, starting nothing."""
    (tmp_path / "afile").write_text("not a directory")
    env = {**_stack_env(), "MOVIE_DATABASE_URL": "sqlite+aiosqlite:///afile/movies.db"}
    run = Cli(tmp_path, env)
    result = run("up", "--timeout", "120")
    assert result.exit_code == 4, result.stderr
    assert "is a file" in result.stderr
    assert "hint: set MOVIE_DATABASE_URL" in result.stderr
    assert not (tmp_path / ".movieops" / "supervisord.pid").exists()


def test_up_with_a_database_the_migration_step_cannot_open_fails_with_its_cause(
    tmp_path: Path,
) -> None:
    """A file that is not a database: the migration step, run before the services start,
    fails; `up` exits 4 with the cause on one error line, starting nothing."""
    (tmp_path / "movies.db").write_text("this is not a SQLite database\n" * 100)
    env = {**_stack_env(), "MOVIE_DATABASE_URL": "sqlite+aiosqlite:///./movies.db"}
    run = Cli(tmp_path, env)
    try:
        result = run("up", "--timeout", "300")
    finally:
        run("down", "--yes")
    assert result.exit_code == 4, result.stderr
    error = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert "the database migration failed" in error
    assert error.endswith("file is not a database")


def test_last_exception_is_the_cause_line_of_a_traceback() -> None:
    """The last `SomeError: text` line, without the service prefix; None when there is none."""
    lines = [
        "api    | Traceback (most recent call last):",
        "api    | sqlite3.OperationalError: unable to open database file",
        "api    | (Background on this error at: https://sqlalche.me/e/21/e3q8)",
        "api    | ERROR:    Application startup failed. Exiting.",
    ]
    assert last_exception(lines) == "sqlite3.OperationalError: unable to open database file"
    assert last_exception(["api    | INFO: started"]) is None


# --- doctor on a running stack --------------------------------------------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """A local stack of this module's own, up for its tests."""
    run = Cli(tmp_path_factory.mktemp("project"), _stack_env())
    run.json("up")
    yield run
    run("down", "--volumes", "--yes")


def test_doctor_on_a_running_stack_says_its_ports_are_held_by_the_stack(running: Cli) -> None:
    """doctor: the API and Redis ports are ok, held by this stack's services (with pids)."""
    checks = {c["name"]: c for c in running.json("doctor")["data"]}
    api = checks[f"port {running.env['MOVIE_PORT']}"]
    assert api["ok"] is True
    assert api["detail"].startswith("held by this stack's api (pid ")
    redis_port = running.env["MOVIE_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
    assert checks[f"port {redis_port}"]["detail"].startswith("held by this stack's redis")
    assert "free" not in api["detail"]


def test_doctor_shows_the_schema_revision_the_running_api_reports(running: Cli) -> None:
    """doctor names the database's schema revision (from /ready) and that it is the newest."""
    from app.db import head_revision

    checks = {c["name"]: c for c in running.json("doctor")["data"]}
    assert checks["database schema"]["detail"] == f"revision {head_revision()} (the newest)"


def test_doctor_without_a_stack_says_up_migrates_the_schema(tmp_path: Path) -> None:
    """Nothing running: the schema check says which revision `up` would migrate to."""
    from app.db import head_revision

    idle = Cli(tmp_path, _stack_env())
    checks = {c["name"]: c for c in idle.json("doctor")["data"]}
    assert checks["database schema"]["detail"] == (
        f"not running; `up` migrates it to revision {head_revision()}"
    )
