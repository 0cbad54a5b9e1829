"""The CLI's operations called directly (no CliRunner): they return data or raise, never print."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, cast

import pytest
from redis import Redis
from typer.testing import CliRunner

from app.config import Settings
from app.constants import rate_key
from app.jobs import TriggerState
from movieops import ratelimits
from movieops.cli import cli
from movieops.doctor import run_checks
from movieops.errors import NotRunning, PreflightFailed, Unhealthy
from movieops.jobs import REFRESH_ACTIONS, RefreshAction
from movieops.probes import check_health
from movieops.runtime import Endpoints, ServiceState
from movieops.runtime.local import LocalRuntime, service_state
from movieops.runtime.selection import (
    RUNTIME_FILE,
    attached_endpoints,
    forget_runtime,
    remember_runtime,
    select_runtime,
)
from movieops.settings import CliSettings
from movieops.status import attached_status
from movieops.waiting import wait_until
from tests.support import free_port

NOWHERE = Endpoints(f"http://127.0.0.1:{free_port()}", f"redis://127.0.0.1:{free_port()}/0")


def _fatal_info(pid: int, spawnerr: str) -> dict[str, Any]:
    return {"statename": "FATAL", "pid": pid, "spawnerr": spawnerr, "now": 10, "start": 5}


def test_a_fatal_process_shows_its_spawn_error() -> None:
    """A FATAL program (pid 0) says why it could not start instead of showing nothing."""
    row = service_state("api", _fatal_info(0, "can't find command 'nope'"), 3, None)
    assert (row.state, row.detail, row.restarts) == ("exited", "can't find command 'nope'", 3)


def test_a_running_process_shows_its_pid_and_uptime() -> None:
    """A live program shows its pid; a stopped one without error shows nothing."""
    info = {"statename": "RUNNING", "pid": 42, "spawnerr": "", "now": 10, "start": 4}
    row = service_state("api", info, 0, "http://x")
    assert (row.state, row.detail, row.uptime_seconds, row.url) == (
        "running",
        "pid 42",
        6,
        "http://x",
    )
    stopped = service_state("api", {**info, "statename": "STOPPED", "pid": 0}, 0, None)
    assert stopped.detail is None


def test_health_without_wait_on_nothing_running_is_not_running() -> None:
    """Nothing answering is NotRunning, with every probe as data."""
    with pytest.raises(NotRunning) as caught:
        check_health(NOWHERE, 5, wait=False, timeout=1)
    probes = cast("list[Any]", caught.value.data)
    assert all(not p.ok for p in probes)


def test_health_wait_gives_up_as_unhealthy_naming_each_probe() -> None:
    """--wait polls until the timeout, then names every failing probe."""
    with pytest.raises(Unhealthy, match="probe\\(s\\) failing: api /health"):
        check_health(NOWHERE, 5, wait=True, timeout=0.2)


def test_attached_status_reports_unreachable_services_with_redacted_urls() -> None:
    """Attached status is built from the probes; the Redis password never shows."""
    endpoints = Endpoints(NOWHERE.api_url, f"redis://:secret@127.0.0.1:{free_port()}/0")
    states = attached_status(endpoints, 5)
    assert [(s.service, s.state) for s in states] == [
        ("api", "unreachable"),
        ("redis", "unreachable"),
        ("worker", "unreachable"),
    ]
    assert "secret" not in json.dumps([s.url for s in states])


def test_doctor_returns_every_check_or_fails_with_them_as_data(tmp_path: Path) -> None:
    """A held port fails the doctor; the checks come back as data, nothing is printed."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        stack = Settings(port=port, redis_url=f"redis://127.0.0.1:{free_port()}/0")
        runtime = LocalRuntime(stack, tmp_path / ".movieops", tmp_path)
        with pytest.raises(PreflightFailed) as caught:
            run_checks(lambda: stack, lambda: runtime, proxy=False)
    checks = cast("list[Any]", caught.value.data)
    names = [c.name for c in checks]
    assert names[:3] == ["python", "settings", "docker"]
    assert f"port {port}" in names


def test_rate_limit_watch_yields_the_asked_number_of_snapshots(valkey: Any, tmp_path: Path) -> None:
    """The watch loop is a generator of snapshots: the CLI renders, the loop only reads."""
    with Redis.from_url(valkey.url) as redis:
        redis.flushdb()
        redis.set(rate_key("10.0.0.1", "/movies"), 3, ex=60)
        snapshots = list(
            ratelimits.watch(lambda: ratelimits.read_counters(redis, 20), 0.01, count=2)
        )
    assert [[c.count for c in snap] for snap in snapshots] == [[3], [3]]


def test_refresh_actions_map_every_trigger_state_by_identity() -> None:
    """Every TriggerState has its action, keyed by the enum member itself."""
    assert set(REFRESH_ACTIONS) == set(TriggerState)
    assert REFRESH_ACTIONS[TriggerState.QUEUED] is RefreshAction.ENQUEUED


def test_wait_until_returns_the_first_value_or_raises_the_given_error() -> None:
    """Polls until a value; on timeout raises the error built at that moment."""
    calls = iter([None, None, "ready"])
    assert wait_until(lambda: next(calls), within=5, interval=0) == "ready"
    with pytest.raises(LookupError):
        wait_until(lambda: None, within=0.05, interval=0.01, error=lambda: LookupError("late"))


def test_select_runtime_builds_a_local_runtime_with_its_token(tmp_path: Path) -> None:
    """The token is given at construction; the choice `up` made is remembered and forgotten."""
    said: list[str] = []
    runtime = select_runtime(
        CliSettings(runtime="auto"),
        project_dir=tmp_path,
        state_dir=tmp_path / ".movieops",
        stack=Settings,
        token="tok",
        say=said.append,
    )
    assert (runtime.name, getattr(runtime, "token", None)) == ("local", "tok")
    assert said == ["runtime: local (no compose.yaml here)"]
    remember_runtime(tmp_path / ".movieops", "local")
    assert (tmp_path / ".movieops" / RUNTIME_FILE).read_text() == "local"
    forget_runtime(tmp_path / ".movieops")
    assert not (tmp_path / ".movieops" / RUNTIME_FILE).exists()


def test_attached_endpoints_fill_the_missing_url_from_the_published_ports() -> None:
    """--api-url alone: Redis from the runtime if it can tell, else the published default port."""

    def no_runtime() -> Endpoints:
        raise NotRunning("no runtime")

    endpoints = attached_endpoints(CliSettings(redis_port=6390), "http://h:1/", None, no_runtime)
    assert endpoints == Endpoints("http://h:1", "redis://127.0.0.1:6390/0")


# --- global options after the subcommand ----------------------------------------------------


def _invoke(tmp_path: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--project-dir", str(tmp_path), "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_up_takes_runtime_after_the_subcommand(tmp_path: Path) -> None:
    """`movieops up --runtime local` uses the local runtime (its preflight refuses --replicas)."""
    code, document = _invoke(tmp_path, "up", "--runtime", "local", "--replicas", "2")
    assert code == 4, document
    assert "need the compose runtime" in document["error"]["message"]


def test_down_takes_runtime_after_the_subcommand(tmp_path: Path) -> None:
    """`movieops down --runtime local` stops the local runtime."""
    code, document = _invoke(tmp_path, "down", "--runtime", "local")
    assert (code, document["data"]["runtime"]) == (0, "local")


def test_status_takes_json_and_runtime_after_the_subcommand(tmp_path: Path) -> None:
    """`movieops status --json --runtime local` lists the local services."""
    code, document = _invoke(tmp_path, "status", "--runtime", "local")
    assert code == 0
    assert [s["service"] for s in document["data"]] == ["redis", "api", "worker"]


def test_jobs_ls_takes_redis_url_and_json_after_the_subcommand(valkey: Any, tmp_path: Path) -> None:
    """`movieops jobs ls --json --redis-url URL` reads that Redis."""
    with Redis.from_url(valkey.url) as redis:
        redis.flushdb()
    code, document = _invoke(tmp_path, "jobs", "ls", "--redis-url", valkey.url)
    assert (code, document["data"]) == (0, [])


@pytest.mark.parametrize(
    ("live", "attached_api", "token_given", "refused"),
    [
        (False, False, False, None),
        (False, True, False, "--api-url with contract needs --live"),
        (False, False, True, "--token applies to --live only"),
        (True, True, True, None),
    ],
)
def test_contract_targets_a_given_api_only_when_live(
    live: bool, attached_api: bool, token_given: bool, refused: str | None
) -> None:
    """A run that creates and deletes films reaches a given API (or uses its secret) only with
    --live; otherwise it is a usage error naming the fix."""
    from movieops.contract import check_target
    from movieops.errors import UsageError

    if refused is None:
        check_target(live=live, attached_api=attached_api, token_given=token_given)
        return
    with pytest.raises(UsageError, match=refused):
        check_target(live=live, attached_api=attached_api, token_given=token_given)


def test_rate_limit_operations_name_an_unreachable_redis_without_its_password() -> None:
    """connected(): an unreachable Redis is NotRunning, its URL shown with the password hidden;
    reset() without a client is a usage error."""
    from movieops.errors import UsageError
    from tests.support import free_port

    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(NotRunning) as caught, ratelimits.connected(url):
        pass
    assert "redis://:***@127.0.0.1" in caught.value.message
    assert "hunter2secret" not in caught.value.message
    with pytest.raises(UsageError, match="--reset needs --client"):
        ratelimits.reset(cast(Redis, None), None)


def test_auto_selection_asks_docker_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Auto mode that detects a working engine builds the compose runtime without asking Docker
    a second time (each question is a `docker info` and a Compose check)."""
    from movieops.runtime import selection
    from movieops.runtime.compose import ComposeRuntime

    calls: list[None] = []
    monkeypatch.setattr(selection, "docker_problem", lambda: calls.append(None))
    (tmp_path / "compose.yaml").write_text("services: {}\n")
    runtime = selection.select_runtime(
        CliSettings(_env_file=None),
        project_dir=tmp_path,
        state_dir=tmp_path / ".movieops",
        stack=lambda: pytest.fail("the compose runtime needs no MOVIE_* settings"),
        token=None,
        say=lambda _line: None,
    )
    assert isinstance(runtime, ComposeRuntime)
    assert len(calls) == 1


def test_a_docker_socket_nobody_serves_is_told_without_the_docker_cli(tmp_path: Path) -> None:
    """No socket, or a socket file nobody listens on, means no engine: said in the docker
    CLI's own words, without running docker (auto selection asks this on every command)."""
    import socket

    from movieops.dockerhost import engine_unreachable

    path = shutil.which("docker")
    if path is None:
        pytest.skip("needs a docker command on PATH")  # pragma: no cover
    env = {"PATH": str(Path(path).parent)}
    missing = tmp_path / "missing.sock"
    assert engine_unreachable({**env, "DOCKER_HOST": f"unix://{missing}"}) == (
        f"no Docker engine answers: Cannot connect to the Docker daemon at unix://{missing}. "
        "Is the docker daemon running?"
    )
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(stale))  # bound, never listening: connecting is refused
        assert "Cannot connect" in (
            engine_unreachable({**env, "DOCKER_HOST": f"unix://{stale}"}) or ""
        )


def test_docker_questions_it_cannot_settle_are_left_to_docker(tmp_path: Path) -> None:
    """A listening socket, a TCP host or a chosen context may well answer: only Docker can say."""
    import socket

    from movieops.dockerhost import engine_unreachable

    path = shutil.which("docker")
    if path is None:
        pytest.skip("needs a docker command on PATH")  # pragma: no cover
    env = {"PATH": str(Path(path).parent), "DOCKER_CONFIG": str(tmp_path)}
    live = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(live))
        server.listen()
        assert engine_unreachable({**env, "DOCKER_HOST": f"unix://{live}"}) is None
    assert engine_unreachable({**env, "DOCKER_HOST": "tcp://127.0.0.1:2375"}) is None
    assert engine_unreachable({**env, "DOCKER_CONTEXT": "remote"}) is None
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "rootless"}))
    assert engine_unreachable(env) is None


def test_no_docker_command_means_no_compose_runtime(tmp_path: Path) -> None:
    """Without a docker command on PATH the reason is plain, not a python-on-whales traceback."""
    from movieops.dockerhost import engine_unreachable
    from movieops.whales import docker_problem

    assert engine_unreachable({"PATH": str(tmp_path)}) == "the docker command is not installed"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", str(tmp_path))
        assert docker_problem() == "the docker command is not installed"


class _RunningRuntime:
    """A runtime whose processes all run, its API at ``api_url`` and no Redis behind it."""

    name = "local"
    services = ("redis", "api", "worker")

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url

    def status(self) -> list[ServiceState]:
        return [ServiceState(s, "running") for s in self.services]

    def endpoints(self) -> Endpoints:
        return Endpoints(self.api_url, f"redis://127.0.0.1:{free_port()}/0")


def _ready_api(status_code: int, worker_ok: bool) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    checks = {
        "database": {"ok": True, "detail": "ok"},
        "redis": {"ok": True, "detail": "ok"},
        "worker": {"ok": worker_ok, "detail": "ok" if worker_ok else "no heartbeat"},
    }

    async def ready(_request: Any) -> JSONResponse:
        return JSONResponse({"status": "x", "checks": checks}, status_code=status_code)

    return Starlette(routes=[Route("/ready", ready)])


def test_a_ready_api_answers_for_every_service_in_one_request() -> None:
    """`up` on a running stack whose /ready says database, Redis and worker are fine is healthy
    from that one answer: no per-service probe runs (here, the Redis probe would fail)."""
    from movieops.stack import healthy_now
    from tests.support import ThreadedServer

    with ThreadedServer(_ready_api(200, worker_ok=True)).running() as server:
        assert healthy_now(cast(Any, _RunningRuntime(server.url)), 5) is True


def test_an_unready_api_sends_healthy_now_to_the_per_service_probes() -> None:
    """A /ready that fails, or names a failing check, decides nothing: the probes run as before
    (and the unreachable Redis makes the stack unhealthy)."""
    from movieops.stack import healthy_now, ready_says_healthy
    from tests.support import ThreadedServer

    for status_code, worker_ok in [(503, False), (200, False)]:
        with ThreadedServer(_ready_api(status_code, worker_ok)).running() as server:
            assert ready_says_healthy(server.url) is False
            assert healthy_now(cast(Any, _RunningRuntime(server.url)), 5) is False
    assert ready_says_healthy(f"http://127.0.0.1:{free_port()}") is False


def test_database_urls_are_read_as_sqlalchemy_reads_them() -> None:
    """The preflight's own URL reading agrees with SQLAlchemy's make_url on backend, database
    and the URL naming another database file."""
    from sqlalchemy.engine import make_url

    from movieops.preflight import backend_and_database, with_database

    urls = [
        "sqlite+aiosqlite:///./.movieops/movies.db",
        "sqlite+aiosqlite:////abs/x%20y.db?mode=ro",
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:///rel/a+b.db",
        "postgresql+asyncpg://u:p%40w@db.example:5432/movies?ssl=true",
        "mysql://[::1]:3306/x",
    ]
    for url in urls:
        parsed = make_url(url)
        assert backend_and_database(url) == (parsed.get_backend_name(), parsed.database), url
        if parsed.get_backend_name() == "sqlite":
            for path in ("/abs/p ath/x+y?.db", "/data/a%b.db"):
                renamed = with_database(url, path)
                assert make_url(renamed) == parsed.set(database=path), (url, renamed)
