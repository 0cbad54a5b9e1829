"""Every exit code of the README's table, reached through the real CLI (exit code and the JSON
envelope's error code), and the table held against `movieops.errors`."""

from __future__ import annotations

import asyncio
import enum
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from redis import Redis

from app.config import Settings
from app.refresh import no_ratings_detail
from movieops import errors
from movieops.errors import ExitCode, MovieOpsError
from tests.clihelp import SCHEMA, Cli
from tests.support import ThreadedServer, ValkeyProcess, free_port, start_worker

README = Path(__file__).resolve().parents[1] / "README.md"

# What the README says each code means, in the words a reader looks for.
MEANINGS = {
    ExitCode.OK: "ok",
    ExitCode.ERROR: "unexpected error",
    ExitCode.USAGE: "usage",
    ExitCode.DOCKER_UNAVAILABLE: "Docker or the Compose plugin unavailable",
    ExitCode.PREFLIGHT_FAILED: "preflight failed",
    ExitCode.UNHEALTHY: "unhealthy",
    ExitCode.CONTRACT_FAILED: "contract failures",
    ExitCode.JOB_FAILED: "a job failed",
    ExitCode.JOB_TIMEOUT: "waited too long for a job",
    ExitCode.NOT_RUNNING: "not running",
    ExitCode.ROLLED_BACK: "rolled back",
    ExitCode.THRESHOLD_EXCEEDED: "threshold exceeded",
}


def _readme_exit_codes() -> dict[int, str]:
    """The README's exit-code table: code -> meaning."""
    text = README.read_text()
    start = text.index("Exit codes, the same in a terminal and in CI:")
    table = text[start:].split("\n\n", 2)[1]
    rows = [re.fullmatch(r"\| (\d+) \| (.+) \|", line) for line in table.splitlines()[2:]]
    assert all(rows), table
    return {int(row[1]): row[2] for row in rows if row}


def test_exit_codes_have_no_aliases() -> None:
    """Two members with one value would make the second an alias, hidden from iteration."""
    assert list(ExitCode.__members__) == [code.name for code in ExitCode]
    assert enum.unique(ExitCode) is ExitCode


def test_the_readme_table_is_the_exit_code_enum() -> None:
    """Codes 0-11, each with the meaning its ExitCode member names."""
    table = _readme_exit_codes()
    assert sorted(table) == [code.value for code in ExitCode] == list(range(12))
    for code in ExitCode:
        assert table[code].startswith(MEANINGS[code]), (code, table[code])


def test_each_error_class_exits_with_its_own_documented_code() -> None:
    """Each error of the tree maps to one documented code; together they cover every failure
    code (1-11), and ExitCode.OK is no error's code."""
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, MovieOpsError)
    ]
    by_code = {cls.exit_code for cls in classes}
    assert by_code == set(ExitCode) - {ExitCode.OK}
    expected = {
        "MovieOpsError": (ExitCode.ERROR, "error"),
        "UsageError": (ExitCode.USAGE, "usage"),
        "ConfigError": (ExitCode.USAGE, "config_invalid"),
        "DockerUnavailable": (ExitCode.DOCKER_UNAVAILABLE, "docker_unavailable"),
        "PreflightFailed": (ExitCode.PREFLIGHT_FAILED, "preflight_failed"),
        "Unhealthy": (ExitCode.UNHEALTHY, "unhealthy"),
        "RolledBack": (ExitCode.ROLLED_BACK, "rolled_back"),
        "ContractFailed": (ExitCode.CONTRACT_FAILED, "contract_failed"),
        "JobFailed": (ExitCode.JOB_FAILED, "job_failed"),
        "JobTimeout": (ExitCode.JOB_TIMEOUT, "job_timeout"),
        "NotRunning": (ExitCode.NOT_RUNNING, "not_running"),
        "ThresholdExceeded": (ExitCode.THRESHOLD_EXCEEDED, "threshold_exceeded"),
    }
    assert {cls.__name__: (cls.exit_code, cls.code) for cls in classes} == expected


# --- every code through the CLI ----------------------------------------------------------------


def _error(document: dict[str, Any]) -> str:
    error = document["error"]
    assert isinstance(error, dict)
    return str(error["code"])


@pytest.fixture
def flushed(valkey: ValkeyProcess) -> str:
    """The session's Redis, emptied; its URL (with the password)."""
    with Redis.from_url(valkey.url) as client:
        client.flushall()
    return valkey.url


@pytest.fixture
def nowhere() -> str:
    """An API URL nothing answers at."""
    return f"http://127.0.0.1:{free_port()}"


def test_a_command_that_succeeds_exits_0_with_an_ok_envelope(
    tmp_path: Path, flushed: str, nowhere: str
) -> None:
    """0: `jobs ls` against a Redis that answers; the envelope has data and no error."""
    document = Cli(tmp_path, {}).json("--api-url", nowhere, "--redis-url", flushed, "jobs", "ls")
    assert document["error"] is None
    assert document["data"] == []


def test_a_state_folder_that_is_a_file_is_an_unexpected_error_exit_1(tmp_path: Path) -> None:
    """1: something no error of the tree covers (.movieops is a file) is reported, not a
    traceback, with the MOVIEOPS_DEBUG hint."""
    (tmp_path / ".movieops").write_text("not a folder")
    document = Cli(tmp_path, {}).json("status", code=ExitCode.ERROR)
    assert _error(document) == "error"
    assert document["error"]["message"].startswith("unexpected error: NotADirectoryError")
    assert "MOVIEOPS_DEBUG=1" in document["error"]["hint"]


def test_an_option_combination_that_cannot_work_exits_2_usage(tmp_path: Path) -> None:
    """2: `logs --follow --json` (a stream cannot be one envelope)."""
    document = Cli(tmp_path, {}).json("logs", "--follow", code=ExitCode.USAGE)
    assert _error(document) == "usage"


def test_an_invalid_movieops_setting_exits_2_config_invalid(tmp_path: Path) -> None:
    """2: a MOVIEOPS_* variable out of range is named, before any command runs."""
    result = Cli(tmp_path, {"MOVIEOPS_HEALTH_TIMEOUT": "-1"})("--json", "status")
    assert result.exit_code == ExitCode.USAGE, (result.stdout, result.stderr)
    document = json.loads(result.stdout)
    jsonschema.validate(document, SCHEMA)
    assert _error(document) == "config_invalid"
    assert "MOVIEOPS_HEALTH_TIMEOUT" in document["error"]["message"]


def test_an_invalid_movie_setting_exits_2_config_invalid(tmp_path: Path) -> None:
    """2: a MOVIE_* variable the stack would refuse is caught by the CLI (doctor)."""
    run = Cli(tmp_path, {"MOVIE_RATE_LIMIT_PER_MINUTE": "lots"})
    document = run.json("doctor", code=ExitCode.USAGE)
    assert _error(document) == "config_invalid"
    assert "MOVIE_RATE_LIMIT_PER_MINUTE" in document["error"]["message"]


def test_the_compose_runtime_without_a_docker_engine_exits_3(tmp_path: Path) -> None:
    """3: --runtime compose with a Docker host that does not exist (no engine is needed)."""
    run = Cli(tmp_path, {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, runtime="compose")
    document = run.json("status", code=ExitCode.DOCKER_UNAVAILABLE)
    assert _error(document) == "docker_unavailable"
    assert "--runtime local" in document["error"]["hint"]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_taken_api_port_fails_preflight_exit_4(tmp_path: Path, held_port: int) -> None:
    """4: doctor on the local runtime with MOVIE_PORT held by another process."""
    env = {"MOVIE_PORT": str(held_port), "MOVIE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    document = Cli(tmp_path, env).json("doctor", code=ExitCode.PREFLIGHT_FAILED)
    assert _error(document) == "preflight_failed"
    assert str(held_port) in document["error"]["message"]


def test_a_failing_probe_exits_5_unhealthy(tmp_path: Path, flushed: str, nowhere: str) -> None:
    """5: Redis answers but the API does not: health names the failing probes."""
    run = Cli(tmp_path, {})
    document = run.json(
        "--api-url", nowhere, "--redis-url", flushed, "health", code=ExitCode.UNHEALTHY
    )
    assert _error(document) == "unhealthy"
    probes = {probe["name"]: probe["ok"] for probe in document["data"]}
    assert probes["redis"] is True
    assert probes["api /health"] is False


def _failing_api() -> FastAPI:
    """A one-endpoint API that always answers 500."""
    api = FastAPI()

    @api.get("/boom")
    async def boom() -> JSONResponse:
        return JSONResponse({"detail": "boom"}, status_code=500)

    return api


def test_a_contract_with_failures_exits_6(tmp_path: Path) -> None:
    """6: `contract --live` against an API whose only endpoint is a server error."""
    server = ThreadedServer(_failing_api())
    with server.running():
        document = Cli(tmp_path, {}).json(
            "--api-url", server.url, "contract", "--live", "--checks", "not_a_server_error",
            "--max-examples", "1", "--workers", "1", "--timeout", "180",
            "--report-dir", str(tmp_path / "reports"),
            code=ExitCode.CONTRACT_FAILED,
        )  # fmt: skip
    assert _error(document) == "contract_failed"


async def test_a_refresh_that_fails_in_the_worker_exits_7(
    app: FastAPI, settings: Settings, tmp_path: Path, nowhere: str
) -> None:
    """7: `refresh --wait` for a user without ratings; the real worker fails the job."""
    worker = start_worker(settings)
    try:
        document = await asyncio.to_thread(
            Cli(tmp_path, {}).json,
            "--api-url", nowhere, "--redis-url", settings.redis_url,
            "refresh", "--user", "7", "--wait", "--timeout", "30",
            code=ExitCode.JOB_FAILED,
        )  # fmt: skip
    finally:
        worker.terminate()
        worker.wait(10)
    assert _error(document) == "job_failed"
    assert document["error"]["message"].startswith("job refresh:7 failed: ")
    assert document["error"]["message"].endswith(no_ratings_detail(7))


def test_a_refresh_no_worker_picks_up_exits_8(tmp_path: Path, flushed: str, nowhere: str) -> None:
    """8: `refresh --wait --timeout 0.1` with no worker on the queue: the job stays queued."""
    document = Cli(tmp_path, {}).json(
        "--api-url", nowhere, "--redis-url", flushed,
        "refresh", "--user", "7", "--wait", "--timeout", "0.1",
        code=ExitCode.JOB_TIMEOUT,
    )  # fmt: skip
    assert _error(document) == "job_timeout"
    assert document["error"]["message"] == "job refresh:7 still queued after 0.1s"


def test_a_stack_that_does_not_answer_exits_9(tmp_path: Path, nowhere: str) -> None:
    """9: health where neither the API nor Redis answers."""
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    document = Cli(tmp_path, {}).json(
        "--api-url", nowhere, "--redis-url", dead_redis, "health", code=ExitCode.NOT_RUNNING
    )
    assert _error(document) == "not_running"


def test_an_unknown_job_exits_9(tmp_path: Path, flushed: str, nowhere: str) -> None:
    """9: `jobs show` for a job never queued."""
    document = Cli(tmp_path, {}).json(
        "--api-url", nowhere, "--redis-url", flushed, "jobs", "show", "refresh:424242",
        code=ExitCode.NOT_RUNNING,
    )  # fmt: skip
    assert _error(document) == "not_running"
    assert document["error"]["message"].startswith("no job refresh:424242")


def test_a_load_run_over_its_threshold_exits_11(tmp_path: Path) -> None:
    """11: `load --max-p99` below what any request over HTTP takes."""
    server = ThreadedServer(_failing_api())
    with server.running():
        document = Cli(tmp_path, {}).json(
            "--api-url", server.url, "load", "--requests", "3", "--max-p99", "0.0001",
            code=ExitCode.THRESHOLD_EXCEEDED,
        )  # fmt: skip
    assert _error(document) == "threshold_exceeded"
    assert document["data"]["requests"] == 3
