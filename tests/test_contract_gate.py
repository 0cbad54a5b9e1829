"""`movieops contract` as a gate: deterministic on Python 3.11, isolated from the user's data by
default, and never leaking the exemption secret (argv, relayed output, JUnit report)."""

from __future__ import annotations

import ast
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis import Redis
from redis.exceptions import AuthenticationError

from movieops import contract, contract_hooks
from movieops.errors import ContractFailed
from movieops.sandbox import Sandbox, api_env, disposable_api
from tests.clihelp import Cli
from tests.support import ThreadedServer, free_port

TOKEN = "contract-secret-0123456789abcdef"
ON_311 = sys.version_info < (3, 12)

# Several threads parse at different stack depths while the garbage collector (run very often)
# hands the GIL to another thread in the middle of AST construction: on CPython 3.11 that ends
# in "SystemError: AST constructor recursion depth mismatch" within a couple of seconds.
HAMMER = textwrap.dedent(
    """
    import ast, gc, sys, threading, time
    if sys.argv[1] == "locked":
        from movieops.contract_hooks import serialise_ast_construction
        assert serialise_ast_construction()
    source = "\\n".join(
        f"def f{i}(a, b=({i}, [x for x in range(3)])):\\n    return a + b * {i}\\n"
        for i in range(50)
    )
    errors = []
    stop = threading.Event()
    gc.callbacks.append(lambda phase, info: time.sleep(0))
    gc.set_threshold(20)
    def nested(depth):
        return nested(depth - 1) if depth else ast.parse(source)
    def work(depth):
        for _ in range(int(sys.argv[2])):
            if stop.is_set():
                return
            try:
                nested(depth)
            except SystemError as exc:
                errors.append(str(exc))
                stop.set()
    threads = [threading.Thread(target=work, args=(d * 7,)) for d in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(errors[0] if errors else "clean")
    """
)


def _hammer(mode: str, rounds: int) -> str:
    done = subprocess.run(
        [sys.executable, "-c", HAMMER, mode, str(rounds)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.skipif(not ON_311, reason="CPython 3.12+ builds the AST with per-call state")
def test_concurrent_ast_parsing_breaks_on_311_and_the_contract_lock_prevents_it() -> None:
    """Unlocked, threads parsing at once hit the 3.11 AST depth bug; with the hooks' lock, never."""
    assert "AST constructor recursion depth mismatch" in _hammer("plain", 2000)
    assert _hammer("locked", 40) == "clean"


@pytest.mark.skipif(not ON_311, reason="the lock is installed on CPython < 3.12 only")
def test_the_parsers_hypothesis_and_schemathesis_call_wait_for_the_ast_lock() -> None:
    """With the hooks imported, Hypothesis' and Schemathesis' ast.parse go through the lock."""
    from hypothesis.internal import constants_ast, lambda_sources, reflection
    from schemathesis.python._constants import extract

    assert contract_hooks.AST_SERIALISED
    for module in (constants_ast, lambda_sources, reflection, extract):
        assert getattr(module.ast.parse, "__movieops_ast_lock__", False), module.__name__
    parsed: list[Any] = []
    with contract_hooks.AST_LOCK:
        worker = threading.Thread(
            target=lambda: parsed.append(
                constants_ast._constants_from_source("x = 'abc'", limit=True)
            )
        )
        worker.start()
        worker.join(0.5)
        assert worker.is_alive(), "Hypothesis parsed while another thread held the AST lock"
    worker.join(10)
    assert parsed
    assert contract_hooks.serialise_ast_construction() is True  # idempotent: no double wrapping
    assert not hasattr(ast.parse.__wrapped__, "__movieops_ast_lock__")  # type: ignore[attr-defined]
    assert contract_hooks.serialise_ast_construction((3, 12)) is False


def test_schemathesis_command_line_carries_no_secret(tmp_path: Path) -> None:
    """The secret travels in the environment only: argv (visible in `ps`) never holds it."""
    junit = tmp_path / "junit.xml"
    command = contract.build_command(
        "st", "http://x/openapi.json", checks="all", max_examples=9, workers=3, junit=junit, seed=7
    )
    assert command[0] == "st"
    assert command[command.index("run") + 1] == "http://x/openapi.json"
    assert command[command.index("--config-file") + 1].endswith("movieops/schemathesis.toml")
    assert command[command.index("--phases") + 1] == "examples,coverage,fuzzing,stateful"
    assert command[command.index("--report-junit-path") + 1] == str(junit)
    assert command[-2:] == ["--seed", "7"]
    assert "--header" not in command
    env = contract.build_env({"PATH": "/bin"}, TOKEN)
    assert env[contract.TOKEN_ENV] == TOKEN
    assert env["SCHEMATHESIS_HOOKS"] == "movieops.contract_hooks"
    assert contract.build_env({}, None)[contract.TOKEN_ENV] == ""


def test_schemathesis_config_sends_the_secret_from_the_environment_and_sanitizes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """schemathesis.toml turns MOVIEOPS_CONTRACT_EXEMPT_TOKEN into the header and hides it."""
    from schemathesis.config import SchemathesisConfig
    from schemathesis.config._output import DEFAULT_SENSITIVE_MARKERS
    from schemathesis.core.output.sanitization import is_sensitive_key

    monkeypatch.setenv(contract.TOKEN_ENV, TOKEN)
    project = SchemathesisConfig.from_path(str(contract.CONFIG_FILE)).projects.get_default()
    assert project.headers == {"X-RateLimit-Exempt": TOKEN}
    sanitization = project.output.sanitization
    assert set(DEFAULT_SENSITIVE_MARKERS) <= set(sanitization.sensitive_markers)
    assert is_sensitive_key(
        "X-RateLimit-Exempt", sanitization.keys_to_sanitize, sanitization.sensitive_markers
    )


def test_report_is_this_runs_and_history_keeps_the_last_ten(tmp_path: Path) -> None:
    """Each run gets a new, later-sorting JUnit file; pruning keeps the 10 newest only."""
    old = [tmp_path / f"junit-20000101T0000{n:02d}.000000Z-aaaaaa.xml" for n in range(12)]
    for path in old:
        path.write_text("<testsuites/>")
    other = tmp_path / "notes.xml"
    other.write_text("mine")
    current = contract.new_report_path(tmp_path)
    current.write_text("<testsuites/>")
    assert sorted(tmp_path.glob("junit-*.xml"))[-1] == current
    deleted = contract.prune_reports(tmp_path)
    assert deleted == old[:3]
    assert current.exists()
    assert other.exists()
    assert len(list(tmp_path.glob("junit-*.xml"))) == 10


def test_disposable_api_environment_drops_every_user_movie_setting(tmp_path: Path) -> None:
    """No MOVIE_* of the user's (a database URL above all) reaches the disposable instance."""
    env = api_env(
        {"MOVIE_DATABASE_URL": "sqlite+aiosqlite:////real/movies.db", "MOVIE_TRUSTED_PROXIES": "x",
         "PATH": "/bin"},
        port=1234, database=tmp_path / "m.db", redis_url="redis://127.0.0.1:1/0", token=TOKEN,
    )  # fmt: skip
    assert env["MOVIE_DATABASE_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    assert "MOVIE_TRUSTED_PROXIES" not in env
    assert env["PATH"] == "/bin"
    assert env["MOVIE_RATE_LIMIT_EXEMPT_TOKENS"] == TOKEN
    assert env["MOVIE_READY_REQUIRES_WORKER"] == "false"
    assert env["MOVIE_PORT"] == "1234"
    assert int(env["MOVIE_REDIS_TIMEOUT_MS"]) >= 1_000  # a loaded machine is not a 503


def _failing_api(received: list[str]) -> FastAPI:
    """A one-endpoint API that always fails with 500 and records the exemption header it gets."""
    api = FastAPI()

    @api.get("/boom")
    async def boom(request: Request) -> JSONResponse:
        received.append(request.headers.get("x-ratelimit-exempt", ""))
        return JSONResponse({"detail": "boom"}, status_code=500)

    return api


def test_a_failing_run_shows_no_secret_in_output_or_junit(tmp_path: Path) -> None:
    """Failures print curl reproductions with headers: the secret is sent, but shown nowhere."""
    received: list[str] = []
    lines: list[str] = []
    server = ThreadedServer(_failing_api(received))
    with server.running(), pytest.raises(ContractFailed) as failed:
        contract.run_contract(
            server.url, token=TOKEN, checks="not_a_server_error", max_examples=1, workers=1,
            report_dir=tmp_path, on_output=lines.append, timeout=180,
        )  # fmt: skip
    result = failed.value.data
    assert isinstance(result, contract.ContractResult)
    assert TOKEN in received
    output = "\n".join(lines)
    assert "X-RateLimit-Exempt: [Filtered]" in output  # Schemathesis sanitized it itself
    assert TOKEN not in output
    assert TOKEN not in " ".join(result.command)
    assert result.junit is not None
    assert result.junit.parent == tmp_path
    report = result.junit.read_text()
    assert "boom" in report
    assert TOKEN not in report


def _password(sandbox: Sandbox) -> str:
    password = urlsplit(sandbox.redis_url).password
    assert password
    return password


def test_a_run_against_a_disposable_api_passes_and_leaks_nothing(tmp_path: Path) -> None:
    """The disposable API serves the contract (seeded, exempt; its Redis needs a password) and
    is gone afterwards."""
    lines: list[str] = []
    with disposable_api(60) as sandbox:
        workdir = sandbox.workdir
        without_password = Redis.from_url(sandbox.redis_url.replace(f":{_password(sandbox)}@", "@"))
        with pytest.raises(AuthenticationError), without_password:
            without_password.ping()
        result = contract.run_contract(
            sandbox.api_url, token=sandbox.token, max_examples=1, workers=2, report_dir=tmp_path,
            on_output=lines.append, timeout=300, isolated=True,
        )  # fmt: skip
    assert result.exit_code == 0
    assert not workdir.exists()
    assert sandbox.token not in "\n".join(lines)
    assert result.junit is not None
    assert sandbox.token not in result.junit.read_text()
    assert not any(" 429 " in line for line in lines)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, Path]]:
    """A local-runtime stack of this module's own (seeded catalog); removed at the end."""
    project = tmp_path_factory.mktemp("gate")
    database = project / "stack-movies.db"
    env = {
        "MOVIE_PORT": str(free_port()),
        "MOVIE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MOVIE_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
    }
    run = Cli(project, env)
    run.json("up")
    yield run, database
    run("down", "--volumes", "--yes")


def _catalog(database: Path) -> list[int]:
    with sqlite3.connect(database) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM movies ORDER BY id")]


def _keys(run: Cli) -> set[str]:
    """Every key in the stack's Redis (which needs the password the local runtime generated)."""
    password = (run.project_dir / ".movieops" / "redis.password").read_text().strip()
    url = run.env["MOVIE_REDIS_URL"].replace("redis://", f"redis://:{password}@")
    with Redis.from_url(url, decode_responses=True) as redis:
        return set(redis.scan_iter(count=1000))


def test_default_contract_run_leaves_the_stacks_catalog_and_redis_untouched(
    stack: tuple[Cli, Path],
) -> None:
    """Isolation is the default: every seeded film survives, no contract key lands in Redis."""
    run, database = stack
    films = _catalog(database)
    assert films
    keys = _keys(run)
    document = run.json("contract", "--max-examples", "2", "--timeout", "300")
    assert _catalog(database) == films
    new = _keys(run) - keys
    assert not [key for key in new if key.startswith(("idem:", "rate:", "cache:"))], new
    assert document["data"]["isolated"] is True
    assert document["data"]["exempt"] is True
    assert f":{run.env['MOVIE_PORT']}/" not in document["data"]["schema_url"]


def test_live_contract_runs_against_the_stacks_api(stack: tuple[Cli, Path]) -> None:
    """--live is the explicit way to test the running stack (with the secret `up` made)."""
    run, _ = stack
    document = run.json("contract", "--live", "--max-examples", "1", "--timeout", "300")
    data = document["data"]
    assert data["isolated"] is False
    assert data["exempt"] is True
    assert data["schema_url"] == f"http://127.0.0.1:{run.env['MOVIE_PORT']}/openapi.json"


def test_attach_mode_without_live_is_refused_with_a_hint(tmp_path: Path) -> None:
    """--api-url means someone's real API: contract refuses it without --live (exit 2)."""
    run = Cli(tmp_path, {})
    result = run("--api-url", "http://127.0.0.1:1", "contract")
    assert result.exit_code == 2
    assert "--live" in result.stderr
    assert "Traceback" not in result.stderr
    assert run("contract", "--token", TOKEN).exit_code == 2
    assert os.environ.get(contract.TOKEN_ENV) is None
